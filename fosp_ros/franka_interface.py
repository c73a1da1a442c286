"""franka_interface: policy/teleop actions -> safety shield -> Cartesian targets for the arm.

Reads the end-effector pose franka_ros2 publishes, turns each 6-D action into the next target
through ``fosp_core.robot.shield.SafetyShield`` and publishes it to the controller topic. Nothing
reaches the arm any other way. For each action it also publishes the action the arm carried out
(``executed_action``: zeros where the shield held the arm), which the recorder stores. A timer
at the control rate lets the shield hold position when actions stop (watchdog) and walk home.

Services (std_srvs/Trigger): ``/fosp/stop`` latches a stop, ``/fosp/resume`` clears it,
``/fosp/home`` returns to the start pose (after a reflex: calls error recovery first, see
``fosp_ros.reflex``), ``/fosp/recover`` is the operator's go-ahead for error recovery when
``ros.reflex.confirm`` asks for one.

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

from action_msgs.msg import GoalStatus
from geometry_msgs.msg import PoseStamped
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from fosp_core.robot.shield import SafetyShield, ShieldOutput
from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_from_msg, array_to_msg, pose_from_msg, pose_to_msg
from fosp_ros.reflex import HOME, RECOVER, ReflexWatch, interface_type
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
        self.reflex = ReflexWatch(self.cfg.ros.reflex.confirm, self.cfg.ros.reflex.timeout)
        self._recovery = self._watch_robot_mode()
        self.create_service(Trigger, "/fosp/recover", self._on_recover)

    def _watch_robot_mode(self) -> ActionClient | None:
        """Subscribe the robot's mode; the error recovery client, or None where the interfaces
        are not installed."""
        cfg = self.cfg.ros.reflex
        state_type, action_type = interface_type(cfg.state_type), interface_type(cfg.recovery_type)
        if state_type is None or action_type is None:
            missing = cfg.state_type if state_type is None else cfg.recovery_type
            self.get_logger().info(f"{missing} is not installed: reflexes are not watched (the "
                                   "simulated robot has none; on an FR3 install franka_msgs)")
            return None
        group = ReentrantCallbackGroup()
        self.create_subscription(state_type, cfg.state_topic, self._on_robot_state, POSE_QOS,
                                 callback_group=group)
        self._action_type = action_type
        return ActionClient(self, action_type, cfg.recovery_action, callback_group=group)

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

    def _on_robot_state(self, msg) -> None:
        mode = getattr(msg, self.cfg.ros.reflex.mode_field)
        if mode == self.reflex.mode:  # at 1 kHz, the shield's lock only for a change
            return
        with self._lock:
            line = self.reflex.on_mode(mode)
            self.shield.set_fault(self.reflex.fault())
        if line:
            self.get_logger().warning(line)

    def _on_tick(self) -> None:
        with self._lock:
            if self.reflex.timed_out(self._now()):
                self._recovery_done(self.reflex.attempt, False,
                                    f"no result within {self.reflex.timeout:g} s")
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
            decision = self.reflex.before_home()
            if decision == HOME:
                ok = self.shield.home()
                response.success = ok
                response.message = "homing" if ok else "refused: stopped (call /fosp/resume first)"
                return response
            attempt = self.reflex.recovery_started(self._now()) if decision == RECOVER else 0
        response.success = False
        response.message = decision
        if attempt:
            response.message = ("refused: calling error recovery after a reflex; reset again "
                                "when it has succeeded")
            self.get_logger().warning(f"calling {self.cfg.ros.reflex.recovery_action} after a "
                                      "reflex")
            self._start_recovery(attempt)
        return response

    def _on_recover(self, _request, response):
        if self._recovery is None:
            response.success, response.message = False, "reflexes are not watched here"
            return response
        with self._lock:
            response.success, response.message = self.reflex.confirm_recovery()
        return response

    def _start_recovery(self, attempt: int) -> None:
        """Send error recovery's (empty) goal; its result reaches ``_recovery_done``."""
        if not self._recovery.server_is_ready():
            with self._lock:
                self._recovery_done(attempt, False, "its action server "
                                    f"{self.cfg.ros.reflex.recovery_action} is not there")
            return

        def on_result(future) -> None:
            status = future.result().status
            with self._lock:
                self._recovery_done(attempt, status == GoalStatus.STATUS_SUCCEEDED,
                                    f"goal status {status}")

        def on_goal(future) -> None:
            handle = future.result()
            if not handle.accepted:
                with self._lock:
                    self._recovery_done(attempt, False, "goal rejected")
                return
            handle.get_result_async().add_done_callback(on_result)

        self._recovery.send_goal_async(self._action_type.Goal()).add_done_callback(on_goal)

    def _recovery_done(self, attempt: int, ok: bool, detail: str) -> None:
        """With the lock held."""
        line = self.reflex.recovery_done(attempt, ok, detail)
        if line:
            self.shield.set_fault(self.reflex.fault())
        if line and ok:  # (rclpy ties a call site to one severity: two calls)
            self.get_logger().info(line)
        elif line:
            self.get_logger().error(line)


def main(args: list[str] | None = None) -> int:
    return run_nodes([FrankaInterface], args)


if __name__ == "__main__":
    raise SystemExit(main())
