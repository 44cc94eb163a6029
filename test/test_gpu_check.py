"""Issue #19: the GPU check is ready before a GPU is: on this CPU machine its error path (no
CUDA: a report saying so, exit 3) and every section (run on the CPU) are exercised."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from patchalign_ros.gpu_check import NO_CUDA_EXIT, run_gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the real check applies")
def test_gpu_check_script_says_there_is_no_cuda(tmp_path):
    env = dict(os.environ, PYTHON=str(ROOT / ".venv" / "bin" / "python"))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == NO_CUDA_EXIT, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert "no CUDA device" in report["error"] and report["info"]["cuda_available"] is False
    assert "Traceback" not in proc.stderr


def test_gpu_check_sections_run_and_report_what_is_missing(tmp_path):
    out = tmp_path / "cpu.json"
    assert run_gpu_check(out, device="cpu", repeat=1, batches=(1, 2), full_size=False) == 0
    report = json.loads(out.read_text())
    rows = report["encoders"][0]["rows"]
    assert rows["torch-fp32"]["min_cosine"] >= 0.999 and rows["torch-fp32"]["batch_2_ms_per_shape"] > 0
    assert "needs a CUDA device" in rows["torch-fp16"]["unavailable"]
    assert all("unavailable" in row or "min_cosine" in row for row in rows.values())
    frames = report["frames"]
    assert frames["torch-fp32 table 16 objects"]["objects"] >= 12 and frames["torch-fp32 table 16 objects"]["ms"] > 0
    assert "unavailable" in frames["torch-fp16"]
