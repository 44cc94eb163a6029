"""`ros2 launch` and the README's `ros2` commands, run for real through the upstream launch /
ros2cli overlay of ../shared/tools/ros2-overlay (skipped without it)."""
import threading
import time

import numpy as np
import pytest
import ros2_overlay
from ros2_overlay import NEEDS_OVERLAY, NODE, catches_sigint, node_processes, overlay_env, ros2, stop_daemon

pytestmark = NEEDS_OVERLAY
TOPIC = "/test_launch/points"


@pytest.fixture(scope="module")
def ros2_env():
    env = overlay_env()
    yield env
    stop_daemon(env)


def Launch(env, *args):  # noqa: N802 (the cloud topic of these tests)
    return ros2_overlay.Launch(env, f"cloud_topic:={TOPIC}", *args)


@pytest.fixture
def cloud_publisher(rclpy_context):
    """A camera driver: a 160x120 tabletop cloud, default (reliable) QoS, 2 Hz."""
    import rclpy
    from sensor_msgs.msg import PointCloud2

    from patchalign_ros.data.synthetic import tabletop_scene
    from patchalign_ros.ros.conversions import xyz_to_cloud

    msg = xyz_to_cloud(tabletop_scene(np.random.default_rng(1), width=160, height=120).points)
    msg.header.frame_id = "camera_depth_optical_frame"
    node = rclpy.create_node("fake_camera", context=rclpy_context)
    pub = node.create_publisher(PointCloud2, TOPIC, 10)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            pub.publish(msg)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True).start()
    yield
    stop.set()
    node.destroy_node()


def test_launch_readme_commands_and_ctrl_c(ros2_env, cloud_publisher):
    launch = Launch(ros2_env, "queries:=handle", "use_rviz:=true", "backend:=auto", "reliability:=reliable")
    try:
        assert launch.wait_for("text encoder minilm"), launch.text()[-3000:]
        assert launch.wait_for("backend auto: "), launch.text()[-3000:]  # the measured choice, and why
        assert "rviz2 is not installed here" in launch.text()  # one clear line, nothing orphaned
        assert "TracerWarning" not in launch.text()
        got = ros2(ros2_env, "param", "get", NODE, "queries")
        assert "['handle']" in got.stdout, got.stdout + got.stderr
        assert "reliable" in ros2(ros2_env, "param", "get", NODE, "reliability").stdout  # the launch argument
        # the README's lines
        call = ros2(ros2_env, "service", "call", f"{NODE}/query_parts", "patchalign_ros/srv/QueryParts",
                    "{queries: [handle]}", timeout=60)
        assert "success=True" in call.stdout, call.stdout[-2000:] + call.stderr[-2000:]
        assert ros2(ros2_env, "param", "set", NODE, "queries", "['handle', 'lid']").stdout.strip() == \
            "Set parameter successful"
        assert "['handle', 'lid']" in ros2(ros2_env, "param", "get", NODE, "queries").stdout
        echo = ros2(ros2_env, "topic", "echo", f"{NODE}/segments", "--once", timeout=60)
        assert "queries:" in echo.stdout and "- lid" in echo.stdout, echo.stdout[-1000:] + echo.stderr[-1000:]
        refused = ros2(ros2_env, "param", "set", NODE, "max_rate_hz", "0.0")
        assert "Setting parameter failed" in refused.stderr and "out of range" in refused.stderr
    finally:
        rc = launch.ctrl_c()
    assert rc == 0, launch.text()[-3000:]
    assert "Traceback" not in launch.text() and "process has died" not in launch.text()
    assert not node_processes(), "a node outlived ros2 launch"


def test_launch_list_queries_bad_checkpoint_and_params_file(ros2_env, tmp_path):
    launch = Launch(ros2_env, "queries:=[handle, lid]", f"checkpoint:={tmp_path}/missing.safetensors")
    try:
        assert launch.wait_for("cannot load the model"), launch.text()[-3000:]
        assert "['handle', 'lid']" in ros2(ros2_env, "param", "get", NODE, "queries").stdout
        call = ros2(ros2_env, "service", "call", f"{NODE}/query_parts", "patchalign_ros/srv/QueryParts",
                    "{queries: [handle]}", timeout=60)
        assert "success=False" in call.stdout and "checkpoint not found" in call.stdout, call.stdout[-2000:]
    finally:
        assert launch.ctrl_c() == 0
    # without arguments the params file decides (the launch file used to override it)
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    queries: [lid]\n    max_rate_hz: 2.0\n")
    launch = Launch(ros2_env, f"params_file:={params}")
    try:
        assert launch.wait_for("text encoder minilm"), launch.text()[-3000:]
        assert "['lid']" in ros2(ros2_env, "param", "get", NODE, "queries").stdout
        assert "2.0" in ros2(ros2_env, "param", "get", NODE, "max_rate_hz").stdout
    finally:
        assert launch.ctrl_c() == 0
    assert not node_processes()


@pytest.mark.parametrize("delay_s", [0.3, 2.5])
def test_ctrl_c_while_the_node_is_still_loading_exits_cleanly(ros2_env, delay_s):
    """Issue #18: Ctrl-C in the first seconds (imports, model load) printed a traceback and
    "process has died, exit code -2"."""
    launch = Launch(ros2_env, "queries:=handle")
    try:
        deadline = time.monotonic() + 60
        while not node_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node_processes(), launch.text()[-2000:]
        # Before the interpreter has set up its signal handling (its first milliseconds; on a
        # busy CI machine once more than 0.3 s) SIGINT is the kernel's default: no Python code
        # can run that early, so the delay counts from then.
        while not any(catches_sigint(pid) for pid in node_processes()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay_s)
        loaded = "subscribed to" in launch.text()
    finally:
        rc = launch.ctrl_c()
    text = launch.text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "process has died" not in text, text[-3000:]
    assert "process has finished cleanly" in text, text[-3000:]
    assert not loaded or delay_s > 1.0  # the early one really landed during loading
    assert not node_processes()
