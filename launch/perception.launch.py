"""ros2 launch patchalign_ros perception.launch.py [cloud_topic:=...] [queries:="['handle']"] [use_rviz:=true]

Kept plain on purpose: all behaviour lives in the node and config/perception.yaml.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("patchalign_ros")
    args = [
        DeclareLaunchArgument("cloud_topic", default_value="/camera/depth/color/points",
                              description="sensor_msgs/PointCloud2 input (remapped to ~/input/points)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "perception.yaml"])),
        DeclareLaunchArgument("checkpoint", default_value="", description="model weights; empty: bundled default"),
        DeclareLaunchArgument("backend", default_value="torch", description="torch | auto"),
        DeclareLaunchArgument("queries", default_value="['handle']", description="parts published continuously"),
        DeclareLaunchArgument("use_rviz", default_value="false"),
    ]
    node = Node(
        package="patchalign_ros", executable="perception_node", name="patchalign_perception", output="screen",
        parameters=[LaunchConfiguration("params_file"), {
            "checkpoint": LaunchConfiguration("checkpoint"),
            "backend": LaunchConfiguration("backend"),
            "queries": ParameterValue(LaunchConfiguration("queries"), value_type=list[str]),
        }],
        remappings=[("~/input/points", LaunchConfiguration("cloud_topic"))],
    )
    rviz = Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
                arguments=["-d", PathJoinSubstitution([share, "rviz", "perception.rviz"])],
                condition=IfCondition(LaunchConfiguration("use_rviz")))
    return LaunchDescription(args + [node, rviz])
