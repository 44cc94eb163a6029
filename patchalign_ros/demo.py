"""`make demo`: a generated tabletop scene seen by a simulated 640x480 depth camera, end to end
through the ROS node: start `patchalign_perception`, publish the cloud, call `~/query_parts`,
print the answer and draw it.

It never pretends: without a model it shows the stages that exist (depth capture, plane
removal, object clustering) and says plainly that part labelling needs a model.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _scene_only(flat, out_dir, reason) -> int:
    from .inference.scene import SceneSegmenter
    from .visualize import save_png

    valid = np.flatnonzero(np.isfinite(flat).all(axis=1))
    seg = SceneSegmenter().segment(flat[valid])
    labels = np.full(len(flat), -1)
    for i, obj in enumerate(seg.objects):
        labels[valid[obj]] = i
    png = save_png(out_dir / "demo_objects.png", flat, labels, [f"object {i}" for i in range(len(seg.objects))],
                   title="scene segmentation (no part model)", up=seg.up)
    print(f"scene segmentation: table plane removed, {len(seg.objects)} objects -> {png}")
    print(f"part labelling: NOT RUN - {reason}")
    return 0


def _query_through_node(capture, checkpoint, queries, timeout_s=120.0):
    """Start the node in its own process, publish the capture, call ~/query_parts."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from patchalign_ros.srv import QueryParts

    from .ros.conversions import xyz_to_cloud

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))  # keep the demo off the user's graph
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    cmd = [sys.executable, "-m", "patchalign_ros.node", "--ros-args", "-p", f"checkpoint:={checkpoint}",
           "-p", "reliability:=reliable", "-p", "queries:=['']", "--log-level", "warn"]
    node = subprocess.Popen(cmd, env=env)
    context = Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    client_node = rclpy.create_node("patchalign_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    try:
        pub = client_node.create_publisher(
            __import__("sensor_msgs.msg", fromlist=["PointCloud2"]).PointCloud2,
            "/patchalign_perception/input/points", QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        client = client_node.create_client(QueryParts, "/patchalign_perception/query_parts")
        deadline = time.monotonic() + timeout_s
        while not (client.service_is_ready() and pub.get_subscription_count() > 0):
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError("the node did not come up")
            executor.spin_once(timeout_sec=0.1)
        msg = xyz_to_cloud(capture.points)
        msg.header.frame_id = "camera_depth_optical_frame"
        msg.header.stamp = client_node.get_clock().now().to_msg()
        pub.publish(msg)
        start = time.monotonic()
        future = client.call_async(QueryParts.Request(queries=list(queries), timeout_s=10.0))
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError("no answer from ~/query_parts")
            executor.spin_once(timeout_sec=0.05)
        return future.result(), time.monotonic() - start
    finally:
        executor.shutdown()
        client_node.destroy_node()
        rclpy.try_shutdown(context=context)
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()


def run_demo(out_dir: Path, checkpoint=None, queries=("handle", "body")) -> int:
    from .data.synthetic import tabletop_scene, write_pcd
    from .inference.pipeline import default_checkpoint
    from .model import CheckpointError
    from .visualize import save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    capture = tabletop_scene(np.random.default_rng(0))
    pcd = out_dir / "tabletop.pcd"
    write_pcd(pcd, capture.points)
    flat = capture.points.reshape(-1, 3)
    print(f"scene: simulated 640x480 depth capture of a mug, a bottle and a box -> {pcd} "
          f"({int(np.isfinite(flat).all(axis=1).sum())} valid of {len(flat)} points)")
    try:
        checkpoint = checkpoint or default_checkpoint()
    except CheckpointError as exc:
        return _scene_only(flat, out_dir, str(exc))

    print(f"starting patchalign_perception with {checkpoint}; calling ~/query_parts with {list(queries)}")
    response, seconds = _query_through_node(capture, checkpoint, queries)
    if not response.success:
        print(f"query failed: {response.message}")
        return 1
    result = response.result
    print(f"answer in {seconds:.2f} s: {response.message}")
    labels = np.full(len(flat), -1)
    names = list(result.queries)
    truth_parts = capture.part_labels.reshape(-1)
    majority = []
    for seg in result.segments:
        idx = np.asarray(seg.point_indices, dtype=np.int64)
        labels[idx] = names.index(seg.label)
        truth = [capture.part_names[p] for p in np.unique(truth_parts[idx]) if p >= 0]
        counts = {t: int((truth_parts[idx] == capture.part_names.index(t)).sum()) for t in truth}
        best = max(counts, key=counts.get) if counts else "-"
        majority.append(best)
        print(f"  object {seg.object_id}: {seg.label:8s} score {seg.score:.2f}, {len(idx):5d} points "
              f"(ground truth there: mostly {best}), approach ({seg.approach.x:+.2f}, {seg.approach.y:+.2f}, "
              f"{seg.approach.z:+.2f})")
    for kp in result.keypoints:
        print(f"  keypoint {kp.label} on object {kp.object_id}: ({kp.position.x:.3f}, {kp.position.y:.3f}, "
              f"{kp.position.z:.3f}) score {kp.score:.2f}")
    (out_dir / "demo_result.json").write_text(json.dumps({
        "message": response.message, "queries": names,
        "segments": [{"label": s.label, "score": s.score, "object_id": s.object_id,
                      "num_points": len(s.point_indices), "ground_truth_majority": truth}
                     for s, truth in zip(result.segments, majority)]}, indent=1))
    kps = [(k.label, np.array([k.position.x, k.position.y, k.position.z])) for k in result.keypoints]
    # show the table top around the objects, not the whole room
    objects = np.isfinite(flat).all(axis=1) & (labels >= 0)
    view = flat.copy()
    if objects.any():
        lo, hi = flat[objects].min(axis=0) - 0.08, flat[objects].max(axis=0) + 0.08
        view[~np.all((flat >= lo) & (flat <= hi), axis=1)] = np.nan
    from .visualize import camera_image

    h, w = capture.points.shape[:2]
    parts = [(s.label, s.score, np.asarray(s.point_indices)) for s in result.segments]
    png = save_png(out_dir / "demo_parts.png", view, labels, names, title=f"queries: {', '.join(names)}",
                   keypoints=kps, up=np.array([0.0, -0.8, -0.6]), image=camera_image(flat, (h, w)), parts=parts)
    print(f"picture -> {png}")
    return 0
