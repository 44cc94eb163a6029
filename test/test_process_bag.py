"""process-bag: a rosbag2 of PointCloud2 in, the node's outputs in a new bag."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.rosbag2 import Reader, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from model_factory import random_net  # noqa: E402
from patchalign_ros.data.synthetic import tabletop_scene  # noqa: E402
from patchalign_ros.model import save_network  # noqa: E402
from patchalign_ros.msg import PartSegmentArray  # noqa: E402
from patchalign_ros.ros.conversions import xyz_to_cloud  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_process_bag_end_to_end(tmp_path):
    ckpt = save_network(random_net(seed=3), tmp_path / "tiny.safetensors")
    bag_in = tmp_path / "in_bag"
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(bag_in, version=9) as writer:
        conn = writer.add_connection("/camera/points", "sensor_msgs/msg/PointCloud2", typestore=store)
        other = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i in range(3):
            cap = tabletop_scene(np.random.default_rng(i), width=120, height=90)
            msg = xyz_to_cloud(cap.points)
            msg.header.frame_id = "cam"
            msg.header.stamp.sec = 100 + i
            writer.write(conn, (100 + i) * 10**9, serialize_message(msg))
        broken = xyz_to_cloud(np.zeros((10, 3), np.float32))
        broken.point_step = 0
        writer.write(conn, 200 * 10**9, serialize_message(broken))
        from std_msgs.msg import String

        writer.write(other, 150 * 10**9, serialize_message(String(data="not a cloud")))
    bag_out = tmp_path / "out_bag"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "patchalign_ros", "process-bag", str(bag_in), str(bag_out),
                           "--queries", "handle,cap", "--checkpoint", str(ckpt)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 of 4 clouds processed, 1 rejected" in proc.stdout and "point_step is 0" in proc.stdout
    with Reader(bag_out) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
        assert topics == {f"/patchalign_perception/{t}": 3 for t in ("segments", "labeled_points", "markers",
                                                                     "keypoints")}
        seg_conn = [c for c in reader.connections if c.topic.endswith("segments")]
        stamps = []
        for _, ts, raw in reader.messages(connections=seg_conn):
            msg = deserialize_message(bytes(raw), PartSegmentArray)
            assert msg.header.frame_id == "cam" and msg.queries == ["handle", "cap"] and msg.num_input_points == 120 * 90
            stamps.append((ts, msg.header.stamp.sec))
        assert stamps == [((100 + i) * 10**9, 100 + i) for i in range(3)]
    again = subprocess.run([sys.executable, "-m", "patchalign_ros", "process-bag", str(bag_in), str(bag_out),
                            "--queries", "handle", "--checkpoint", str(ckpt)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stderr


def _replayed_bag(path, frames: int = 4):
    """One organized tabletop cloud recorded ``frames`` times, as a static camera gives it."""
    store = get_typestore(Stores.ROS2_KILTED)
    cap = tabletop_scene(np.random.default_rng(7), width=160, height=120)
    with Writer(path, version=9) as writer:
        conn = writer.add_connection("/camera/depth/points", "sensor_msgs/msg/PointCloud2", typestore=store)
        for i in range(frames):
            msg = xyz_to_cloud(cap.points)
            msg.header.frame_id = "camera_depth_optical_frame"
            msg.header.stamp.sec = 10 + i
            writer.write(conn, (10 + i) * 10**9, serialize_message(msg))


def _segments(bag):
    """Per cloud: what was found (labels, scores, objects, points, keypoints), not its timings."""
    out = []
    with Reader(bag) as reader:
        conn = [c for c in reader.connections if c.topic.endswith("segments")]
        for _, _, raw in reader.messages(connections=conn):
            msg = deserialize_message(bytes(raw), PartSegmentArray)
            out.append((msg.num_objects, [(s.label, round(s.score, 5), s.object_id, list(s.point_indices))
                                          for s in msg.segments],
                        [(k.label, round(k.position.x, 5)) for k in msg.keypoints]))
    return out


def test_process_bag_runs_a_stream_as_the_node_does(tmp_path):
    """A static view replayed: with reuse on, the scene split and encoder passes of later clouds
    come from the first, and the outputs are those of encoding every cloud afresh
    (--reuse-max-age 0); the timing says so."""
    from patchalign_ros.ros.bag import format_timing, process_bag

    bag_in = tmp_path / "in_bag"
    _replayed_bag(bag_in)
    kw = dict(checkpoint=None, progress=False, backend="torch")  # the bundled model: it finds the mug's handle
    # a long reuse window: the first cloud's warm-up (text tower, first encoder pass) must not
    # age the split out on a loaded machine; the window itself is test_object_memory's
    stream = process_bag(bag_in, tmp_path / "stream", ["handle"], reuse_max_age_s=30.0, **kw)
    fresh = process_bag(bag_in, tmp_path / "fresh", ["handle"], reuse_max_age_s=0.0, **kw)
    assert stream["processed"] == fresh["processed"] == 4
    t_stream, t_fresh = stream["timing"], fresh["timing"]
    assert t_stream["clouds"] == 4 and t_stream["objects_median"] >= 1
    assert t_stream["scene_reused_share"] == 0.75 and t_stream["reused_objects_median"] >= 1  # all but the first
    assert t_fresh["scene_reused_share"] == 0 and t_fresh["reused_objects_median"] == 0
    assert t_stream["median_ms"] > 0 and t_stream["p90_ms"] >= t_stream["median_ms"] and t_stream["hz"] > 0
    assert {"scene", "encoder", "postprocess"} <= set(t_stream["stages_ms"])
    found = _segments(tmp_path / "stream")
    assert any(segments for _, segments, _ in found), found  # something to compare
    assert found == _segments(tmp_path / "fresh")
    assert "Hz" in format_timing(t_stream) and "75% of clouds" in format_timing(t_stream)


def test_process_bag_cli_reports_timing(tmp_path):
    import json

    ckpt = save_network(random_net(seed=3), tmp_path / "tiny.safetensors")
    bag_in = tmp_path / "in_bag"
    _replayed_bag(bag_in, frames=2)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    report = tmp_path / "timing.json"
    cmd = [sys.executable, "-m", "patchalign_ros", "process-bag", str(bag_in), str(tmp_path / "out"),
           "--queries", "handle", "--checkpoint", str(ckpt), "--backend", "torch", "--report", str(report)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 of 2 clouds processed" in proc.stdout and "ms (" in proc.stdout and "Hz)" in proc.stdout
    saved = json.loads(report.read_text())
    assert saved["timing"]["clouds"] == 2 and saved["processed"] == 2
    bad = subprocess.run(cmd[:5] + [str(tmp_path / "out2"), "--queries", "handle", "--reuse-max-age", "-1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--reuse-max-age" in bad.stderr and not (tmp_path / "out2").exists()
