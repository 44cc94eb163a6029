#!/usr/bin/env bash
# The GPU check, meant to run in under 5 minutes on a CUDA machine (e.g. through the `device`
# tool): torch CUDA fp16/bf16/fp32 encoder timings at batch 1/8/32 against eager fp32,
# onnxruntime-gpu and TensorRT where installed, frames end to end, all in one JSON report.
#   scripts/gpu_check.sh [OUT_DIR]      (default: $OUT if set, else ./gpu_check_output)
# Exit 0: measured; 3: no CUDA device (the report says so); anything else: a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-${OUT:-gpu_check_output}}"
mkdir -p "$out_dir"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $python has no torch; run make setup or set PYTHON" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "gpu_check: no nvidia-smi"
exec timeout 290 "$python" -m patchalign_ros bench --gpu --repeat 10 --out "$out_dir/gpu_report.json"
