#!/usr/bin/env bash
# Issue #17 item 1: Stage 1 with the ImageNet EfficientNet-Lite0 teacher against the random-CNN
# teacher, the same small budget, then the same Stage 2; each arm evaluated on the generated splits
# and on the real captures (object mode, tune and held-out apart). Resumable: run it again.
# Usage: tools/teacher_ablation.sh [DATA_ROOT]   (default ../shared/data; results in runs/ablation_*)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${1:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
for arm in efficientnet random; do
  $PY -m patchalign_ros train --config config/ablation/teacher_${arm}_stage1.yaml
  $PY -m patchalign_ros train --config config/ablation/teacher_${arm}_stage2.yaml
done
for arm in efficientnet random; do
  ckpt=runs/ablation_${arm}_stage2/model.safetensors
  $PY -m patchalign_ros evaluate --checkpoint "$ckpt" --splits seen-depth,unseen --shapes-per-category 2 \
      --model-only --out-dir runs/ablation_${arm}_eval
  $PY -m patchalign_ros evaluate-parts --data-root "$DATA_ROOT" --models "$ckpt" --splits tune,held-out \
      --out-dir runs/ablation_${arm}_parts
done
