"""The custom interfaces over real rclpy and Fast DDS: every field survives a round trip."""
import array
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

from patchalign_ros.msg import PartKeypoint, PartSegment, PartSegmentArray  # noqa: E402
from patchalign_ros.srv import QueryParts  # noqa: E402


def make_result(num_indices: int) -> PartSegmentArray:
    rng = np.random.default_rng(7)
    msg = PartSegmentArray()
    msg.header.frame_id = "camera_color_optical_frame"
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 123_456_789
    msg.queries = ["handle", "lid", "body"]
    for i, label in enumerate(msg.queries):
        seg = PartSegment(label=label, score=0.25 * (i + 1), object_id=i)
        seg.point_indices = array.array("I", rng.integers(0, 307_200, num_indices // (i + 1)).astype(np.uint32))
        seg.centroid.x, seg.centroid.y, seg.centroid.z = 0.1 * i, -0.2, 0.75
        seg.box_pose.position.x = 0.5
        seg.box_pose.orientation.z, seg.box_pose.orientation.w = 0.38268343, 0.92387953
        seg.box_size.x, seg.box_size.y, seg.box_size.z = 0.02, 0.04, 0.08
        seg.approach.x, seg.approach.z = 0.6, -0.8
        msg.segments.append(seg)
    kp = PartKeypoint(label="handle", score=0.875, object_id=2)  # float32-exact values
    kp.position.x, kp.position.y, kp.position.z = 1.0, 2.0, 3.0
    kp.normal.y, kp.approach.y = 1.0, -1.0
    msg.keypoints = [kp, PartKeypoint(label="lid", score=0.125, object_id=0)]
    msg.num_objects, msg.num_input_points, msg.num_valid_points = 3, 307_200, 250_000
    msg.preprocess_ms, msg.scene_ms, msg.encoder_ms = 1.5, 2.5, 30.25
    msg.text_ms, msg.postprocess_ms, msg.total_ms = 0.5, 4.0, 38.75
    return msg


def spin_until(executor, predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_segment_array_survives_publish_subscribe(rclpy_context):
    sent = make_result(num_indices=307_200)  # a whole 640x480 frame's worth of indices
    qos = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.RELIABLE,
                     durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    talker = rclpy.create_node("segments_talker", context=rclpy_context)
    listener = rclpy.create_node("segments_listener", context=rclpy_context)
    received = []
    listener.create_subscription(PartSegmentArray, "segments", received.append, qos)
    pub = talker.create_publisher(PartSegmentArray, "segments", qos)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(talker)
    executor.add_node(listener)
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0), "no DDS discovery"
        pub.publish(sent)
        assert spin_until(executor, lambda: received), "message never arrived"
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    got = received[0]
    assert got == sent
    assert len(got.segments[0].point_indices) == 307_200
    assert list(got.segments[2].point_indices) == list(sent.segments[2].point_indices)
    assert got.header.frame_id == "camera_color_optical_frame"
    assert got.keypoints[0].approach.y == -1.0


def test_query_parts_service_round_trip(rclpy_context):
    server = rclpy.create_node("query_server", context=rclpy_context)
    client_node = rclpy.create_node("query_client", context=rclpy_context)
    requests = []
    reply = make_result(num_indices=50_000)

    def handle(request, response):
        requests.append(request)
        response.success = True
        response.message = f"found {len(reply.segments)} parts"
        response.result = reply
        return response

    server.create_service(QueryParts, "query_parts", handle)
    client = client_node.create_client(QueryParts, "query_parts")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(server)
    executor.add_node(client_node)
    try:
        assert spin_until(executor, lambda: client.service_is_ready()), "service never appeared"
        request = QueryParts.Request(queries=["handle", "spout"], timeout_s=2.5, min_score=0.375,
                                     include_keypoints=False)
        future = client.call_async(request)
        assert spin_until(executor, future.done), "no response"
        response = future.result()
    finally:
        executor.shutdown()
        server.destroy_node()
        client_node.destroy_node()
    assert requests[0] == request
    assert response.success is True
    assert response.message == "found 3 parts"
    assert response.result == reply


def test_request_defaults_mean_node_defaults():
    request = QueryParts.Request()
    assert request.timeout_s < 0 and request.min_score < 0
    assert request.include_keypoints is True
