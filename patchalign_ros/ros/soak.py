"""`python -m patchalign_ros soak`: a live node fed clouds at a fixed rate for many frames while
inference is slower than the input; reports the RSS curve (and a PNG) and checks that memory
stays bounded, the newest frame wins and nothing queues up.

The node runs in this process (so its RSS is this process's), the publisher in another node of
the same process, over Fast DDS on loopback, in a private ROS domain.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_soak(checkpoint, frames: int = 10_000, rate_hz: float = 30.0, out_dir="soak_output", warmup_frames: int = 300,
             width: int = 160, height: int = 120, progress: bool = True) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from tqdm import tqdm

    from patchalign_ros.msg import PartSegmentArray

    from ..data.synthetic import tabletop_scene
    from .conversions import xyz_to_cloud
    from .node import PerceptionNode

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = Context()
    rclpy.init(context=context, domain_id=int(os.environ.get("ROS_DOMAIN_ID", random.randint(1, 101))))
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value=str(checkpoint)), Parameter("queries", value=["handle"]),
        Parameter("max_rate_hz", value=100.0)])
    if not node.autostart():
        raise RuntimeError(f"node did not start: {node._load_error}")
    driver = rclpy.create_node("soak_driver", context=context)
    received = []
    driver.create_subscription(PartSegmentArray, "/patchalign_perception/segments",
                               lambda m: received.append(time.monotonic()), QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    pub = driver.create_publisher(PointCloud2, "/patchalign_perception/input/points",
                                  QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT))
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    executor.add_node(driver)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    clouds = []
    for i in range(4):  # a few different frames, re-stamped each time
        msg = xyz_to_cloud(tabletop_scene(np.random.default_rng(i), width=width, height=height).points)
        msg.header.frame_id = "camera_depth_optical_frame"
        clouds.append(msg)
    curve = []
    try:
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        period = 1.0 / rate_hz
        start = time.monotonic()
        for i in tqdm(range(frames), desc="soak", disable=not progress, unit="frame"):
            msg = clouds[i % len(clouds)]
            msg.header.stamp = driver.get_clock().now().to_msg()
            pub.publish(msg)
            if i % 100 == 0:
                curve.append({"frame": i, "rss_MB": round(rss_mb(), 1), "processed": node._stats["processed"],
                              "dropped": node._stats["dropped"]})
            sleep = start + (i + 1) * period - time.monotonic()
            if sleep > 0:
                time.sleep(sleep)
        time.sleep(1.0)
        curve.append({"frame": frames, "rss_MB": round(rss_mb(), 1), "processed": node._stats["processed"],
                      "dropped": node._stats["dropped"]})
        elapsed = time.monotonic() - start
    finally:
        node._stop_worker()
        executor.shutdown()
        node.destroy_node()
        driver.destroy_node()
        rclpy.try_shutdown(context=context)
    after_warmup = [c["rss_MB"] for c in curve if c["frame"] >= warmup_frames]
    base = after_warmup[0] if after_warmup else curve[0]["rss_MB"]
    report = {
        "frames": frames, "rate_hz": rate_hz, "seconds": round(elapsed, 1), "stats": dict(node._stats),
        "results_received": len(received), "rss_curve": curve,
        "rss_after_warmup_MB": base, "rss_end_MB": curve[-1]["rss_MB"],
        "rss_growth_pct": round(100 * (max(after_warmup or [base]) - base) / base, 2),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak_report.json").write_text(json.dumps(report, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([c["frame"] for c in curve], [c["rss_MB"] for c in curve])
        ax.axvline(warmup_frames, ls="--", c="grey")
        ax.set_xlabel("frames published")
        ax.set_ylabel("RSS (MB)")
        ax.set_title(f"soak: {frames} frames at {rate_hz:g} Hz, growth {report['rss_growth_pct']}% after warm-up")
        fig.tight_layout()
        fig.savefig(out_dir / "soak_rss.png")
        plt.close(fig)
    except Exception:  # the picture is a convenience; the JSON is the result
        pass
    return report
