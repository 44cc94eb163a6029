"""Hostile input, overload and faults against a live node over Fast DDS (short versions; the
long soak is `python -m patchalign_ros soak`)."""
import copy
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from model_factory import random_net  # noqa: E402
from patchalign_ros.data.synthetic import tabletop_scene  # noqa: E402
from patchalign_ros.model import save_network  # noqa: E402
from patchalign_ros.ros.conversions import xyz_to_cloud  # noqa: E402
from test_node import Harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_network(random_net(seed=5), tmp_path_factory.mktemp("rel") / "tiny.safetensors")


@pytest.fixture(scope="module")
def cloud():
    msg = xyz_to_cloud(tabletop_scene(np.random.default_rng(2), width=120, height=90).points)
    msg.header.frame_id = "cam"
    return msg


@pytest.fixture
def live(rclpy_context, checkpoint, cloud):
    h = Harness(rclpy_context, [Parameter("checkpoint", value=str(checkpoint)), Parameter("queries", value=["handle"]),
                                Parameter("max_rate_hz", value=50.0)])
    assert h.node.autostart()
    assert h.wait(lambda: h.cloud_pub.get_subscription_count() > 0)
    h.cloud_pub.publish(cloud)
    assert h.wait(lambda: h.node._mailbox.latest is not None)
    yield h
    h.close()


def test_hostile_service_requests(live):
    cases = {
        "no queries": ([], "no part names"),
        "empty strings": (["", "  "], "no part names"),
        "1000 queries": ([f"part {i}" for i in range(1000)], "at most 64"),
        "10 kB string": (["x" * 10_000], "too long"),
        "only punctuation": (["?!"], "empty after cleaning"),
    }
    for name, (queries, reason) in cases.items():
        response = live.call(queries)
        assert not response.success and reason in response.message, name
    assert live.call(["handle"]).success  # still serving


def test_twenty_concurrent_calls(live):
    names = [["handle"], ["lid"], ["handle", "cap"], ["body"]] * 5
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda q: live.call(q, timeout=120), names))
    for queries, response in zip(names, responses):
        assert response.success, response.message
        assert response.result.queries == queries
        assert response.result.num_input_points == 120 * 90


def mutate(rng, base):
    msg = copy.deepcopy(base)
    what = rng.integers(0, 6)
    if what == 0:
        msg.point_step = int(rng.integers(0, 20))
    elif what == 1:
        msg.data = bytes(msg.data)[: int(rng.integers(0, len(msg.data)))]
    elif what == 2:
        msg.fields = msg.fields[: int(rng.integers(0, 3))]
    elif what == 3:
        msg.fields[int(rng.integers(0, 3))].datatype = int(rng.integers(0, 12))
    elif what == 4:
        msg.width, msg.height = int(rng.integers(0, 5)), int(rng.integers(0, 5))
    else:
        msg.row_step = int(rng.integers(0, 100))
    return msg


def test_fuzzed_clouds_through_a_live_node(live, cloud):
    rng = np.random.default_rng(99)
    for _ in range(200):
        live.cloud_pub.publish(mutate(rng, cloud))
        time.sleep(0.005)
    assert live.wait(lambda: live.node._stats["rejected"] > 0)
    live.cloud_pub.publish(cloud)
    assert live.wait(lambda: live.call(["handle"], timeout_s=2.0).success, timeout=30)


def test_one_failing_frame_does_not_stop_the_node(live, cloud):
    finder = live.node._finder
    original = finder.find_parts
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure inside inference")
        return original(*args, **kwargs)

    finder.find_parts = flaky
    try:
        processed = live.node._stats["processed"]
        assert live.wait(lambda: (live.cloud_pub.publish(cloud), time.sleep(0.1),
                                  live.node._stats["processed"] > processed)[-1], timeout=30)
        assert live.node._stats["failed"] >= 1
    finally:
        finder.find_parts = original


def test_overload_newest_frame_wins(live, cloud):
    before = dict(live.node._stats)
    for _ in range(150):  # 150 frames as fast as possible: far more than inference keeps up with
        live.cloud_pub.publish(cloud)
        time.sleep(0.002)
    time.sleep(2.0)
    received = live.node._stats["received"] - before["received"]
    processed = live.node._stats["processed"] - before["processed"]
    assert received > 50 and processed < received  # no backlog: most frames are superseded
    assert live.node._mailbox.pending is None  # nothing left queued


def test_missing_text_encoder_is_reported(rclpy_context, checkpoint, tmp_path):
    h = Harness(rclpy_context, [Parameter("checkpoint", value=str(checkpoint)),
                                Parameter("text_encoder", value=f"sentence-transformers:{tmp_path}/none")])
    try:
        assert not h.node.autostart()
        response = h.call(["handle"])
        assert not response.success and "not found" in response.message
    finally:
        h.close()


def test_short_soak_memory_is_bounded(checkpoint, tmp_path, ros_domain):
    from patchalign_ros.ros.soak import run_soak

    report = run_soak(checkpoint, frames=600, rate_hz=30.0, out_dir=tmp_path, warmup_frames=200, width=120,
                      height=90, progress=False)
    assert report["stats"]["processed"] > 10
    assert report["stats"]["dropped"] > 0 or report["stats"]["processed"] < 600
    assert report["rss_growth_pct"] < 5.0, report["rss_curve"]
    assert (tmp_path / "soak_rss.png").exists()


def test_sigterm_shuts_down_cleanly(checkpoint):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "patchalign_ros.node", "--ros-args", "-p",
                             f"checkpoint:={checkpoint}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    time.sleep(8)
    assert proc.poll() is None, "node died on start"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-2000:]
    assert "Traceback" not in out
