"""`make demo`'s code path: a simulated 640x480 capture through a node in its own process."""
import json
import os
import subprocess
import sys
from pathlib import Path

from model_factory import random_net
from patchalign_ros.model import save_network

ROOT = Path(__file__).resolve().parents[1]


def test_demo_through_the_node(tmp_path):
    ckpt = save_network(random_net(seed=2), tmp_path / "tiny.safetensors")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "demo", "--checkpoint", str(ckpt), "--out-dir",
                           str(tmp_path / "out"), "--queries", "handle"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "calling ~/query_parts" in proc.stdout and "answer in" in proc.stdout and "3 object(s)" in proc.stdout
    png = tmp_path / "out" / "demo_parts.png"
    assert png.stat().st_size > 20_000 and (tmp_path / "out" / "tabletop.pcd").exists()
    assert "Traceback" not in proc.stderr


def test_demo_with_the_bundled_model_reports_only_parts_that_are_there(tmp_path):
    """Issue #16: `make demo` showed a "handle" on the bottle's neck and logged an ERROR for its
    own `queries:=['']`. Every segment must lie mostly on a ground-truth part of its name."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "demo", "--out-dir", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ERROR" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    result = json.loads((tmp_path / "out" / "demo_result.json").read_text())
    assert result["queries"] == ["handle", "body"]
    for seg in result["segments"]:
        assert seg["ground_truth_majority"].endswith(":" + seg["label"]), seg
    assert any(s["label"] == "handle" for s in result["segments"]), result  # the mug's handle is found
