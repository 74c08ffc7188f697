"""The registered zero-shot champion on ONNX Runtime against its PyTorch encoder, on the prepared test split:
label agreement, largest probability difference, macro-F1 of each. Run with PIPELINE_HOME and
MLFLOW_TRACKING_URI of the home where `pipeline zeroshot --register` ran."""

import numpy as np
from sklearn.metrics import f1_score

from pipeline.core.config import default_config_path, load_config
from pipeline.models.loading import load_model, load_torch
from pipeline.stages.evaluate import prepared_test_data
from pipeline.tracking.registry import resolve_model

cfg = load_config(default_config_path("zeroshot_topic"))
folder, uri = resolve_model("models:/topic@champion")
data = prepared_test_data(cfg)
onnx, torch = load_model(folder, "cpu"), load_torch(folder, "cpu", "auto")
p_onnx, p_torch = onnx.predict_proba(data.texts, data.pairs), torch.predict_proba(data.texts, data.pairs)
gold = [onnx.labels.index(y) for y in data.labels]
print(f"{uri} ({type(onnx.backend).__name__}) on {data.name}, n={len(gold)}")
same = (p_onnx.argmax(1) == p_torch.argmax(1)).mean()
print(f"same label: {same:.2%}; largest probability difference {np.abs(p_onnx - p_torch).max():.4f}")
for name, p in (("onnx", p_onnx), ("torch", p_torch)):
    print(f"{name}: macro-F1 {f1_score(gold, p.argmax(1), average='macro'):.4f}")
