"""The node as ROS engineers expect it: validated parameters (at start-up too), a supervised
worker, a query path that cannot starve the node, and every lifecycle transition."""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from lifecycle_msgs.msg import State  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from model_factory import random_net  # noqa: E402
from patchalign_ros.data.synthetic import tabletop_scene  # noqa: E402
from patchalign_ros.model import save_network  # noqa: E402
from patchalign_ros.ros.conversions import xyz_to_cloud  # noqa: E402
from patchalign_ros.ros.parameters import check_parameter  # noqa: E402
from test_node import Harness  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_network(random_net(seed=8), tmp_path_factory.mktemp("lc") / "tiny.safetensors")


@pytest.fixture(scope="module")
def cloud():
    msg = xyz_to_cloud(tabletop_scene(np.random.default_rng(5), width=120, height=90).points)
    msg.header.frame_id = "camera_optical_frame"
    return msg


def _base(checkpoint, *extra):
    return [Parameter("checkpoint", value=str(checkpoint)), Parameter("queries", value=["handle"]),
            Parameter("part_min_mean_score", value=0.0), *extra]


def test_bad_start_up_values_are_refused_with_the_default_kept(rclpy_context, checkpoint, cloud):
    h = Harness(rclpy_context, _base(checkpoint, Parameter("max_rate_hz", value=0.0),
                                     Parameter("gravity", value=[0.0, 1.0]),
                                     Parameter("reliability", value="sometimes"),
                                     Parameter("scene.voxel_size", value=-1.0)))
    try:
        node = h.node
        assert node.p("max_rate_hz") == 30.0 and node.p("gravity") == [0.0, 0.0, 0.0]
        assert node.p("reliability") == "auto" and node.p("scene.voxel_size") == 0.01
        assert node.autostart()
        # the node works with the defaults it kept (max_rate_hz=0 used to kill the worker)
        assert h.wait(lambda: h.cloud_pub.get_subscription_count() > 0)
        assert h.wait(lambda: (h.cloud_pub.publish(cloud), time.sleep(0.2),
                               bool(h.received["segments"]))[-1], timeout=30)
        # at run time too, and read-only parameters cannot change without a new start
        assert not node.set_parameters([Parameter("max_rate_hz", value=0.0)])[0].successful
        assert not node.set_parameters([Parameter("checkpoint", value="other.safetensors")])[0].successful
        assert node.set_parameters([Parameter("scene.concave_deg", value=20.0)])[0].successful
        assert node._finder.config.scene.concave_deg == 20.0  # scene settings apply live
    finally:
        h.close()
    assert check_parameter("max_wait_s", -1.0) and check_parameter("device", "tpu")
    assert check_parameter("max_rate_hz", 2.0) is None
    # [''] is how ROS says "no continuous queries" (the demo's start-up line used to log an ERROR)
    assert check_parameter("queries", [""]) is None and check_parameter("queries", ["handle", ""]) is None
    assert check_parameter("background", [""]) is None and check_parameter("background", ["x" * 500])
    assert check_parameter("presence_threshold", 1.5) and check_parameter("presence_threshold", 0.0) is None


def test_the_worker_survives_failing_publishers(rclpy_context, checkpoint, cloud):
    h = Harness(rclpy_context, _base(checkpoint, Parameter("max_rate_hz", value=20.0)))
    try:
        assert h.node.autostart()
        assert h.wait(lambda: h.cloud_pub.get_subscription_count() > 0)
        pub = h.node._outputs.pubs["segments"]
        original = pub.publish

        def broken(msg):
            raise RuntimeError("publisher exploded")

        pub.publish = broken
        assert h.wait(lambda: (h.cloud_pub.publish(cloud), time.sleep(0.1), h.node._stats["errors"] >= 2)[-1],
                      timeout=30)
        assert h.node._worker.alive
        assert h.wait(lambda: any(d.status and d.status[0].level == d.status[0].ERROR
                                  and "publisher exploded" in d.status[0].message for d in h.received["diag"]))
        pub.publish = original
        h.received["segments"].clear()
        assert h.wait(lambda: (h.cloud_pub.publish(cloud), time.sleep(0.1), bool(h.received["segments"]))[-1],
                      timeout=30), "output resumes after the fault"
    finally:
        h.close()


def test_more_waiting_callers_than_executor_threads_are_all_answered(rclpy_context, checkpoint, cloud):
    """Eight calls wait for a first cloud on a 4-thread executor; intake, parameters and
    diagnostics keep running, and all eight are answered once the cloud arrives."""
    h = Harness(rclpy_context, _base(checkpoint))
    try:
        assert h.node.autostart()
        assert h.query.wait_for_service(timeout_sec=15)
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(h.call, ["handle"], 60.0, timeout_s=20.0) for _ in range(8)]
            time.sleep(1.5)
            # parameters are still served while the callers wait
            assert h.node.set_parameters([Parameter("score_threshold", value=0.4)])[0].successful
            assert h.wait(lambda: h.cloud_pub.get_subscription_count() > 0)
            h.cloud_pub.publish(cloud)
            responses = [f.result(timeout=90) for f in futures]
        assert all(r.success for r in responses), [r.message for r in responses]
    finally:
        h.close()


def test_waits_are_bounded_and_old_clouds_are_not_used(rclpy_context, checkpoint, cloud):
    h = Harness(rclpy_context, _base(checkpoint, Parameter("max_wait_s", value=1.0),
                                     Parameter("max_cloud_age_s", value=1.0)))
    try:
        assert h.node.autostart()
        start = time.monotonic()
        r = h.call(["handle"], timeout_s=300.0)  # the client asks for 5 minutes; max_wait_s caps it
        assert not r.success and "within 1.0 s" in r.message and time.monotonic() - start < 10
        assert h.wait(lambda: h.cloud_pub.get_subscription_count() > 0)
        h.cloud_pub.publish(cloud)
        assert h.wait(lambda: h.node._mailbox.latest is not None)
        assert h.call(["handle"]).success
        time.sleep(1.5)  # the cloud is now older than max_cloud_age_s
        stale = h.call(["handle"], timeout_s=0.5)
        assert not stale.success and "max_cloud_age_s" in stale.message
    finally:
        h.close()


def test_every_lifecycle_transition(rclpy_context, checkpoint, cloud):
    h = Harness(rclpy_context, _base(checkpoint, Parameter("autostart", value=False)))
    node = h.node
    sub_count = h.cloud_pub.get_subscription_count
    try:
        # unconfigured: no model, no input, the service says why
        assert node._finder is None and sub_count() == 0
        assert "model not loaded" in h.call(["handle"]).message
        # configure: model loaded, still no input (inactive nodes take no clouds)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._finder is not None
        time.sleep(1.0)
        assert sub_count() == 0
        assert "inactive" in h.call(["handle"]).message
        # activate: subscribed, processing
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert h.wait(lambda: sub_count() > 0)
        h.cloud_pub.publish(cloud)
        assert h.wait(lambda: node._mailbox.latest is not None)
        assert h.call(["handle"]).success
        # deactivate: unsubscribed, worker stopped, pending and newest clouds dropped
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert h.wait(lambda: sub_count() == 0)
        assert not node._worker.alive and node._mailbox.latest is None and node._mailbox.pending is None
        assert "inactive" in h.call(["handle"]).message
        # re-activate: no stale frame is served; a new cloud is needed
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert not h.call(["handle"], timeout_s=0.5).success
        assert h.wait(lambda: sub_count() > 0)
        h.cloud_pub.publish(cloud)
        assert h.wait(lambda: node._mailbox.latest is not None)
        assert h.call(["handle"]).success
        # deactivate + cleanup: the model is freed
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node._finder is None and node._outputs is None
        assert "model not loaded" in h.call(["handle"]).message
        # configure again, then shutdown from active
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert not node._worker.alive and node._input.subscriptions[0].sub is None
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_FINALIZED
    finally:
        h.close()


def test_an_error_in_a_transition_returns_to_unconfigured(rclpy_context, checkpoint, cloud):
    h = Harness(rclpy_context, _base(checkpoint, Parameter("autostart", value=False)))
    node = h.node
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        original = node._start_worker

        def broken():
            raise RuntimeError("cannot start the worker")

        node._start_worker = broken
        node.trigger_activate()  # raises inside on_activate -> error processing -> on_error
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert node._finder is None and node._input is None
        node._start_worker = original
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert h.wait(lambda: h.cloud_pub.get_subscription_count() > 0)
    finally:
        h.close()
