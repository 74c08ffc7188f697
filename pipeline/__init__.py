"""pipeline: news-article classification by topic and stance, tracked in MLflow."""

__version__ = "0.1.0"
