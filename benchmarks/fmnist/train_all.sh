#!/usr/bin/env bash
# The commands that train the Fashion-MNIST zoo (robust_mix/zoo/weights/); every setting is in the named
# recipes (robust_mix/zoo/fmnist_recipes.py, `robust-mix train NAME --print-config` shows one).
#
# The shipped weights were made by this script's current recipes: the bases by the stages standard and robust
# (benchmarks/fmnist/next/), the mixing network by the stage adasmooth (benchmarks/fmnist/next/adasmooth-full-23/),
# MixedNUTS by the stage mixednuts, then the stage export; each run's recipe.json ships beside its weights.
# The zoo shipped until stop 37 came from this script as of commit e2b32f5 (layers 1-1-1-1, 6 standard and
# 2 PGD epochs, attacks generated online for the mixing network).
#
# Usage: benchmarks/fmnist/train_all.sh [RUNS_DIR]       (default runs/fmnist; rerun to resume)
#   STAGES="standard robust adasmooth mixednuts export" selects stages (default: all, in order).
#   NPROC=2 trains each stage with 2 processes (torchrun; gloo on CPUs, NCCL on GPUs).
#   PYTHON=... picks the interpreter; every recipe takes --device (default: cuda when available).
# Logs: RUNS_DIR/<stage>/train.log and history.jsonl; copies are kept in benchmarks/fmnist/logs/.
set -euo pipefail
RUNS=${1:-runs/fmnist}
PY=${PYTHON:-python}
STAGES=${STAGES:-"standard robust adasmooth mixednuts export"}
if [ "${NPROC:-1}" -gt 1 ]; then
  TRAIN="$PY -m torch.distributed.run --standalone --nproc-per-node $NPROC -m robust_mix.cli train"
else
  TRAIN="$PY -m robust_mix.cli train"
fi
BASES="--standard $RUNS/standard/model.safetensors --robust $RUNS/robust/model.safetensors"

for stage in $STAGES; do
  case $stage in
    standard)  $TRAIN fmnist-standard --out "$RUNS/standard" --no-progress ;;
    robust)    $TRAIN fmnist-robust --out "$RUNS/robust" --no-progress ;;
    adasmooth) $TRAIN fmnist-adasmooth --out "$RUNS/adasmooth" --no-progress --checkpoint-every 200 $BASES ;;
    mixednuts) $TRAIN fmnist-mixednuts --out "$RUNS/mixednuts" --no-progress $BASES ;;
    export)    $PY benchmarks/fmnist/export.py "$RUNS" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
