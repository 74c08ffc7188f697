"""Layer 2, text: how an article becomes what a model reads.

Token windows, evidence order, mentions, main targets, article files."""
