"""The node's input over real DDS: QoS that matches what publishers offer (``reliability: auto``,
the default), a warning with the cause when matched input never arrives, and real 640x480 frames."""
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from model_factory import random_net  # noqa: E402
from patchalign_ros.data.synthetic import tabletop_scene  # noqa: E402
from patchalign_ros.model import save_network  # noqa: E402
from patchalign_ros.ros.conversions import xyz_to_cloud  # noqa: E402
from patchalign_ros.ros.node import SERVICE_QOS, PerceptionNode  # noqa: E402
from patchalign_ros.srv import QueryParts  # noqa: E402

NS = "/patchalign_perception"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_network(random_net(seed=12), tmp_path_factory.mktemp("input_ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def vga_cloud():
    cap = tabletop_scene(np.random.default_rng(4), width=640, height=480)
    msg = xyz_to_cloud(cap.points)
    msg.header.frame_id = "camera_depth_optical_frame"
    return msg


class Rig:
    def __init__(self, context, overrides):
        self.node = PerceptionNode(context=context, parameter_overrides=overrides)
        self.client = rclpy.create_node("input_test_client", context=context)
        self.diag = []
        self.client.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, 10)
        self.query = self.client.create_client(QueryParts, f"{NS}/query_parts", qos_profile=SERVICE_QOS)
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def diag_value(self, key):
        for d in reversed(self.diag):
            for s in d.status:
                for kv in s.values:
                    if kv.key == key:
                        return kv.value
        return None

    def close(self):
        self.node._stop_worker()
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        self.client.destroy_node()


def wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_default_parameters_take_a_vga_cloud_from_a_default_qos_publisher(rclpy_context, checkpoint, vga_cloud):
    """The camera-driver case: a ~3.7 MB organized cloud, published with the default (reliable)
    QoS, the node on its defaults (reliability auto). The publisher appears after the node has
    subscribed, so the node must notice it and re-subscribe reliably."""
    rig = Rig(rclpy_context, [Parameter("checkpoint", value=str(checkpoint))])
    try:
        assert rig.node.autostart(), rig.node._load_error
        assert rig.node.p("reliability") == "auto"
        pub = rig.client.create_publisher(PointCloud2, f"{NS}/input/points", 10)  # default QoS: reliable
        assert wait(lambda: rig.node._input.subscriptions[0].reliability == ReliabilityPolicy.RELIABLE, 15), \
            "auto did not follow the reliable publisher"
        assert wait(lambda: pub.get_subscription_count() > 0, 15)
        assert rig.query.wait_for_service(timeout_sec=15)
        future = rig.query.call_async(QueryParts.Request(queries=["handle"], timeout_s=20.0))
        stop = threading.Event()

        def publish():  # a camera keeps publishing
            while not stop.is_set():
                pub.publish(vga_cloud)
                time.sleep(0.5)

        threading.Thread(target=publish, daemon=True).start()
        try:
            assert wait(future.done, 60)
        finally:
            stop.set()
        response = future.result()
        assert response.success, response.message
        assert response.result.num_input_points == 640 * 480 and response.result.num_objects == 3
        assert wait(lambda: rig.diag_value("input_reliability") == "reliable", 10)
    finally:
        rig.close()


def test_auto_falls_back_to_best_effort_for_a_best_effort_publisher(rclpy_context, checkpoint):
    rig = Rig(rclpy_context, [Parameter("checkpoint", value=str(checkpoint))])
    try:
        assert rig.node.autostart()
        reliable = rig.client.create_publisher(PointCloud2, f"{NS}/input/points", 10)
        assert wait(lambda: rig.node._input.subscriptions[0].reliability == ReliabilityPolicy.RELIABLE, 15)
        # A second, best-effort publisher (a LiDAR driver with SensorDataQoS) cannot match a
        # reliable reader: auto goes back to best effort, which matches both.
        rig.client.create_publisher(PointCloud2, f"{NS}/input/points",
                                    QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert wait(lambda: rig.node._input.subscriptions[0].reliability == ReliabilityPolicy.BEST_EFFORT, 15)
        assert reliable.get_subscription_count() > 0
    finally:
        rig.close()


def test_matched_but_silent_input_is_reported_with_its_cause(rclpy_context, checkpoint):
    """reliability:=reliable with a best-effort publisher: DDS does not match them, no cloud
    ever arrives; diagnostics must say why and what to change."""
    rig = Rig(rclpy_context, [Parameter("checkpoint", value=str(checkpoint)),
                              Parameter("reliability", value="reliable"), Parameter("stale_input_s", value=1.0)])
    try:
        assert rig.node.autostart()
        rig.client.create_publisher(PointCloud2, f"{NS}/input/points",
                                    QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT))

        def warned():
            return any(s.level == s.WARN and "no cloud" in s.message and "reliability:=auto" in s.message
                       for d in rig.diag for s in d.status)
        assert wait(warned, 20), [s.message for d in rig.diag[-3:] for s in d.status]
    finally:
        rig.close()


def test_bad_reliability_and_gravity_values_are_refused(rclpy_context, checkpoint):
    rig = Rig(rclpy_context, [Parameter("checkpoint", value=str(checkpoint))])
    try:
        assert not rig.node.set_parameters([Parameter("reliability", value="sometimes")])[0].successful
        assert not rig.node.set_parameters([Parameter("gravity", value=[0.0, float("nan"), 1.0])])[0].successful
        assert not rig.node.set_parameters([Parameter("gravity", value=[0.0, 1.0])])[0].successful
        assert rig.node.set_parameters([Parameter("gravity", value=[0.0, 1.0, 0.0])])[0].successful
        up, frame = rig.node._up_for("camera_depth_optical_frame")
        assert np.allclose(up, [0.0, -1.0, 0.0]) and frame == "camera_depth_optical_frame"
    finally:
        rig.close()
