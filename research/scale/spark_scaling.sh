#!/usr/bin/env bash
# Spark's scaling on this machine once start-up is shared over more rows: BBC's first 2,000 articles
# repeated COPIES times (distinct ids), `pipeline batch --engine spark` in local[1], then local[2].
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-models:/topic@champion}
COPIES=${COPIES:-5}
WORK=${WORK:-/tmp/spark-scaling}
rm -rf "$WORK" && mkdir -p "$WORK"
.venv/bin/python - "$WORK" "$COPIES" <<'PY'
import sys
import pandas as pd
work, copies = sys.argv[1], int(sys.argv[2])
df = pd.read_csv("../shared/data/bbc_news.csv.gz").head(2000)[["id", "title", "text"]].astype({"id": str})
pd.concat([df.assign(id=df["id"] + f"-{k}") for k in range(copies)]).to_parquet(f"{work}/bbc.parquet", index=False)
PY
for n in 1 2; do
  .venv/bin/pipeline batch "$WORK/bbc.parquet" -o "$WORK/out-$n" --model "$MODEL" --engine spark --spark-master "local[$n]" 2>/dev/null
done
