"""`python -m patchalign_ros segment` end to end, in a separate process as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_factory import random_net
from patchalign_ros.data.shapes import make_shape
from patchalign_ros.data.synthetic import sample_surface, tabletop_scene, write_pcd
from patchalign_ros.inference.pipeline import model_dirs
from patchalign_ros.model import save_network

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "patchalign_ros", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_network(random_net(seed=8), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def mug_file(tmp_path_factory):
    pts, _ = sample_surface(make_shape("mug", np.random.default_rng(0)), 3000, np.random.default_rng(1))
    path = tmp_path_factory.mktemp("in") / "mug.npy"
    np.save(path, pts.astype(np.float32))
    return path


def test_segment_object_json_png_ply(checkpoint, mug_file, tmp_path):
    out, png, ply = tmp_path / "r.json", tmp_path / "v.png", tmp_path / "l.ply"
    proc = run_cli("segment", mug_file, "--queries", "handle,body", "--checkpoint", checkpoint,
                   "--object", "--out", out, "--png", png, "--ply", ply)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["num_points"] == 3000 and result["queries"] == ["handle", "body"]
    assert len(result["objects"]) == 1
    obj = result["objects"][0]
    assert obj["id"] == 0 and sorted(obj["point_indices"]) == list(range(3000))
    for part in obj["parts"]:
        assert set(part) >= {"label", "score", "point_indices", "centroid"}
        assert part["label"] in ("handle", "body") and len(part["centroid"]) == 3
        assert all(0 <= i < 3000 for i in part["point_indices"])
    for kp in obj["keypoints"]:
        assert set(kp) >= {"label", "score", "position"} and len(kp["position"]) == 3
    assert result["timing_ms"]["total"] > 0
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert ply.read_bytes().startswith(b"ply")


def test_segment_organized_pcd_scene(checkpoint, tmp_path):
    cap = tabletop_scene(np.random.default_rng(5), width=160, height=120)
    pcd = tmp_path / "scene.pcd"
    write_pcd(pcd, cap.points)  # binary_compressed, organized 160x120, NaN kept
    out = tmp_path / "scene.json"
    proc = run_cli("segment", pcd, "--queries", "handle,cap", "--checkpoint", checkpoint, "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["num_points"] == 160 * 120 and result["mode"] == "scene"
    assert result["organized_shape"] == [120, 160]
    valid = np.isfinite(cap.points.reshape(-1, 3)).all(axis=1)
    assert len(result["objects"]) == 3
    for obj in result["objects"]:
        idx = np.array(obj["point_indices"])
        assert valid[idx].all()  # NaN pixels are numbered but never labelled
        for part in obj["parts"]:
            assert valid[part["point_indices"]].all() and set(part["point_indices"]) <= set(idx.tolist())


def test_name_all_mode(checkpoint, mug_file, tmp_path):
    out = tmp_path / "all.json"
    proc = run_cli("segment", mug_file, "--queries", "handle,body,lid", "--name-all", "--checkpoint",
                   checkpoint, "--out", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["queries"][-1] == "unknown"
    covered = [i for p in result["objects"][0]["parts"] for i in p["point_indices"]]
    assert sorted(covered) == list(range(3000))


def write_input(tmp_path, kind):
    path = tmp_path / f"{kind}.npy"
    if kind == "empty":
        np.save(path, np.zeros((0, 3), np.float32))
    elif kind == "all_nan":
        np.save(path, np.full((500, 3), np.nan, np.float32))
    elif kind == "two_points":
        np.save(path, np.ones((2, 3), np.float32))
    elif kind == "wrong_dims":
        np.save(path, np.ones((500, 2), np.float32))
    elif kind == "unreadable":
        path = tmp_path / "broken.pcd"
        path.write_bytes(b"\x00\x01 not a point cloud")
    elif kind == "missing":
        path = tmp_path / "nope.ply"
    return path


@pytest.mark.parametrize("kind, message", [
    ("empty", "empty"), ("all_nan", "no valid points"), ("two_points", "too few valid points"),
    ("wrong_dims", "(N, 3)"), ("unreadable", "not a PCD file"), ("missing", "not found"),
])
def test_bad_inputs_exit_cleanly(checkpoint, tmp_path, kind, message):
    out = tmp_path / "r.json"
    proc = run_cli("segment", write_input(tmp_path, kind), "--queries", "handle", "--checkpoint", checkpoint,
                   "--object", "--out", out)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_empty_query_and_dimension_mismatch(mug_file, tmp_path):
    big = save_network(random_net(seed=1, text_dim=1280), tmp_path / "bigtext.safetensors")
    proc = run_cli("segment", mug_file, "--queries", " , ", "--checkpoint", big, "--out", tmp_path / "r.json")
    assert proc.returncode == 2 and "no part names" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("segment", mug_file, "--queries", "handle", "--checkpoint", big, "--out", tmp_path / "r.json")
    assert proc.returncode == 2 and "384-d" in proc.stderr and "1280-d" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_and_missing_default(mug_file, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    proc = run_cli("segment", mug_file, "--queries", "handle", "--checkpoint", bad, "--out", tmp_path / "r.json")
    assert proc.returncode == 2 and "cannot read checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    has_default = any((d / "default.safetensors").is_file() for d in model_dirs())
    proc = run_cli("segment", mug_file, "--queries", "handle", "--out", tmp_path / "r.json")
    if has_default:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 2 and "no bundled default model" in proc.stderr


def test_ycb_masks_and_evaluate_real_data_arguments(checkpoint, tmp_path):
    """`ycb-masks` labels and draws the meshes it finds (here a generated mug saved as the YCB
    mug's file); missing inputs are one error line."""
    import open3d as o3d

    shape = make_shape("mug", np.random.default_rng(0))
    mesh = o3d.geometry.TriangleMesh()
    for _, part in shape.parts:
        mesh += part
    (tmp_path / "ycb").mkdir()
    o3d.io.write_triangle_mesh(str(tmp_path / "ycb" / "025_mug.ply"), mesh)
    proc = run_cli("ycb-masks", "--meshes", tmp_path / "ycb", "--out", tmp_path / "m.png")
    assert proc.returncode == 0, proc.stderr
    assert "025_mug" in proc.stdout and "handle" in proc.stdout and (tmp_path / "m.png").stat().st_size > 5000
    empty = run_cli("ycb-masks", "--meshes", tmp_path / "nothing", "--out", tmp_path / "n.png")
    assert empty.returncode == 2 and empty.stderr.startswith("error:") and "Traceback" not in empty.stderr
    missing = run_cli("evaluate", "--checkpoint", checkpoint, "--real-data", tmp_path / "nowhere",
                      "--splits", "unseen", "--shapes-per-category", 1, "--out-dir", tmp_path / "ev")
    assert missing.returncode == 2 and "--real-data" in missing.stderr and "Traceback" not in missing.stderr


def test_segment_with_backend_auto_says_what_it_chose(checkpoint, mug_file, tmp_path):
    env_cache = tmp_path / "cache"
    out = tmp_path / "r.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATCHALIGN_CACHE_DIR=str(env_cache))
    proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "segment", str(mug_file), "--queries", "handle",
                           "--checkpoint", str(checkpoint), "--object", "--backend", "auto", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "backend auto: calibrated: fastest of those matching fp32" in proc.stderr
    assert json.loads(out.read_text())["num_points"] == 3000
