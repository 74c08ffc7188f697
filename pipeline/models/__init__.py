"""Layer 3, models: the backends that turn windows into logits (torch, ONNX, zero-shot encoders), the TF-IDF model and
gate, the typed model card, the one Decision applied after every backend, and `load_model`."""
