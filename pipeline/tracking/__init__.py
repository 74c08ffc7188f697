"""Layer 4, tracking: the MLflow store, what a run logs, the pyfunc flavour, the registry and its aliases."""
