#!/usr/bin/env bash
# The exact commands that produced the shipped Fashion-MNIST zoo weights (robust_mix/zoo/weights/).
#
# Usage: benchmarks/fmnist/train_all.sh [RUNS_DIR]       (default runs/fmnist; rerun to resume)
#   STAGES="standard robust adasmooth mixednuts export" selects stages (default: all, in order).
#   PYTHON=... picks the interpreter; every recipe takes --device (default: cuda when available).
# Logs: RUNS_DIR/<stage>/train.log and history.jsonl; copies are kept in benchmarks/fmnist/logs/.
set -euo pipefail
RUNS=${1:-runs/fmnist}
PY=${PYTHON:-python}
STAGES=${STAGES:-"standard robust adasmooth mixednuts export"}
TRAIN="$PY -m robust_mix.cli train"
BASES="standard=$RUNS/standard/model.safetensors robust=$RUNS/robust/model.safetensors"

for stage in $STAGES; do
  case $stage in
    standard)  $TRAIN fmnist-standard --out "$RUNS/standard" --no-progress --set epochs=6 ;;
    robust)    $TRAIN fmnist-robust --out "$RUNS/robust" --no-progress --set epochs=2 ;;
    adasmooth) $TRAIN fmnist-adasmooth --out "$RUNS/adasmooth" --no-progress --set $BASES ${ADASMOOTH_SET:-} ;;
    mixednuts) $TRAIN fmnist-mixednuts --out "$RUNS/mixednuts" --no-progress --set $BASES ;;
    export)    $PY benchmarks/fmnist/export.py "$RUNS" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
