"""What can be checked without `launch` (not installable here): the launch file's shape, that
config/perception.yaml sets exactly the node's parameters, and that RViz shows its topics."""
import ast
from pathlib import Path

import yaml

from patchalign_ros.ros.parameters import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_params_file_matches_node_parameters():
    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    params = flatten(data["/**"]["ros__parameters"])
    assert set(params) == set(PARAMETERS)
    for name, value in params.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default) or (isinstance(default, float) and isinstance(value, float)), name
        assert value == default, f"{name}: yaml {value!r} vs node default {default!r}"


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((ROOT / "launch" / "perception.launch.py").read_text())
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in funcs
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument" and isinstance(c.args[0], ast.Constant)}
    assert declared == {"cloud_topic", "depth_topic", "camera_info_topic", "color_topic", "params_file", "use_rviz"}
    node_args = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "NODE_ARGUMENTS")
    names = {k.value for k in node_args.value.keys}
    assert {"checkpoint", "backend", "queries", "reliability", "device", "precision", "scene_mode"} <= names
    assert names <= set(PARAMETERS), "every launch argument is a node parameter"
    source = (ROOT / "launch" / "perception.launch.py").read_text()
    assert 'f"~/input/{name}"' in source and 'executable="perception_node"' in source
    assert {"input", "target_frame"} <= names


def test_rviz_config_shows_the_node_outputs():
    cfg = yaml.safe_load((ROOT / "rviz" / "perception.rviz").read_text())
    topics = {d["Topic"]["Value"]: d["Class"] for d in cfg["Visualization Manager"]["Displays"] if "Topic" in d}
    assert topics == {"/patchalign_perception/labeled_points": "rviz_default_plugins/PointCloud2",
                      "/patchalign_perception/markers": "rviz_default_plugins/MarkerArray",
                      "/patchalign_perception/keypoints": "rviz_default_plugins/PoseArray"}
