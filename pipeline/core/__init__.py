"""Layer 1, core: the config, errors, file reading and writing, labelled tables and metrics.

It imports nothing of the layers above it."""
