"""Teleoperated demonstrations: ``ros2 launch fosp_teleop collect.launch.py``.

Arguments: ``use_sim`` (default true: the MuJoCo twin stands in for franka_ros2 and the
camera), ``config`` (project YAML; '' = the installed config/safereach.yaml), ``out``
(dataset directory), ``device`` (spacenavd | spacenav_topics | pyspacemouse | keyboard),
``task`` (simulated task). The node list comes from ``fosp_ros.graph`` (GRAPHS["collect"]),
the same list ``fosp bringup collect`` starts in one process.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fosp_ros.graph import node_parameters, nodes_for

GRAPH = "collect"
ARGUMENTS = {"use_sim": "true", "config": "", "out": "data/teleop", "device": "spacenavd",
             "task": ""}


def _nodes(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    use_sim = args["use_sim"].lower() in ("true", "1", "yes")
    return [
        Node(package=spec.package, executable=spec.executable, name=spec.executable,
             output="screen", emulate_tty=spec.executable == "teleop",
             parameters=[node_parameters(GRAPH, spec, use_sim, args["config"], args)])
        for spec in nodes_for(GRAPH, use_sim)
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=value) for name, value in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
