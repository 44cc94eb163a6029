"""`make demo`'s code path: a simulated 640x480 capture through a node in its own process."""
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
