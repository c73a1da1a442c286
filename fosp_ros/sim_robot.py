"""sim_robot: the MuJoCo SafeReach twin behind the topics franka_ros2 and realsense-ros use.

Every other node runs unchanged against it: it takes Cartesian targets (PoseStamped) on the
controller topic, steps the physics at the control rate, and publishes the end-effector pose
(as franka_robot_state_broadcaster does), the camera image (as realsense-ros does) and, which
real hardware cannot, ground-truth contacts and labels.

Services: ``/fosp/sim/reset`` (std_srvs/Trigger) starts a new layout (seeded sequence).
Parameters: ``config``, ``task``, ``seed``, and ``layout``: the target's index, then the
obstacles' (``meta['layout']``'s ``target_index`` and ``obstacle_indices``), used at every
reset instead of the seeded sequence, e.g. ``-p layout:='[1, 0, 2]'``: replay the layout of a
trajectory that went wrong through the whole graph.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray
from std_srvs.srv import Trigger

from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import Layout, task_spec
from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_to_msg, image_to_msg, pose_from_msg, pose_to_msg
from fosp_ros.runtime import POSE_QOS, config_parameter, run_nodes


class SimRobot(Node):
    def __init__(self, **node_kwargs):
        super().__init__("sim_robot", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        self.seed = self.declare_parameter("seed", 0).get_parameter_value().integer_value
        task = self.declare_parameter("task", "").get_parameter_value().string_value
        # The controller whose target topic it follows, as franka_interface's parameter.
        profile = self.cfg.ros.controller_profile(self.declare_parameter("controller", "").value)
        env_cfg = self.cfg.env
        if task:
            env_cfg.task = task
        # The camera frame is rendered once a tick, in _publish, whatever the policy reads;
        # image observations would render every frame a second time, to be thrown away.
        env_cfg.obs_mode = "state"
        # Typed without a default: an empty integer array has no type of its own in ROS.
        indices = self.declare_parameter("layout", Parameter.Type.INTEGER_ARRAY).value
        self.layout = None if not indices else Layout.from_dict(
            {"target_index": indices[0], "obstacle_indices": list(indices[1:])},
            task_spec(env_cfg.task).n_obstacles, task_spec(env_cfg.task))
        self.env = SafeReachEnv(config=env_cfg)
        self._episode = 0
        self._target: np.ndarray | None = None
        self._reset_requests: list[threading.Event] = []
        self._lock = threading.Lock()  # guards the two fields above

        topics = self.cfg.ros.topics
        # As franka_ros2's state broadcaster publishes it (see POSE_QOS).
        self.pose_pub = self.create_publisher(PoseStamped, topics.pose, POSE_QOS)
        self.image_pub = self.create_publisher(Image, topics.image, 10)
        self.contacts_pub = self.create_publisher(Float32MultiArray, topics.sim_contacts, 10)
        self.state_pub = self.create_publisher(Float32MultiArray, topics.sim_state, 10)
        self.create_subscription(PoseStamped, profile.target, self._on_target, profile.depth)
        # Reentrant: a reset request waits for the simulation thread while targets keep coming.
        self.create_service(Trigger, "/fosp/sim/reset", self._on_reset,
                            callback_group=ReentrantCallbackGroup())
        self.period = 1.0 / self.cfg.ros.control_rate_hz
        # The simulation runs on a thread of its own: an OpenGL context belongs to the thread
        # that made it, and the executor would run a timer on whichever thread is free.
        self._running = True
        self._thread = threading.Thread(target=self._simulate, name="sim", daemon=True)
        self._thread.start()
        self.get_logger().info(f"sim_robot: task {env_cfg.task}, {1 / self.period:.0f} Hz, "
                               f"target topic {profile.target}")

    def _on_target(self, msg: PoseStamped) -> None:
        target = pose_from_msg(msg)
        if np.all(np.isfinite(target)):
            with self._lock:
                self._target = target

    def _on_reset(self, _request, response):
        done = threading.Event()
        with self._lock:
            self._reset_requests.append(done)
        deadline = time.monotonic() + 10.0
        # Stop waiting as soon as the simulation thread is gone (shutdown), not after 10 s.
        while not done.wait(0.05) and self._thread.is_alive() and time.monotonic() < deadline:
            pass
        response.success = done.is_set()
        response.message = f"episode {self._episode} layout ready" if response.success else \
            "simulation thread did not answer"
        return response

    def _reset_env(self) -> None:
        self.env.reset(seed=self.seed + self._episode, options={"layout": self.layout})
        self._episode += 1
        with self._lock:
            self._target = None  # hold the new home pose until a controller target arrives
        self._publish(self.env.pose(), (0.0, 0.0, 0.0, 0.0))

    def _simulate(self) -> None:
        try:
            self._simulate_loop()
        except Exception:
            # SIGINT shuts the ROS context down at once; a publish then fails. That is the end
            # of the run, not an error. Anything else is.
            if self.context.ok():
                raise
        finally:
            self._running = False
            self.env.close()  # on this thread, which owns the OpenGL context

    def _simulate_loop(self) -> None:
        self._reset_env()
        next_tick = time.monotonic()
        while self._running:
            with self._lock:
                requests, self._reset_requests = self._reset_requests, []
                target = self._target
            if requests:
                self._reset_env()
                for done in requests:
                    done.set()
                continue
            # Without a target the arm holds where it is, as an impedance controller does.
            _, reward, _, _, info = self.env.step_target(
                target if target is not None else self.env.pose())
            contacts = (float(info["touch_target"]), float(info["touch_obstacle"]), reward,
                        info["cost"])
            self._publish(info["pose"], contacts)
            next_tick += self.period
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def _publish(self, pose: np.ndarray, contacts) -> None:
        stamp = self.get_clock().now().to_msg()
        frame = self.cfg.ros.frame_id
        self.pose_pub.publish(pose_to_msg(pose, stamp, frame))
        self.image_pub.publish(image_to_msg(self.env.render_image(), stamp, "camera"))
        self.contacts_pub.publish(array_to_msg(contacts))
        self.state_pub.publish(array_to_msg(self.env.state_vector(pose)))

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return run_nodes([SimRobot], args)


if __name__ == "__main__":
    raise SystemExit(main())
