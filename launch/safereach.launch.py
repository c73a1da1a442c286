"""SafeReach on the robot or its twin: ``ros2 launch fosp_ros safereach.launch.py``.

Arguments: ``use_sim`` (default true: the MuJoCo twin stands in for franka_ros2 and the
camera), ``config`` (project YAML; '' = the installed config/safereach.yaml), ``run``
(a pretrained run directory for the learner), ``task`` (simulated task), ``with_learner``
(false on a robot PC whose learner runs on a GPU machine), ``policy_run`` (a run the policy
acts with from the start, e.g. the learner's ``RUN/online``: with ``with_learner:=false`` and
no learner elsewhere, the fine-tuned policy runs without learning). The node
list comes from ``fosp_ros.graph`` (GRAPHS["safereach"]), the same list
``fosp bringup safereach`` starts in one process.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fosp_ros.graph import node_parameters, nodes_for

GRAPH = "safereach"
ARGUMENTS = {"use_sim": "true", "config": "", "run": "", "task": "", "with_learner": "true",
             "policy_run": ""}


def _nodes(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    use_sim = args["use_sim"].lower() in ("true", "1", "yes")
    # with_learner:=false on the robot PC when the learner runs on a GPU machine.
    skip = set() if args["with_learner"].lower() in ("true", "1", "yes") else {"learner"}
    return [
        Node(package=spec.package, executable=spec.executable, name=spec.executable,
             output="screen",
             parameters=[node_parameters(GRAPH, spec, use_sim, args["config"], args)])
        for spec in nodes_for(GRAPH, use_sim) if spec.executable not in skip
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=value) for name, value in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
