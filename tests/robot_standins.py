"""Protocol-level stand-ins for the robot side, behaving as the upstream drivers do.

- franka_ros2's ``franka_robot_state_broadcaster``: ``current_pose`` (PoseStamped of the
  end effector in the base frame), best-effort, keep last 1, at 1 kHz (``pose_rate``); with
  ``pose_reliable`` as releases before v2.4.0 (Humble) / v3.3.0 (Jazzy) published it.
- crisp_controllers' CartesianImpedanceController: subscribes ``/target_pose`` (PoseStamped,
  reliable, keep last 1) and, like it, ignores targets while more than one node publishes
  there. The arm follows the target as an impedance controller would, a first-order lag
  (``tracking_s``), and its pose is what the broadcaster publishes.
- realsense-ros: ``/camera/camera/color/image_raw``, sensor_msgs/Image rgb8 640x480, 30 Hz,
  the system default QoS (reliable, depth 10).
- The FR3's reflex: ``/robot_standin/reflex`` (Trigger) makes it one. Like the robot, the arm
  then ignores targets until franka_hardware's error recovery action
  (``/action_server/error_recovery``, empty goal and result) is called. The robot mode goes
  out with each pose on ``franka_robot_state_broadcaster/robot_state`` (the system default
  QoS), as FrankaRobotState's ``robot_mode``. franka_msgs is not on PyPI, so interfaces of the
  same shape stand in for it: std_msgs/UInt8 (``data``) for the state, test_msgs' Fibonacci
  (its goal and result are used empty) for the action. ``recovery_failures`` recoveries are
  aborted first, as franka_hardware aborts when libfranka's recovery throws. What happened
  goes out on ``/robot_standin/events`` (String) for the tests.

Run as a node process: ``python -m tests.robot_standins --ros-args -p pose_rate:=1000``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionServer
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String, UInt8
from std_srvs.srv import Trigger
from test_msgs.action import Fibonacci

from fosp_ros.conversions import pose_from_msg, pose_to_msg
from fosp_ros.reflex import RobotMode
from fosp_ros.runtime import run_nodes

POSE_TOPIC = "/franka_robot_state_broadcaster/current_pose"
TARGET_TOPIC = "/target_pose"
IMAGE_TOPIC = "/camera/camera/color/image_raw"
STATE_TOPIC = "/franka_robot_state_broadcaster/robot_state"
RECOVERY_ACTION = "/action_server/error_recovery"
# The ros.reflex settings that point franka_interface at the stand-in's interfaces.
REFLEX_STANDIN = {"state_type": "std_msgs/msg/UInt8", "mode_field": "data",
                  "recovery_type": "test_msgs/action/Fibonacci"}
START_POSE = (0.4, 0.0, 0.07, 0.0, 0.0, 0.0)


class RobotStandIn(Node):
    def __init__(self, **node_kwargs):
        super().__init__("robot_standin", **node_kwargs)
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("pose_rate", 1000.0), ("pose_reliable", False), ("image_rate", 30.0),
            ("tracking_s", 0.05), ("recovery_failures", 0))}
        self.params = p
        reliability = ReliabilityPolicy.RELIABLE if p["pose_reliable"] else \
            ReliabilityPolicy.BEST_EFFORT
        depth = 10 if p["pose_reliable"] else 1
        self.pose_pub = self.create_publisher(PoseStamped, POSE_TOPIC,
                                              QoSProfile(depth=depth, reliability=reliability))
        self.image_pub = self.create_publisher(Image, IMAGE_TOPIC, 10)
        self.state_pub = self.create_publisher(UInt8, STATE_TOPIC, 10)
        self.events_pub = self.create_publisher(String, "/robot_standin/events", 10)
        self.mode = RobotMode.MOVE
        self.failures_left = p["recovery_failures"]
        self.create_service(Trigger, "/robot_standin/reflex", self._on_reflex)
        ActionServer(self, Fibonacci, RECOVERY_ACTION, self._recover)
        self.create_subscription(PoseStamped, TARGET_TOPIC, self._on_target,
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self._lock = threading.Lock()
        self.pose = np.array(START_POSE)
        self.target = self.pose.copy()
        self.ignored = 0
        image = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
        image.header.frame_id = "camera_color_optical_frame"
        image.data = bytes(np.full((480, 640, 3), 90, np.uint8))
        self.image = image
        self._running = True
        self._threads = [threading.Thread(target=self._arm, daemon=True),
                         threading.Thread(target=self._camera, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _on_target(self, msg: PoseStamped) -> None:
        if self.count_publishers(TARGET_TOPIC) > 1:  # crisp: "Multiple publishers detected"
            self.ignored += 1
            return
        with self._lock:
            if self.mode == RobotMode.MOVE:  # in a reflex the robot ignores every command
                self.target = pose_from_msg(msg)

    def _on_reflex(self, _request, response):
        with self._lock:
            self.mode, self.target = RobotMode.REFLEX, self.pose.copy()
        self.events_pub.publish(String(data="reflex"))
        response.success = True
        return response

    def _recover(self, goal_handle):
        with self._lock:
            self.mode = RobotMode.AUTOMATIC_ERROR_RECOVERY
        time.sleep(0.2)
        with self._lock:
            failed = self.failures_left > 0
            self.failures_left -= failed
            self.mode = RobotMode.REFLEX if failed else RobotMode.MOVE
        if failed:
            goal_handle.abort()
        else:
            goal_handle.succeed()
        self.events_pub.publish(String(data="recovery aborted" if failed else "recovered"))
        return Fibonacci.Result()

    def _arm(self) -> None:
        period = 1.0 / self.params["pose_rate"]
        gain = min(1.0, period / self.params["tracking_s"])
        next_at = time.monotonic()
        while self._running:
            with self._lock:
                self.pose = self.pose + gain * (self.target - self.pose)
                pose, mode = self.pose.copy(), self.mode
            self.pose_pub.publish(pose_to_msg(pose, self.get_clock().now().to_msg(), "base"))
            self.state_pub.publish(UInt8(data=int(mode)))
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _camera(self) -> None:
        period = 1.0 / self.params["image_rate"]
        while self._running:
            self.image.header.stamp = self.get_clock().now().to_msg()
            self.image_pub.publish(self.image)
            time.sleep(period)

    def close(self) -> None:
        self._running = False
        for thread in self._threads:
            thread.join(timeout=2.0)


def main(args: list[str] | None = None) -> int:
    return run_nodes([RobotStandIn], args)


if __name__ == "__main__":
    raise SystemExit(main())
