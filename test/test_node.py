"""The perception node over real rclpy + Fast DDS: in-process and as a separate process."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from model_factory import random_net  # noqa: E402
from patchalign_ros.data.synthetic import tabletop_scene  # noqa: E402
from patchalign_ros.model import save_network  # noqa: E402
from patchalign_ros.msg import PartSegmentArray  # noqa: E402
from patchalign_ros.ros.conversions import xyz_to_cloud  # noqa: E402
from patchalign_ros.ros.node import SERVICE_QOS, PerceptionNode  # noqa: E402
from patchalign_ros.srv import QueryParts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NS = "/patchalign_perception"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_network(random_net(seed=12), tmp_path_factory.mktemp("node_ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def scene_cloud():
    cap = tabletop_scene(np.random.default_rng(9), width=160, height=120)
    msg = xyz_to_cloud(cap.points)
    msg.header.frame_id = "camera_depth_optical_frame"
    return cap, msg


class Harness:
    """The node and a test client node spun by one executor on a background thread."""

    def __init__(self, context, overrides):
        self.node = PerceptionNode(context=context, parameter_overrides=overrides)
        self.client = rclpy.create_node("perception_test_client", context=context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.received = {"segments": [], "labeled_points": [], "markers": [], "keypoints": [], "diag": []}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for name, mtype in (("segments", PartSegmentArray), ("labeled_points", PointCloud2),
                            ("markers", MarkerArray), ("keypoints", PoseArray)):
            self.client.create_subscription(mtype, f"{NS}/{name}", self.received[name].append, qos)
        self.client.create_subscription(DiagnosticArray, "/diagnostics", self.received["diag"].append, 10)
        self.cloud_pub = self.client.create_publisher(PointCloud2, f"{NS}/input/points",
                                                      QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.query = self.client.create_client(QueryParts, f"{NS}/query_parts", qos_profile=SERVICE_QOS)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait(self, predicate, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return False

    def call(self, queries, timeout=60.0, **fields):
        assert self.query.wait_for_service(timeout_sec=15.0)
        future = self.query.call_async(QueryParts.Request(queries=queries, **fields))
        assert self.wait(future.done, timeout)
        return future.result()

    def close(self):
        self.node._stop_worker()
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        self.client.destroy_node()


@pytest.fixture
def harness(rclpy_context, checkpoint):
    h = Harness(rclpy_context, [Parameter("checkpoint", value=str(checkpoint)),
                                Parameter("queries", value=["handle", "cap"]),
                                Parameter("max_rate_hz", value=20.0),
                                # random weights: no object-level evidence gate, every point may be a part
                                Parameter("part_min_mean_score", value=0.0),
                                Parameter("max_part_fraction", value=1.0)])
    assert h.node.autostart(), h.node._load_error
    yield h
    h.close()


def test_continuous_outputs_for_an_organized_cloud(harness, scene_cloud):
    cap, msg = scene_cloud
    assert harness.wait(lambda: harness.cloud_pub.get_subscription_count() > 0)
    valid = np.isfinite(cap.points.reshape(-1, 3)).all(axis=1)
    assert harness.wait(lambda: (harness.cloud_pub.publish(msg), time.sleep(0.2),
                                 all(harness.received[k] for k in ("segments", "labeled_points", "markers",
                                                                   "keypoints")))[-1], timeout=60)
    seg = harness.received["segments"][-1]
    assert seg.header.frame_id == "camera_depth_optical_frame" and seg.queries == ["handle", "cap"]
    assert seg.num_input_points == 160 * 120 and seg.num_valid_points == valid.sum()
    assert seg.num_objects == 3 and seg.total_ms > 0 and seg.encoder_ms > 0
    for part in seg.segments:
        assert valid[np.array(part.point_indices)].all()
    labeled = harness.received["labeled_points"][-1]
    assert [f.name for f in labeled.fields] == ["x", "y", "z", "rgb", "label", "score"]
    assert labeled.width == valid.sum()
    mk = harness.received["markers"][-1]
    assert mk.markers[0].action == Marker.DELETEALL
    assert len(harness.received["keypoints"][-1].poses) == len(seg.keypoints)

    # the same table frame after frame: the scene split and every object's encoder pass are
    # reused (diagnostics say so), and the answer stays what it was
    first = [(s.label, round(s.score, 5), tuple(s.point_indices)) for s in seg.segments]

    def all_reused():
        harness.cloud_pub.publish(msg)
        time.sleep(0.2)
        return any({(kv.key, kv.value) for kv in st.values} >= {("reused_objects", "3 of 3"), ("scene_reused", "true")}
                   for d in harness.received["diag"] for st in d.status)
    assert harness.wait(all_reused, timeout=30)
    last = harness.received["segments"][-1]
    assert [(s.label, round(s.score, 5), tuple(s.point_indices)) for s in last.segments] == first


def test_query_service_parameters_and_malformed_input(harness, scene_cloud):
    cap, msg = scene_cloud
    assert harness.wait(lambda: harness.cloud_pub.get_subscription_count() > 0)
    harness.cloud_pub.publish(msg)
    response = harness.call(["handle"], min_score=0.0, include_keypoints=False)
    assert response.success, response.message
    assert response.result.queries == ["handle"] and response.result.keypoints == []
    assert response.result.segments, "min_score=0 labels every object point"
    valid = np.isfinite(cap.points.reshape(-1, 3)).all(axis=1)
    covered = np.concatenate([np.array(s.point_indices) for s in response.result.segments])
    assert valid[covered].all() and len(np.unique(covered)) == len(covered)

    bad = harness.call(["  "])
    assert not bad.success and "bad queries" in bad.message

    # a live parameter change shows up in the next continuous result
    result = harness.node.set_parameters([Parameter("queries", value=["lid"])])
    assert result[0].successful
    harness.received["segments"].clear()
    assert harness.wait(lambda: (harness.cloud_pub.publish(msg), time.sleep(0.2),
                                 any(s.queries == ["lid"] for s in harness.received["segments"]))[-1])
    refused = harness.node.set_parameters([Parameter("score_threshold", value=3.0)])
    assert not refused[0].successful

    # a malformed cloud is rejected with a reason; the node keeps answering
    broken = xyz_to_cloud(np.zeros((50, 3), np.float32))
    broken.fields = broken.fields[:2]  # no z
    for _ in range(5):
        harness.cloud_pub.publish(broken)
        time.sleep(0.05)
    assert harness.wait(lambda: harness.node._stats["rejected"] > 0)
    assert "missing field" in harness.node._last_reject
    after = harness.call(["handle"], timeout_s=1.0)
    assert not after.success and "cannot be used" in after.message  # the newest cloud is the broken one
    harness.cloud_pub.publish(msg)
    time.sleep(0.3)
    assert harness.call(["handle"]).success
    # diagnostics report the rejection (WARN with its reason) and count it
    assert harness.wait(lambda: any(d.status and d.status[0].level == d.status[0].WARN
                                    and "rejected" in d.status[0].message and "missing field" in d.status[0].message
                                    for d in harness.received["diag"]))
    assert any(kv.key == "rejected" and int(kv.value) > 0 for d in harness.received["diag"] for kv in d.status[0].values)


def test_missing_checkpoint_keeps_the_node_up(rclpy_context, tmp_path):
    h = Harness(rclpy_context, [Parameter("checkpoint", value=str(tmp_path / "missing.safetensors"))])
    try:
        assert not h.node.autostart()
        response = h.call(["handle"])
        assert not response.success and "model not loaded" in response.message and "not found" in response.message
    finally:
        h.close()


def test_node_as_a_separate_process(rclpy_context, checkpoint, tmp_path):
    cap = tabletop_scene(np.random.default_rng(4), width=640, height=480)  # a full VGA organized frame
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "patchalign_ros.node", "--ros-args", "-p", f"checkpoint:={checkpoint}",
                             "-p", "queries:=['handle']", "-p", "reliability:=reliable"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    client = rclpy.create_node("external_client", context=rclpy_context)
    executor = MultiThreadedExecutor(context=rclpy_context)
    executor.add_node(client)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        # A 3.7 MB frame needs reliable transport: best-effort UDP fragments of it get dropped.
        pub = client.create_publisher(PointCloud2, f"{NS}/input/points",
                                      QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        cli = client.create_client(QueryParts, f"{NS}/query_parts")
        assert cli.wait_for_service(timeout_sec=60.0), "node did not come up"
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        pub.publish(xyz_to_cloud(cap.points))
        start = time.monotonic()
        future = cli.call_async(QueryParts.Request(queries=["handle", "body"], timeout_s=10.0))
        while not future.done() and time.monotonic() - start < 60:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        response = future.result()
        assert response.success, response.message
        assert response.result.num_input_points == 640 * 480 and response.result.num_objects == 3
        assert elapsed < 10.0, f"query took {elapsed:.1f} s"
    finally:
        executor.shutdown()
        client.destroy_node()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-2000:]
    assert "Traceback" not in out
