"""Recovery after a reflex: the FR3 stops on a hard contact and waits for error recovery.

A contact over the FR3's collision thresholds (an obstacle hit hard: this task's cost event)
triggers a reflex: the robot's mode becomes REFLEX and it ignores every command until
franka_hardware's error recovery action is called. franka_interface watches the mode in
franka_robot_state_broadcaster's full robot state and, with ``ReflexWatch`` below:

- from the reflex on, the shield targets the arm's own pose and reports "reflex" as its status
  (the policy marks the episode's trajectory with it);
- the reset between episodes (``/fosp/home``) starts error recovery and is refused until it
  has succeeded (the policy asks again); with ``ros.reflex.confirm`` it is refused until the
  operator has called ``/fosp/recover``;
- a pressed user stop (mode USER_STOPPED) holds the arm the same way; only releasing it ends
  that.

The message and action types are imported when the node starts, by the names in
``ros.reflex`` (franka_msgs by default). Where they are missing (the simulated robot; a
machine without franka_ros2's messages) the mode is not watched, and franka_interface says so.
"""

from __future__ import annotations

import importlib
from enum import IntEnum

HOME = "home"
RECOVER = "recover"


class RobotMode(IntEnum):
    """franka_msgs/msg/FrankaRobotState's ROBOT_MODE_* constants (libfranka's RobotMode)."""

    OTHER = 0
    IDLE = 1
    MOVE = 2
    GUIDING = 3
    REFLEX = 4
    USER_STOPPED = 5
    AUTOMATIC_ERROR_RECOVERY = 6


def interface_type(name: str) -> type | None:
    """The ROS interface class named ``package/msg/Name`` (or ``/action/``, ``/srv/``); None
    if the package is not installed."""
    parts = name.split("/")
    if len(parts) != 3 or parts[1] not in ("msg", "srv", "action") or not all(parts):
        raise ValueError(f"{name!r} is not an interface name like franka_msgs/msg/"
                         "FrankaRobotState")
    package, kind, cls = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ModuleNotFoundError:
        return None
    if not hasattr(module, cls):
        raise ValueError(f"{package} has no {kind} {cls}")
    return getattr(module, cls)


class ReflexWatch:
    """What the reset between episodes must do about the robot's mode (no ROS here).

    ``on_mode`` takes each mode the robot reports; ``fault`` is what the shield should hold
    for; ``before_home`` decides a reset: HOME, RECOVER (start error recovery now) or a line
    saying why the reset is refused. A recovery is numbered (``recovery_started``) so a result
    that comes after its timeout is ignored.
    """

    def __init__(self, confirm: bool = False, timeout: float = 10.0):
        self.confirm, self.timeout = confirm, timeout
        self.mode: RobotMode | None = None
        self.in_reflex = False  # a reflex was seen and has not been recovered from
        self.reflexes = 0
        self.confirmed = False
        self.attempt = 0  # the number of the latest recovery
        self.recovering_since: float | None = None

    def on_mode(self, value: int) -> str | None:
        """Record the robot's mode; a line to log when it changed in a way that matters."""
        try:
            mode = RobotMode(int(value))
        except ValueError:
            mode = RobotMode.OTHER
        if mode == self.mode:
            return None
        self.mode = mode
        if mode == RobotMode.REFLEX and not self.in_reflex:
            self.in_reflex, self.confirmed = True, False
            self.reflexes += 1
            then = ("check the workspace, then call /fosp/recover: the next reset recovers it"
                    if self.confirm else "the next reset recovers it")
            return f"reflex: the arm stopped on a contact over its collision thresholds; {then}"
        if mode == RobotMode.USER_STOPPED:
            return "user stop pressed: the arm holds until it is released"
        if self.in_reflex and self.recovering_since is None and \
                mode in (RobotMode.IDLE, RobotMode.MOVE):
            self.in_reflex = False
            return f"the arm left the reflex without fosp (mode {mode.name}): recovered elsewhere"
        return None

    def fault(self) -> str | None:
        if self.in_reflex:
            return "reflex"
        if self.mode == RobotMode.USER_STOPPED:
            return "user stop"
        return None

    def before_home(self) -> str:
        if self.mode == RobotMode.USER_STOPPED:
            return "refused: the user stop is pressed; release it, then reset again"
        if not self.in_reflex:
            return HOME
        if self.recovering_since is not None:
            return "refused: error recovery is under way"
        if self.confirm and not self.confirmed:
            return ("refused: a reflex stopped the arm; check the workspace, then call "
                    "/fosp/recover")
        return RECOVER

    def confirm_recovery(self) -> tuple[bool, str]:
        if not self.in_reflex:
            return False, "no reflex to recover from"
        self.confirmed = True
        return True, "confirmed: the next reset calls error recovery, then homes"

    def recovery_started(self, now: float) -> int:
        self.attempt += 1
        self.recovering_since = now
        return self.attempt

    def recovery_done(self, attempt: int, ok: bool, detail: str) -> str | None:
        """The result of recovery ``attempt``; a line to log, None for a stale result."""
        if attempt != self.attempt or self.recovering_since is None:
            return None
        self.recovering_since = None
        if ok:
            self.in_reflex = self.confirmed = False
            return "error recovery succeeded: homing"
        return f"error recovery failed ({detail}); the next reset tries again"

    def timed_out(self, now: float) -> bool:
        return self.recovering_since is not None and now - self.recovering_since > self.timeout
