#!/usr/bin/env bash
# A new user's own single-label file, from a fresh clone: init + train + evaluate, timed, and the
# shipped `topic` champion checked before and after (a quick topic model is registered first so
# there is one to keep). Usage: bash research/own_labels/fresh_clone_flow.sh [CLONE_DIR]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
clone=${1:-/tmp/fresh-clone}
rm -rf "$clone" && git clone -q "$src" "$clone"
ln -sfn "$src/../shared" "$clone/../shared" 2>/dev/null || true
cd "$clone"
export MLFLOW_DISABLE_TELEMETRY=true
t0=$(date +%s); make install >/dev/null; echo "make install: $(( $(date +%s) - t0 )) s"
bin=.venv/bin
$bin/pipeline train --set train.max_steps=5 --set data.extra_train=[] --set data.extra_tests=[] >/dev/null 2>&1
champion() { $bin/python -c "from pipeline.tracking import store; c = store.import_mlflow().MlflowClient(); \
v = c.get_model_version_by_alias('topic', 'champion'); print(f'topic@champion v{v.version} run {v.run_id}')"; }
echo "before: $(champion)"
$bin/python research/own_labels/allsides_headlines.py /tmp/allsides_headlines.csv
t0=$(date +%s)
$bin/pipeline init /tmp/allsides_headlines.csv --task news_groups --text-column headline,description --label-column group
t1=$(date +%s); $bin/pipeline train -c configs/news_groups.yaml 2>&1 | grep -v "━"
t2=$(date +%s); $bin/pipeline evaluate -c configs/news_groups.yaml --json
t3=$(date +%s)
echo "init $(( t1 - t0 )) s, train $(( t2 - t1 )) s, evaluate $(( t3 - t2 )) s, together $(( t3 - t0 )) s"
echo "after: $(champion)"
git status --short configs/
