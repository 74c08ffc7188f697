#!/usr/bin/env bash
# Issue 25's batch figures: the same 2,000 BBC articles through `pipeline predict`, `pipeline batch
# --engine local` and `--engine spark` in local[1] and local[2], one after another on this machine.
# MODEL: a registered topic model whose pyfunc was logged by this code (default models:/topic@champion).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-models:/topic@champion}
WORK=${WORK:-/tmp/batch-figures}
rm -rf "$WORK" && mkdir -p "$WORK"
.venv/bin/python - "$WORK" <<'PY'
import json, sys
import pandas as pd
work = sys.argv[1]
df = pd.read_csv("../shared/data/bbc_news.csv.gz").head(2000)[["id", "title", "text"]].astype({"id": str})
df.to_parquet(f"{work}/bbc2000.parquet", index=False)
with open(f"{work}/bbc2000.jsonl", "w") as f:
    for row in df.itertuples():
        f.write(json.dumps({"id": row.id, "title": row.title, "text": row.text}) + "\n")
PY
timed() { local name=$1; shift; local t0=$(date +%s.%N); "$@"; local t1=$(date +%s.%N); echo "$name wall $(echo "$t1 - $t0" | bc) s" | tee -a "$WORK/times.txt"; }
timed predict sh -c ".venv/bin/pipeline predict $WORK/bbc2000.jsonl --json --no-stance --model $MODEL > $WORK/predict.jsonl"
timed local .venv/bin/pipeline batch "$WORK/bbc2000.parquet" -o "$WORK/local" --model "$MODEL"
timed spark1 .venv/bin/pipeline batch "$WORK/bbc2000.parquet" -o "$WORK/spark1" --model "$MODEL" --engine spark --spark-master 'local[1]'
timed spark2 .venv/bin/pipeline batch "$WORK/bbc2000.parquet" -o "$WORK/spark2" --model "$MODEL" --engine spark --spark-master 'local[2]'
.venv/bin/python - "$WORK" <<'PY'
import json, sys
import pandas as pd
work = sys.argv[1]
predicted = [json.loads(line)["topic"]["label"] for line in open(f"{work}/predict.jsonl")]
ids = pd.read_parquet(f"{work}/bbc2000.parquet")["id"].tolist()
reference = dict(zip(ids, predicted))
for name in ("local", "spark1", "spark2"):
    out = pd.read_parquet(f"{work}/{name}")
    agree = sum(reference[i] == label for i, label in zip(out["id"], out["topic_label"])) / len(reference)
    print(f"{name}: rows {len(out)} (in {len(ids)}), ids unique {out['id'].is_unique}, "
          f"same ids {set(out['id']) == set(ids)}, label agreement with predict {agree:.4%}")
PY
cat "$WORK/times.txt"
