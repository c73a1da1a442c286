"""The launch files' one body: ``launch/*.launch.py`` name their graph and arguments, this
turns them into ROS 2 launch actions. ``launch`` and ``launch_ros`` are imported here only, so
the rest of fosp_ros runs where they are not installed (the PyPI ROS wheels have none)."""

from __future__ import annotations

from fosp_ros.graph import launch_plan


def realsense_ros():
    """realsense-ros's own launch file: /camera/camera/color/image_raw, rgb8 by default."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    try:
        share = get_package_share_directory("realsense2_camera")
    except PackageNotFoundError:
        raise ValueError("launch argument camera: realsense-ros is not installed (apt install "
                         "ros-$ROS_DISTRO-realsense2-camera); or camera:=none and start it "
                         "yourself") from None
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(f"{share}/launch/rs_launch.py"))


def launch_description(graph: str, arguments: dict[str, str]):
    """Declares ``arguments`` (name -> default) and starts ``launch_plan``'s nodes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def actions(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in arguments}
        nodes, choices = launch_plan(graph, values)
        result = [Node(package=spec.package, executable=spec.executable, name=spec.executable,
                       output="screen", parameters=[params]) for spec, params in nodes]
        if not choices["use_sim"] and choices["camera"] == "realsense-ros":
            result.append(realsense_ros())
        return result

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=value) for name, value in arguments.items()]
        + [OpaqueFunction(function=actions)])
