#!/usr/bin/env bash
# Peak memory and speed of `pipeline predict --json` over 500 and 2,000 BBC articles (JSONL, and a
# folder of .txt files), one after another, with the registered champion of $PIPELINE_HOME.
# Usage: PIPELINE_HOME=... MLFLOW_TRACKING_URI=... bash research/robustness/predict_memory.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.venv/bin"
export BBC="${BBC:-$ROOT/../shared/data/bbc_news.csv.gz}"
work=$(mktemp -d)
"$BIN/python" - "$work" <<'PY'
import csv, gzip, json, os, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = list(csv.DictReader(gzip.open(Path(os.environ["BBC"]), "rt")))
for n in (500, 2000):
    with (out / f"bbc{n}.jsonl").open("w") as f:
        for r in rows[:n]:
            f.write(json.dumps({"text": r["text"], "title": r["title"], "id": r["id"]}) + "\n")
    folder = out / f"bbc{n}"
    folder.mkdir()
    for r in rows[:n]:
        (folder / f"{r['id'].replace('/', '_')}.txt").write_text(f"title {r['title']}\n\n{r['text']}")
PY
for input in bbc500.jsonl bbc2000.jsonl bbc500 bbc2000; do
    /usr/bin/time -f "%e %M" -o "$work/time" "$BIN/pipeline" predict --no-stance --json --quiet "$work/$input" > "$work/out"
    read -r seconds kb < "$work/time"
    n=$(wc -l < "$work/out")
    echo "$input: $n results, $seconds s, $(awk -v n="$n" -v s="$seconds" 'BEGIN{printf "%.1f", n/s}') articles/s, peak RSS $((kb / 1024)) MB"
done
rm -rf "$work"
