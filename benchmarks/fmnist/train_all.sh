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
    # scaled-down adaptive-smoothing recipe (docs/fmnist.md); alpha range chosen under standard AutoAttack
    # (all four stages, through the harness) on 100 val images
    adasmooth) $TRAIN fmnist-adasmooth --out "$RUNS/adasmooth" --no-progress --set $BASES \
                 train_subset=16000 epochs=6 lr=1e-3 iter_df=10 iter_min=5 iter_max=20 n_targets=5 \
                 calib_attack=standard calib_images=100 'calib_alpha_lo=[0.6,0.7,0.8]' 'calib_gamma_scale=[2.0]' ;;
    mixednuts) $TRAIN fmnist-mixednuts --out "$RUNS/mixednuts" --no-progress --set $BASES ;;
    export)    $PY benchmarks/fmnist/export.py "$RUNS" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
