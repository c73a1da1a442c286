"""The ROS graphs of fosp, described once (no rclpy or launch import here).

The launch files (``launch/*.launch.py``), the in-process ``fosp bringup`` and the tests all
read these lists, so they cannot drift apart: a node added here appears everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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

# Launch arguments that set node parameters: argument -> the (node, parameter) pairs it sets.
_CONTROLLER = (("franka_interface", "controller"), ("sim_robot", "controller"))
FORWARDED = {
    "collect": {"out": (("recorder", "out"),), "device": (("teleop", "device"),),
                "task": (("sim_robot", "task"),), "controller": _CONTROLLER},
    "safereach": {"task": (("sim_robot", "task"),), "run": (("learner", "run"),),
                  "data": (("learner", "data"),), "policy_run": (("policy", "run"),),
                  "recipe": (("learner", "recipe"), ("policy", "recipe")),
                  "controller": _CONTROLLER},
}

# Where the camera images come from on the robot (use_sim:=false; the twin renders its own):
# fosp's camera node (pyrealsense2), realsense-ros's node (its launch file, started beside the
# graph), or none (you publish sensor_msgs/Image on ros.topics.image yourself).
CAMERAS = ("fosp", "realsense-ros", "none")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def node_parameters(graph: str, spec: NodeSpec, use_sim: bool, config: str = "",
                    arguments: dict[str, str] | None = None) -> dict:
    """The parameters a node gets: config path, its defaults, forwarded launch arguments."""
    params = {"config": config, **spec.parameters_for(use_sim)}
    for argument, targets in FORWARDED.get(graph, {}).items():
        value = (arguments or {}).get(argument)
        for node, parameter in targets:
            if node == spec.executable and value not in (None, ""):
                params[parameter] = value
    return params


def _flag(arguments: dict[str, str], name: str) -> bool:
    value = arguments[name].lower()
    if value not in BOOLEANS:
        raise ValueError(f"launch argument {name}: {arguments[name]!r} is not true or false")
    return BOOLEANS[value]


def _directory(arguments: dict[str, str], name: str, what: str) -> None:
    value = arguments.get(name, "")
    if value and not Path(value).is_dir():
        raise ValueError(f"launch argument {name}: {value!r} is not a directory ({what})")


def launch_plan(graph: str, arguments: dict[str, str]) -> tuple[list[tuple[NodeSpec, dict]],
                                                                 dict[str, object]]:
    """What a launch file starts: each node with its parameters, and the choices it made
    (``use_sim``, ``camera``). Every argument is checked first, so a wrong one stops the
    launch with one line naming it instead of leaving a half-running graph."""
    from fosp_ros.config import load_graph_config, shipped_model_path

    use_sim = _flag(arguments, "use_sim")
    camera = arguments.get("camera", "fosp")
    if camera not in CAMERAS:
        raise ValueError(f"launch argument camera: {camera!r} is not one of {', '.join(CAMERAS)}")
    config = arguments.get("config", "")
    if config and not Path(config).is_file():
        raise ValueError(f"launch argument config: no file {config!r}")
    try:
        graph_config = load_graph_config(config or None)
    except ValueError as err:  # ConfigError is one
        raise ValueError(f"launch argument config: {err}") from None
    try:
        graph_config.ros.controller_profile(arguments.get("controller", ""))
    except ValueError as err:
        raise ValueError(f"launch argument controller: {err}") from None
    task = arguments.get("task", "")
    if task:
        from fosp_core.envs.tasks import TASKS

        if task not in TASKS:
            raise ValueError(f"launch argument task: {task!r} is not one of {', '.join(TASKS)}")
    if arguments.get("recipe"):
        from fosp_core.learning.recipes import load_recipe

        try:
            load_recipe(arguments["recipe"])
        except ValueError as err:  # UserError is one
            raise ValueError(f"launch argument recipe: {err}") from None
    for name, what in (("run", "a pretrained run"), ("policy_run", "a pretrained or "
                       "fine-tuned run"), ("data", "a dataset")):
        _directory(arguments, name, what)
    if arguments.get("device") == "keyboard":
        raise ValueError("launch argument device: the keyboard needs a terminal, which launch "
                         "does not give its nodes; run the teleop node in one: ros2 run "
                         "fosp_teleop teleop --ros-args -p device:=keyboard")
    skip = set()
    if "with_learner" in arguments and not _flag(arguments, "with_learner"):
        skip.add("learner")
    if graph == "safereach" and not use_sim:
        # The model that acts must read the camera: a state-mode model acts on the simulator's
        # privileged state, which nothing publishes on the robot (the policy would wait).
        name = "policy_run" if arguments.get("policy_run") else "run"
        acting = arguments.get(name) or ("" if "learner" in skip else str(shipped_model_path()))
        if acting and _obs_mode(Path(acting), name) != "image":
            raise ValueError(f"launch argument {name}: {acting} is a state-mode model: it acts "
                             "on the simulator's state and runs only with use_sim:=true; give "
                             f"an image-mode model (fosp pretrain --obs image) with {name}:=")
    nodes = [(spec, node_parameters(graph, spec, use_sim, config, arguments))
             for spec in nodes_for(graph, use_sim, camera) if spec.executable not in skip]
    return nodes, {"use_sim": use_sim, "camera": camera}


def _obs_mode(run: Path, argument: str) -> str:
    from fosp_core.util.files import read_mapping

    path = run / "config.yaml"
    if not path.is_file():
        raise ValueError(f"launch argument {argument}: {run} has no config.yaml (not a run)")
    return str(read_mapping(path).get("obs_mode", "image"))


def nodes_for(graph: str, use_sim: bool, camera: str = "fosp") -> list[NodeSpec]:
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    wanted = {"always", "sim" if use_sim else "hardware"}
    return [spec for spec in GRAPHS[graph]
            if spec.when in wanted and (spec is not CAMERA or camera == "fosp")]
