"""teleop: SpaceMouse (or keyboard) -> the same 6-D action the policy sends, at the control rate.

Demonstrations and policy actions share units and pass through the same safety shield
(``franka_interface``). Device sources (parameter ``device``):

- ``spacenavd``: the spacenavd daemon over its UNIX socket (parameter ``socket``, '' = the
  daemon's default), via ``fosp_teleop.spacemouse.SpnavClient``;
- ``spacenav_topics``: the ROS ``spacenav`` node's ``spacenav/twist`` and ``spacenav/joy``;
- ``pyspacemouse``: HID access without the daemon (optional package);
- ``keyboard``: keys on this terminal (w/s a/d r/f q/e, space = record, v = violation); it
  needs a terminal, so it runs with ``ros2 run``, not under ``ros2 launch`` (whose nodes read
  no keys): without one it refuses to start.

No device keeps the arm moving after it goes quiet: a deflection with no motion event for
``hold_timeout`` seconds (0.5), a device-removed event and a lost daemon connection all zero
the action. A lost spacenavd connection is retried once a second.

Buttons: the record button publishes "toggle" on the episode topic (the recorder starts or
stops an episode); the violation button toggles the operator's cost flag for the labeler.
Mapping parameters: ``deadband``, ``full_scale``, ``scale`` (6 values), ``operator``
(``facing`` the robot across the table, or ``behind`` it).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float32MultiArray, String

from fosp_ros.config import load_graph_config
from fosp_ros.conversions import array_to_msg
from fosp_ros.runtime import config_parameter, run_nodes
from fosp_teleop.spacemouse import (
    HOLD_TIMEOUT_S,
    KeyboardTeleop,
    MotionEvent,
    PySpaceMouseReader,
    SpaceMouseTeleop,
    SpnavClient,
    TeleopCommand,
    TeleopMapping,
    joy_buttons,
    twist_to_raw,
)

DEVICES = ("spacenavd", "spacenav_topics", "pyspacemouse", "keyboard")


class RosSpacenavSource:
    """Events from the ROS spacenav node's topics, in the daemon's units (an EventSource)."""

    def __init__(self, node: Node, full_scale: float):
        self._events: list = []
        self._buttons: list[int] = []
        self._lock = threading.Lock()
        self._full_scale = full_scale
        node.create_subscription(Twist, "spacenav/twist", self._on_twist, 10)
        node.create_subscription(Joy, "spacenav/joy", self._on_joy, 10)

    def _on_twist(self, msg: Twist) -> None:
        lin, ang = msg.linear, msg.angular
        raw = twist_to_raw((lin.x, lin.y, lin.z), (ang.x, ang.y, ang.z), self._full_scale)
        with self._lock:
            self._events.append(MotionEvent(*(int(round(v)) for v in raw), period=0))

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            self._events += joy_buttons(list(msg.buttons), self._buttons)
            self._buttons = list(msg.buttons)

    def poll(self) -> list:
        with self._lock:
            events, self._events = self._events, []
        return events


class Teleop(Node):
    def __init__(self, **node_kwargs):
        super().__init__("teleop", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        p = {name: self.declare_parameter(name, default).value for name, default in (
            ("device", "spacenavd"), ("socket", ""), ("deadband", 0.1), ("full_scale", 350.0),
            ("scale", [1.0] * 6), ("operator", "facing"), ("spacenav_full_scale", 512.0),
            ("hold_timeout", HOLD_TIMEOUT_S))}
        if p["device"] not in DEVICES:
            raise ValueError(f"teleop device must be one of {DEVICES}, not {p['device']!r}")
        base = TeleopMapping.behind_robot if p["operator"] == "behind" else TeleopMapping
        mapping = base(deadband=float(p["deadband"]), full_scale=float(p["full_scale"]),
                       scale=tuple(float(s) for s in p["scale"]))
        self._resources = contextlib.ExitStack()  # device handles, terminal mode
        self.device = self._open(p)
        self.teleop = (self.device if isinstance(self.device, KeyboardTeleop)
                       else SpaceMouseTeleop(self.device, mapping, float(p["hold_timeout"])))
        self._socket = p["socket"] or None
        self._retry_at = 0.0
        topics = self.cfg.ros.topics
        self.action_pub = self.create_publisher(Float32MultiArray, topics.action, 10)
        self.episode_pub = self.create_publisher(String, topics.episode, 10)
        self.cost_flag_pub = self.create_publisher(Bool, "/fosp/label/cost_flag", 10)
        self._violation = False
        self.create_timer(1.0 / self.cfg.ros.control_rate_hz, self._tick)
        self.get_logger().info(f"teleop: {p['device']} -> {topics.action}")

    def _open(self, p: dict):
        if p["device"] == "spacenavd":
            return self._resources.enter_context(SpnavClient(p["socket"] or None))
        if p["device"] == "spacenav_topics":
            return RosSpacenavSource(self, float(p["spacenav_full_scale"]))
        if p["device"] == "pyspacemouse":
            return PySpaceMouseReader(full_scale=float(p["full_scale"]))
        if not os.isatty(sys.stdin.fileno()):
            raise ValueError("the keyboard needs a terminal, and this node has none (ros2 "
                             "launch gives its nodes none): run it in one, ros2 run fosp_teleop "
                             "teleop --ros-args -p device:=keyboard")
        keyboard = KeyboardTeleop(sys.stdin)
        self._resources.enter_context(keyboard.cbreak())  # single keys, no Enter needed
        return keyboard

    def _reconnect(self) -> None:
        """After spacenavd went away (restarted, stopped): try again once a second."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + 1.0
        try:
            client = SpnavClient(self._socket)
        except OSError:
            return
        self._resources.enter_context(client)
        self.teleop.set_source(client)
        self.get_logger().info("teleop: connected to spacenavd again")

    def _tick(self) -> None:
        step = self.teleop.step()
        if isinstance(self.teleop, SpaceMouseTeleop) and self.teleop.lost:
            self.get_logger().warning(f"teleop: {self.teleop.lost}; action zeroed",
                                      throttle_duration_sec=5.0)
            if isinstance(self.teleop.source, SpnavClient):
                self._reconnect()
        # Published every tick, zeros included: each message is one control step.
        self.action_pub.publish(array_to_msg(step.action))
        for command in step.commands:
            if command == TeleopCommand.TOGGLE_RECORDING:
                self.episode_pub.publish(String(data="toggle"))
            elif command == TeleopCommand.MARK_VIOLATION:
                self._violation = not self._violation
                self.cost_flag_pub.publish(Bool(data=self._violation))
                self.get_logger().info(f"violation flag {'on' if self._violation else 'off'}")

    def close(self) -> None:
        self._resources.close()


def main(args: list[str] | None = None) -> int:
    return run_nodes([Teleop], args)


if __name__ == "__main__":
    raise SystemExit(main())
