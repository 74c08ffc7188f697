#!/usr/bin/env bash
# Issue 25: the same data-parallel training (2 gloo processes on CPU, same seed) launched by torchrun
# and by Spark's TorchDistributor; a short topic training so both fit in minutes. Each run is logged
# (one run each) in the experiment `ddp-check`, not registered.
set -euo pipefail
cd "$(dirname "$0")/../.."
SETS=(--set train.epochs=1 --set train.max_examples=600 --set model.max_length=256 --set model.stride=64 --set runtime.threads=1
      --set mlflow.experiment=ddp-check --no-register)
.venv/bin/pipeline prepare >/dev/null
echo "== torchrun, 2 processes"
/usr/bin/time -f "torchrun wall %e s" .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node 2 \
  -m pipeline train "${SETS[@]}" --set train.output_dir=/tmp/ddp-torchrun 2>&1 | grep -E "best epoch|test:|wall|error"
echo "== TorchDistributor, 2 processes, local[2]"
/usr/bin/time -f "distributor wall %e s" .venv/bin/pipeline train "${SETS[@]}" --set train.output_dir=/tmp/ddp-spark \
  --engine spark --num-processes 2 --spark-master 'local[2]' 2>&1 | grep -E "best epoch|test:|wall|error"
