"""ros2 launch patchalign_ros perception.launch.py [cloud_topic:=...] [queries:=handle | queries:="[handle, lid]"]
    [input:=depth depth_topic:=... camera_info_topic:=... [use_color:=true color_topic:=...]]
    [target_frame:=base_link] [checkpoint:=NAME|PATH] [backend:=...] [precision:=...] [device:=...]
    [reliability:=...] [score_threshold:=...] [scene_mode:=...] [gravity_frame:=...] [max_rate_hz:=...]
    [params_file:=...] [use_rviz:=true]

Every node argument is empty by default, and an empty argument leaves the value of
`params_file` (config/perception.yaml unless given) alone: edit the YAML or pass the argument.
"""
import shutil

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# the node's input topics -> the launch argument that remaps each
INPUT_TOPICS = {"points": "cloud_topic", "depth": "depth_topic", "camera_info": "camera_info_topic",
                "color": "color_topic"}
# launch argument -> (parameter type, description). Empty: take the params file's value.
NODE_ARGUMENTS = {
    "checkpoint": (str, "a registered model name (models list) or a weights path"),
    "model_registry": (str, "your own model registry YAML"),
    "backend": (str, "auto (default: measured once, cached) | torch | onnxruntime | tensorrt | torch-eager"),
    "precision": (str, "fp32 | fp16 (CUDA) | bf16"),
    "device": (str, "cpu | cuda"),
    "queries": (list, "parts published continuously: handle, or [handle, lid]"),
    "reliability": (str, "input QoS: auto | best_effort | reliable"),
    "score_threshold": (float, "part probability below this is background"),
    "scene_mode": (bool, "split clouds into objects on a support plane"),
    "gravity_frame": (str, "a frame whose +z is up, looked up with tf2 (e.g. base_link)"),
    "input": (str, "points (cloud_topic) | depth (depth_topic + camera_info_topic)"),
    "use_color": (bool, "depth input: also pair color_topic"),
    "target_frame": (str, "publish boxes, approach directions and keypoints in this frame (tf2), e.g. base_link"),
    "max_rate_hz": (float, "continuous inference rate limit"),
}


def _parse(name, kind, text):
    if kind is list:
        text = text.strip()
        if text.startswith("["):
            value = yaml.safe_load(text)
            if not isinstance(value, list):
                raise ValueError(f"{name}:={text} is not a list")
            return [str(v) for v in value]
        return [q.strip() for q in text.split(",") if q.strip()]
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(f"{name}:={text} must be true or false")
        return lowered in ("true", "1")
    if kind is float:
        return float(text)
    return text


def _rviz_available() -> bool:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            get_package_share_directory("rviz2")
            return True
        except PackageNotFoundError:
            return shutil.which("rviz2") is not None
    except ImportError:
        return shutil.which("rviz2") is not None


def _launch_setup(context):
    overrides = {}
    for name, (kind, _) in NODE_ARGUMENTS.items():
        text = LaunchConfiguration(name).perform(context)
        if text.strip():
            overrides[name] = _parse(name, kind, text)
    params_file = LaunchConfiguration("params_file").perform(context)
    actions = [Node(
        package="patchalign_ros", executable="perception_node", name="patchalign_perception", output="screen",
        parameters=[params_file] + ([overrides] if overrides else []),
        remappings=[(f"~/input/{name}", LaunchConfiguration(argument).perform(context))
                    for name, argument in INPUT_TOPICS.items()],
    )]
    if _parse("use_rviz", bool, LaunchConfiguration("use_rviz").perform(context)):
        if _rviz_available():
            share = FindPackageShare("patchalign_ros").perform(context)
            actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
                                arguments=["-d", f"{share}/rviz/perception.rviz"]))
        else:
            actions.append(LogInfo(msg="use_rviz:=true, but rviz2 is not installed here: RViz is not started "
                                       "(the perception node runs; install rviz2 or view from another machine)"))
    return actions


def generate_launch_description():
    share = FindPackageShare("patchalign_ros")
    args = [
        DeclareLaunchArgument("cloud_topic", default_value="/camera/depth/color/points",
                              description="sensor_msgs/PointCloud2 input (remapped to ~/input/points)"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image_rect_raw",
                              description="input:=depth: sensor_msgs/Image 16UC1 / 32FC1 (remapped to ~/input/depth)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/depth/camera_info",
                              description="input:=depth: its sensor_msgs/CameraInfo (~/input/camera_info)"),
        DeclareLaunchArgument("color_topic", default_value="/camera/color/image_raw",
                              description="input:=depth use_color:=true: rgb8 / bgr8 registered to the depth "
                                          "(~/input/color)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
                              description="node parameters; the arguments below override it only when given"),
        DeclareLaunchArgument("use_rviz", default_value="false"),
    ] + [DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: from params_file)")
         for name, (_, text) in NODE_ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_launch_setup)])
