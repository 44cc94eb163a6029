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
