"""``python -m patchalign_ros qos-matrix``: which input QoS combinations deliver large inputs on
this host. For each node setting (reliability auto / best_effort / reliable) a perception node
runs over Fast DDS; for each publisher QoS (reliable, best effort) a separate publisher process
(as a camera driver is) publishes ``--count`` messages of each size at ``--rate`` Hz, and the
node's received count is read: XYZRGB clouds (160x120, 320x240, 640x480: 0.3 / 1.2 / 4.9 MB)
on ``~/input/points``, and depth images with their camera_info (16UC1 320x240 and 640x480,
32FC1 640x480: 0.15 / 0.6 / 1.2 MB) on ``~/input/depth`` (the images counted as they arrive,
and the pairs the node forms). Depth rows need message_filters. Writes a JSON and prints a
table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SIZES = {"0.3 MB": (120, 160), "1.2 MB": (240, 320), "4.9 MB": (480, 640)}
DEPTH_SIZES = {"16UC1 0.15 MB": (240, 320, True), "16UC1 0.6 MB": (480, 640, True), "32FC1 1.2 MB": (480, 640, False)}


def _cloud(height, width):
    from .conversions import xyz_to_cloud

    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (height, width, 3)).astype(np.float32)
    rgb = rng.integers(0, 2 ** 24, (height, width)).astype(np.uint32)
    msg = xyz_to_cloud(pts, extra_fields={"rgb": rgb})
    msg.header.frame_id = "camera_depth_optical_frame"
    return msg


def run_qos_matrix(out_path="qos_matrix.json", count: int = 20, rate: float = 5.0, checkpoint=None) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import ReliabilityPolicy

    from .node import PerceptionNode

    rows = []
    inputs = ["points"]
    try:
        import message_filters  # noqa: F401

        inputs.append("depth")
    except ImportError:
        print("message_filters is not installed: no depth-image rows", flush=True)
    for kind, setting in [(k, s) for k in inputs for s in ("auto", "best_effort", "reliable")]:
        context = Context()
        rclpy.init(context=context)
        # nobody subscribes to the outputs, so the node receives without running inference
        overrides = [Parameter("reliability", value=setting), Parameter("input", value=kind)]
        if checkpoint:
            overrides.append(Parameter("checkpoint", value=str(checkpoint)))
        node = PerceptionNode(context=context, parameter_overrides=overrides)
        client = rclpy.create_node("qos_matrix_publisher", context=context)
        executor = MultiThreadedExecutor(num_threads=4, context=context)
        executor.add_node(node)
        executor.add_node(client)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            if not node.autostart():
                raise RuntimeError(f"the node did not start: {node._load_error}")
            for pub_name in ("reliable", "best_effort"):
                child = subprocess.Popen([sys.executable, "-m", "patchalign_ros.ros.qos_matrix", pub_name, str(count),
                                          str(rate), kind], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
                first = node._input.subscriptions[0]  # the cloud, or the depth image
                before = None
                for line in child.stdout:
                    word, _, size = line.strip().partition(" ")
                    if word == "start":
                        before = first.received, node._stats["received"]
                    elif word == "done" and before is not None:
                        time.sleep(1.0)  # let the last ones arrive (the publisher waits 2 s)
                        got, paired = first.received - before[0], node._stats["received"] - before[1]
                        sub = "reliable" if first.reliability == ReliabilityPolicy.RELIABLE else "best_effort"
                        row = {"input": kind, "publisher": pub_name, "node": setting, "subscription": sub,
                               "size": size, "sent": count, "received": int(got)}
                        if kind == "depth":
                            row["paired"] = int(paired)
                        rows.append(row)
                        print(f"{kind:6s} publisher {pub_name:11s} node {setting:11s} (subscribed {sub:11s}) {size}: "
                              f"{got}/{count}" + (f" ({paired} paired)" if kind == "depth" else ""), flush=True)
                child.wait(timeout=120)
        finally:
            node._stop_worker()
            executor.shutdown()
            thread.join(timeout=10)
            node.destroy_node()
            client.destroy_node()
            rclpy.shutdown(context=context)
    report = {"count": count, "rate_hz": rate, "rows": rows}
    Path(out_path).write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_matrix(report: dict) -> str:
    tables = []
    for kind, sizes in (("points", list(SIZES)), ("depth", list(DEPTH_SIZES))):
        rows = [r for r in report["rows"] if r.get("input", "points") == kind]
        if not rows:
            continue
        lines = [f"| {kind} publisher | node `reliability` | subscribed as | " + " | ".join(sizes) + " |",
                 "|---|---|---|" + "---|" * len(sizes)]
        keyed = {}
        for r in rows:
            keyed.setdefault((r["publisher"], r["node"]), {})[r["size"]] = r
        for (pub, node), by_size in keyed.items():
            sub = next(iter(by_size.values()))["subscription"]
            cells = [f"{by_size[s]['received']}/{by_size[s]['sent']}" if s in by_size else "-" for s in sizes]
            lines.append(f"| {pub} | {node} | {sub} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def _depth_pair(height, width, millimetres):
    from ..depth_image import CameraIntrinsics
    from .image_msgs import depth_to_image_msg, intrinsics_to_camera_info

    depth = np.random.default_rng(0).uniform(0.4, 2.0, (height, width))
    f = 525.0 * width / 640
    info = intrinsics_to_camera_info(CameraIntrinsics(f, f, width / 2, height / 2), width, height)
    return depth_to_image_msg(depth, millimetres=millimetres), info


def _publish(reliability: str, count: int, rate: float, kind: str = "points") -> None:
    """The publisher process: waits for the node, then for each size prints ``start SIZE``,
    publishes, and prints ``done SIZE``."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    rclpy.init()
    node = rclpy.create_node("qos_matrix_publisher")
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(depth=10, reliability=policy)
    if kind == "points":
        pubs = [node.create_publisher(PointCloud2, "/patchalign_perception/input/points", qos)]
        messages = {size: [_cloud(*hw)] for size, hw in SIZES.items()}
    else:  # a camera driver publishes camera_info with the same QoS as its images
        pubs = [node.create_publisher(Image, "/patchalign_perception/input/depth", qos),
                node.create_publisher(CameraInfo, "/patchalign_perception/input/camera_info", qos)]
        messages = {size: list(_depth_pair(*spec)) for size, spec in DEPTH_SIZES.items()}
    deadline = time.monotonic() + 10
    while pubs[0].get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.5)  # auto re-checks the publishers every second
    for size, msgs in messages.items():
        print(f"start {size}", flush=True)
        for _ in range(count):
            stamp = node.get_clock().now().to_msg()
            for pub, msg in zip(pubs, msgs):
                msg.header.stamp, msg.header.frame_id = stamp, "camera_depth_optical_frame"
                pub.publish(msg)
            time.sleep(1.0 / rate)
        print(f"done {size}", flush=True)
        time.sleep(2.0)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    _publish(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "points")
