"""Device helper: each variant's run from its own MLflow file store, one line each."""

import glob
import json
from pathlib import Path

KEYS = [
    "val_macro_f1",
    "best_epoch",
    "test_macro_f1",
    "test_fnc_score",
    "test_f1_agree",
    "test_f1_disagree",
    "test_f1_discuss",
    "test_f1_unrelated",
    "train_seconds",
    "train_steps_per_second",
    "train_windows",
    "test_newsmtsc_devtest_mt_macro_f1",
    "test_persent_random_test_macro_f1",
    "test_persent_dev_macro_f1",
]
for store in sorted(glob.glob("/tmp/ml_*")):
    for run in Path(store).glob("*/*/metrics"):
        m = {}
        for f in (x for x in run.iterdir() if x.is_file()):
            lines = f.read_text().split("\n")
            last = [x for x in lines if x.strip()][-1].split()
            m[f.name] = float(last[1])
        epochs = (
            sorted(
                (int(x.split()[2]), float(x.split()[1]))
                for x in (run / "val_macro_f1_epoch").read_text().split("\n")
                if x.strip()
            )
            if (run / "val_macro_f1_epoch").exists()
            else []
        )
        print(
            Path(store).name[3:],
            json.dumps({k: round(m[k], 4) for k in KEYS if k in m}),
            "epochs",
            [round(v, 4) for _, v in epochs],
        )
