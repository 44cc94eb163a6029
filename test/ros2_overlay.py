"""Running the node for real through ``ros2 launch``, with the upstream launch / ros2cli / tf2 /
message_filters / vision_msgs overlay of ../shared/tools/ros2-overlay (tests skip without it).
The package under test is the one `make setup` installed into .venv (what `ros2 launch` finds)."""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OVERLAY_BUILD = ROOT.parent / "shared" / "tools" / "ros2-overlay" / "build.sh"
NEEDS_OVERLAY = pytest.mark.skipif(not OVERLAY_BUILD.is_file(), reason="no ../shared/tools/ros2-overlay")
NODE = "/patchalign_perception"


def overlay_env():
    """The environment of `source env.sh` (built on first use), or a skip."""
    built = subprocess.run(["bash", str(OVERLAY_BUILD), str(ROOT)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        pytest.skip(f"the ros2 overlay did not build: {built.stderr[-500:]}")
    env_file = built.stdout.strip().splitlines()[-1]
    dump = subprocess.run(["bash", "-c", f"source {env_file} && env -0"], capture_output=True, timeout=60)
    env = dict(item.split("=", 1) for item in dump.stdout.decode().split("\0") if "=" in item)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop_daemon(env):
    subprocess.run(["ros2", "daemon", "stop"], env=env, capture_output=True, timeout=30)  # ros2cli leaves one


def ros2(env, *args, timeout=30, discovery_s=30):
    """One ros2 CLI command. The ros2 daemon discovers a new node some time after the node logs;
    a command asked before that answers "Node not found" (seen once in CI), so it is asked again."""
    deadline = time.monotonic() + discovery_s
    while True:
        got = subprocess.run(["ros2", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if "Node not found" not in got.stderr or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


class Background:
    """A process in its own session (Ctrl-C goes to the whole group, as in a terminal), its
    output collected."""

    def __init__(self, env, *cmd):
        self.log = []
        self.proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        threading.Thread(target=lambda: [self.log.append(line) for line in self.proc.stdout], daemon=True).start()

    def wait_for(self, text, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.log):
                return True
            time.sleep(0.2)
        return False

    def ctrl_c(self):
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)

    def text(self):
        return "".join(self.log)


class Launch(Background):
    def __init__(self, env, *args):
        super().__init__(env, "ros2", "launch", "patchalign_ros", "perception.launch.py", *args)


def node_processes():
    out = subprocess.run(["pgrep", "-f", "lib/patchalign_ros/perception_node"], capture_output=True, text=True)
    return out.stdout.split()


def catches_sigint(pid):
    """Whether the process has a handler for SIGINT (bit 2 of SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGINT - 1)))
