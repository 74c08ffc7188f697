"""Device helper: the carried fp16 MiniLM weights as an fp32 checkpoint folder (what the package ships)."""

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name != "model16.safetensors":
        shutil.copy(f, dst / f.name)
weights = load_file(str(src / "model16.safetensors"))
save_file(
    {k: v.float().contiguous() for k, v in weights.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"}
)
print("fp32 weights:", sum(v.numel() for v in weights.values()), "parameters")
