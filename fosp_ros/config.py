"""Settings of the ROS graph, read from the same project YAML as the CLI (no rclpy here).

Every node takes one ROS parameter, ``config``: the path of a project YAML such as
``config/safereach.yaml``. Its ``env``, ``shield`` and ``ros`` sections fill the dataclasses
below, so the CLI, the nodes and the launch files cannot disagree about a topic or a limit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from fosp_core.envs.safereach import SafeReachConfig
from fosp_core.robot.shield import ShieldConfig
from fosp_core.util.config import from_dict
from fosp_core.util.files import read_mapping, shipped_path

CONFIG_NAME = "safereach.yaml"
# The model the learner starts from when no run is given: an image-mode model, so the same
# default acts on the twin's camera and on a RealSense on the robot.
SHIPPED_MODEL = "fosp-safereach-image-safe-clone"


def default_config_path() -> Path:
    return shipped_path(f"config/{CONFIG_NAME}")


def shipped_model_path() -> Path:
    return shipped_path(f"models/{SHIPPED_MODEL}")


@dataclass
class Topics:
    pose: str = "/franka_robot_state_broadcaster/current_pose"  # PoseStamped, from franka_ros2
    image: str = "/camera/camera/color/image_raw"  # sensor_msgs/Image, from realsense-ros
    action: str = "/fosp/action"  # Float32MultiArray, 6 values in [-1, 1]
    # Float32MultiArray, one per action franka_interface handled: the action the arm carried
    # out (zeros where the shield held it); what the recorder stores
    executed_action: str = "/fosp/action/executed"
    labels: str = "/fosp/labels"  # Float32MultiArray [reward, cost] per control step
    # Float32MultiArray [touch_target, touch_obstacle, reward, cost], ground truth from the sim
    sim_contacts: str = "/fosp/sim/contacts"
    sim_state: str = "/fosp/sim/state"  # Float32MultiArray, the privileged state vector (sim)
    shield_status: str = "/fosp/shield_status"  # String: why the last target was (not) sent
    episode: str = "/fosp/episode"  # String "start" / "stop": recording episodes
    record_status: str = "/fosp/record/status"  # String: live count of recorded episodes


@dataclass
class ControllerProfile:
    """A Cartesian controller that follows geometry_msgs/PoseStamped targets: where
    franka_interface sends the shield's targets, and the QoS it subscribes them with (reliable,
    volatile, keep last ``depth``), so the publisher matches it."""

    target: str
    depth: int = 1


def default_controllers() -> dict[str, ControllerProfile]:
    return {
        # crisp_controllers' CartesianImpedanceController (src/cartesian_controller.cpp): a
        # relative "target_pose" subscribed with rclcpp::QoS(1), so /target_pose under a
        # controller manager in the root namespace. It ignores targets while more than one
        # node publishes on the topic.
        "crisp": ControllerProfile("/target_pose", 1),
        # Your own controller: set its topic here (or in your copy of this YAML).
        "custom": ControllerProfile("/fosp/target", 1),
    }


@dataclass
class ReflexConfig:
    """Recovery after a reflex (see fosp_ros.reflex). The interfaces are franka_ros2's: the
    full robot state of ``franka_robot_state_broadcaster`` (its ``robot_mode``), and
    franka_hardware's error recovery action (empty goal and result). Other types of the same
    shape can stand in for them (the tests do: ``state_type``/``mode_field``,
    ``recovery_type``)."""

    state_topic: str = "/franka_robot_state_broadcaster/robot_state"
    state_type: str = "franka_msgs/msg/FrankaRobotState"
    mode_field: str = "robot_mode"
    recovery_action: str = "/action_server/error_recovery"
    recovery_type: str = "franka_msgs/action/ErrorRecovery"
    # Wait for the operator (``ros2 service call /fosp/recover std_srvs/srv/Trigger``) before
    # error recovery; otherwise the reset between episodes recovers by itself.
    confirm: bool = False
    timeout: float = 10.0  # s: error recovery that takes longer counts as failed


@dataclass
class RosConfig:
    control_rate_hz: float = 10.0
    # s: the policy does not act on an older image, pose or state (a stalled camera or robot
    # stream); the episode waits for fresh input while the shield holds the arm
    max_obs_age: float = 0.5
    frame_id: str = "base"
    # Which of ``controllers`` takes the targets (a node's ``controller`` parameter and the
    # launch argument ``controller:=`` choose another).
    controller: str = "crisp"
    controllers: dict[str, ControllerProfile] = field(default_factory=default_controllers)
    topics: Topics = field(default_factory=Topics)
    reflex: ReflexConfig = field(default_factory=ReflexConfig)

    def controller_profile(self, name: str = "") -> ControllerProfile:
        name = name or self.controller
        if name not in self.controllers:
            raise ValueError(f"unknown controller {name!r}; the config has "
                             f"{', '.join(sorted(self.controllers))} (ros.controllers)")
        return self.controllers[name]


@dataclass
class GraphConfig:
    """Everything a node may need from the project YAML."""

    env: SafeReachConfig = field(default_factory=SafeReachConfig)
    shield: ShieldConfig = field(default_factory=ShieldConfig)
    ros: RosConfig = field(default_factory=RosConfig)

    def shield_config(self) -> ShieldConfig:
        # One workspace for the sim and the shield: the env section's.
        return dataclasses.replace(self.shield, workspace=self.env.workspace)


def load_graph_config(path: str | Path | None = None) -> GraphConfig:
    path = Path(path) if path else default_config_path()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = read_mapping(path)
    known = {k: v for k, v in data.items() if k in ("env", "shield", "ros")}
    return from_dict(GraphConfig, known)
