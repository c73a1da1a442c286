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

Run as a node process: ``python -m tests.robot_standins --ros-args -p pose_rate:=1000``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fosp_ros.conversions import pose_from_msg, pose_to_msg
from fosp_ros.runtime import run_nodes

POSE_TOPIC = "/franka_robot_state_broadcaster/current_pose"
TARGET_TOPIC = "/target_pose"
IMAGE_TOPIC = "/camera/camera/color/image_raw"
START_POSE = (0.4, 0.0, 0.07, 0.0, 0.0, 0.0)


class RobotStandIn(Node):
    def __init__(self, **node_kwargs):
        super().__init__("robot_standin", **node_kwargs)
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("pose_rate", 1000.0), ("pose_reliable", False), ("image_rate", 30.0),
            ("tracking_s", 0.05))}
        self.params = p
        reliability = ReliabilityPolicy.RELIABLE if p["pose_reliable"] else \
            ReliabilityPolicy.BEST_EFFORT
        depth = 10 if p["pose_reliable"] else 1
        self.pose_pub = self.create_publisher(PoseStamped, POSE_TOPIC,
                                              QoSProfile(depth=depth, reliability=reliability))
        self.image_pub = self.create_publisher(Image, IMAGE_TOPIC, 10)
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
            self.target = pose_from_msg(msg)

    def _arm(self) -> None:
        period = 1.0 / self.params["pose_rate"]
        gain = min(1.0, period / self.params["tracking_s"])
        next_at = time.monotonic()
        while self._running:
            with self._lock:
                self.pose = self.pose + gain * (self.target - self.pose)
                pose = self.pose.copy()
            self.pose_pub.publish(pose_to_msg(pose, self.get_clock().now().to_msg(), "base"))
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
