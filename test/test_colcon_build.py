"""The repository also builds as a package of a ROS 2 workspace with colcon (the README's route)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


@pytest.mark.skipif(not (VENV / "bin" / "colcon").exists(), reason="colcon is not installed in this environment")
def test_colcon_build_and_use_installed_package(tmp_path):
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    # A copy rather than a link: the build must not depend on anything but tracked sources.
    shutil.copytree(ROOT, ws / "src" / "patchalign_ros",
                    ignore=shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__",
                                                  "demo_output", ".pytest_cache"))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
    build = subprocess.run([str(VENV / "bin" / "colcon"), "build", "--cmake-args",
                            f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                           cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    share = ws / "install" / "patchalign_ros" / "share" / "patchalign_ros"
    assert (share / "package.xml").is_file() and (share / "config" / "perception.yaml").is_file()
    assert (share / "launch" / "perception.launch.py").is_file() and (share / "rviz" / "perception.rviz").is_file()
    executable = ws / "install" / "patchalign_ros" / "lib" / "patchalign_ros" / "perception_node"
    assert executable.is_file() and os.access(executable, os.X_OK)  # what `ros2 run` / launch start
    assert executable.read_text().startswith(f"#!{sys.executable}")
    check = ("import patchalign_ros, rclpy; from patchalign_ros.msg import PartSegmentArray; "
             "from patchalign_ros.srv import QueryParts; from patchalign_ros.model import PatchAlignModel; "
             "print(patchalign_ros.__file__)")
    use = subprocess.run(["bash", "-c", f"source install/setup.bash && cd / && {sys.executable} -c '{check}'"],
                         cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert use.returncode == 0, use.stderr[-3000:]
    assert str(ws / "install") in use.stdout  # the workspace's copy, not the source tree's
