"""The ROS graphs of fosp, described once (no rclpy or launch import here).

The launch files (``launch/*.launch.py``), the in-process ``fosp bringup`` and the tests all
read these lists, so they cannot drift apart: a node added here appears everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeSpec:
    package: str  # ROS package: `ros2 run <package> <executable>`
    executable: str  # also the node name
    module: str  # Python module holding `node_class` and `main()`
    node_class: str
    parameters: dict = field(default_factory=dict)  # beyond `config`
    sim_parameters: dict = field(default_factory=dict)  # overrides with the simulated robot
    when: str = "always"  # "always" | "sim" | "hardware"

    def parameters_for(self, use_sim: bool) -> dict:
        return {**self.parameters, **(self.sim_parameters if use_sim else {})}


SIM_ROBOT = NodeSpec("fosp_ros", "sim_robot", "fosp_ros.sim_robot", "SimRobot", when="sim")
CAMERA = NodeSpec("fosp_ros", "camera", "fosp_ros.camera", "Camera", when="hardware")
FRANKA_INTERFACE = NodeSpec("fosp_ros", "franka_interface", "fosp_ros.franka_interface",
                            "FrankaInterface")
LABELER = NodeSpec("fosp_ros", "labeler", "fosp_ros.labeler", "Labeler",
                   parameters={"source": "operator"}, sim_parameters={"source": "sim"})
TELEOP = NodeSpec("fosp_teleop", "teleop", "fosp_teleop.teleop", "Teleop",
                  parameters={"device": "spacenavd"})
RECORDER = NodeSpec("fosp_teleop", "recorder", "fosp_teleop.recorder", "Recorder",
                    parameters={"out": "data/teleop"})

POLICY = NodeSpec("fosp_ros", "policy", "fosp_ros.policy", "Policy",
                  parameters={"reset_service": "/fosp/home"},
                  sim_parameters={"reset_service": "/fosp/sim/reset"})
LEARNER = NodeSpec("fosp_ros", "learner", "fosp_ros.learner", "LearnerNode")

GRAPHS: dict[str, tuple[NodeSpec, ...]] = {
    # Teleoperated demonstrations (ros2 launch fosp_teleop collect.launch.py).
    "collect": (SIM_ROBOT, CAMERA, FRANKA_INTERFACE, LABELER, TELEOP, RECORDER),
    # Deployment and fine-tuning (ros2 launch fosp_ros safereach.launch.py).
    "safereach": (SIM_ROBOT, CAMERA, FRANKA_INTERFACE, LABELER, POLICY, LEARNER),
}

# Launch arguments that set one node parameter: argument -> (node, parameter).
FORWARDED = {
    "collect": {"out": ("recorder", "out"), "device": ("teleop", "device"),
                "task": ("sim_robot", "task")},
    "safereach": {"task": ("sim_robot", "task"), "run": ("learner", "run"),
                  "policy_run": ("policy", "run")},
}


def node_parameters(graph: str, spec: NodeSpec, use_sim: bool, config: str = "",
                    arguments: dict[str, str] | None = None) -> dict:
    """The parameters a node gets: config path, its defaults, forwarded launch arguments."""
    params = {"config": config, **spec.parameters_for(use_sim)}
    for argument, (node, parameter) in FORWARDED.get(graph, {}).items():
        value = (arguments or {}).get(argument)
        if node == spec.executable and value not in (None, ""):
            params[parameter] = value
    return params


def nodes_for(graph: str, use_sim: bool) -> list[NodeSpec]:
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    wanted = {"always", "sim" if use_sim else "hardware"}
    return [spec for spec in GRAPHS[graph] if spec.when in wanted]
