"""franka_interface: policy/teleop actions -> safety shield -> Cartesian targets for the arm.

Reads the end-effector pose franka_ros2 publishes, turns each 6-D action into the next target
through ``fosp_core.shield.SafetyShield`` and publishes it to the controller topic. Nothing
reaches the arm any other way. For each action it also publishes the action the arm carried out
(``executed_action``: zeros where the shield held the arm), which the recorder stores. A timer
at the control rate lets the shield hold position when actions stop (watchdog) and walk home.

Services (std_srvs/Trigger): ``/fosp/stop`` latches a stop, ``/fosp/resume`` clears it,
``/fosp/home`` returns to the start pose.

Each action's and each pose's age is its DDS source timestamp (the publisher's system clock)
against this machine's clock, so one that waited in a queue is not taken for a fresh one (see
the shield's watchdog and pose timeout): after a stall of this node, the queued old poses do
not make the shield act on where the arm was. With the policy on another machine the two
clocks must agree to well under ``action_timeout`` (chrony or PTP, as the Franka setup asks
anyway). rclpy before Iron (Humble) does not hand callbacks the message info; there the ages
are not checked.
"""

from __future__ import annotations

import threading
import time

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from fosp_core.shield import SafetyShield, ShieldOutput
from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_from_msg, array_to_msg, pose_from_msg, pose_to_msg
from fosp_ros.runtime import (
    POSE_QOS,
    config_parameter,
    message_age,
    run_nodes,
    subscribe_with_info,
)


class FrankaInterface(Node):
    def __init__(self, **node_kwargs):
        super().__init__("franka_interface", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        controller = self.declare_parameter("controller", "").value  # '' = ros.controller
        profile = self.cfg.ros.controller_profile(controller)
        self.shield = SafetyShield(self.cfg.shield_config())
        self._lock = threading.Lock()  # the shield is shared by callbacks on several threads
        topics = self.cfg.ros.topics
        self.target_pub = self.create_publisher(PoseStamped, profile.target, profile.depth)
        self.status_pub = self.create_publisher(String, topics.shield_status, 10)
        self.executed_pub = self.create_publisher(Float32MultiArray, topics.executed_action, 10)
        subscribe_with_info(self, PoseStamped, topics.pose, self._on_pose, POSE_QOS)
        if not subscribe_with_info(self, Float32MultiArray, topics.action, self._on_action, 10):
            self.get_logger().warning("this rclpy gives no message info: the ages of actions "
                                      "and poses are unchecked")
        self.create_service(Trigger, "/fosp/stop", self._on_stop)
        self.create_service(Trigger, "/fosp/resume", self._on_resume)
        self.create_service(Trigger, "/fosp/home", self._on_home)
        self.create_timer(1.0 / self.cfg.ros.control_rate_hz, self._on_tick)
        self._last_reason = ""

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def _on_pose(self, msg: PoseStamped, info) -> None:
        age = message_age(info)
        if age > self.shield.config.pose_timeout:
            self.get_logger().warning(
                f"a pose {age:.2f} s old arrived; if every pose is this old, this machine's "
                "clock and the robot PC's disagree", throttle_duration_sec=5.0)
        with self._lock:
            self.shield.update_pose(pose_from_msg(msg), self._now() - age)

    def _on_action(self, msg: Float32MultiArray, info) -> None:
        age = message_age(info)
        with self._lock:
            out = self.shield.on_action(array_from_msg(msg), self._now(), age)
        if out.reason == "stale action":
            self.get_logger().warning(
                f"dropped an action {age:.2f} s old; if every action is dropped, this "
                "machine's clock and the publisher's disagree", throttle_duration_sec=5.0)
        self._emit(out)
        if out.executed is not None:
            self.executed_pub.publish(array_to_msg(out.executed))

    def _on_tick(self) -> None:
        with self._lock:
            out = self.shield.on_tick(self._now())
        if out is not None:
            self._emit(out)

    def _emit(self, out: ShieldOutput) -> None:
        if out.target is not None:
            stamp = self.get_clock().now().to_msg()
            self.target_pub.publish(pose_to_msg(out.target, stamp, self.cfg.ros.frame_id))
        self.status_pub.publish(String(data=out.reason))
        if out.reason != self._last_reason and out.reason not in ("action", "hold"):
            self.get_logger().warning(f"shield: {out.reason}")
        self._last_reason = out.reason

    def _on_stop(self, _request, response):
        with self._lock:
            self.shield.stop()
        response.success, response.message = True, "stopped (latched until /fosp/resume)"
        return response

    def _on_resume(self, _request, response):
        with self._lock:
            self.shield.resume()
        response.success, response.message = True, "resumed"
        return response

    def _on_home(self, _request, response):
        with self._lock:
            ok = self.shield.home()
        response.success = ok
        response.message = "homing" if ok else "refused: stopped (call /fosp/resume first)"
        return response


def main(args: list[str] | None = None) -> int:
    return run_nodes([FrankaInterface], args)


if __name__ == "__main__":
    raise SystemExit(main())
