"""The safety shield between anything that commands the arm and the arm's Cartesian controller.

Every target the robot receives comes out of ``SafetyShield``: policy actions, teleoperation and
homing alike. It holds no ROS code, so the same object guards the ROS ``franka_interface`` node
and is tested exhaustively here. Its guarantees:

1. **Workspace box and step limit.** While the measured pose is inside the box, every target is
   inside the box and within ``max_step`` of the measured pose on every axis. If the arm is found
   outside the box (pushed by hand, started elsewhere), targets lead it back at most one step
   at a time and never further out.
2. **Bad input is dropped.** A non-finite or wrongly shaped action produces no motion.
3. **Watchdog.** Without a fresh pose the shield sends nothing (it cannot know where the arm
   is; the controller keeps its last equilibrium). Without a fresh action it holds position.
   A run of zero actions (a policy's stop, an idle SpaceMouse) holds the pose the arm had at
   the first of them, instead of creeping after the arm's tracking lag. An action that is
   already older than ``action_timeout`` when it is handled (it waited in a queue: a stalled
   process, a network hiccup) is dropped: it was chosen for a pose the arm has left, and a
   backlog of such actions must not play out after the arm was seen to stop.
4. **Latched stop.** ``stop()`` holds position and ignores actions and homing until
   ``resume()`` is called explicitly; nothing else clears it. The target it holds is fixed
   when the stop begins (the last target sent) and never moves while stopped, whatever the
   poses do: re-limiting it to the latest pose moved it whenever the arm lagged more than
   one step behind its target, as it does under load.
5. **Homing** walks back to the home pose under the same limits.
6. **Robot fault.** While the robot itself refuses to move (the FR3 after a reflex, or with
   its user stop pressed: ``fault`` names it), the shield ignores actions and homing and
   sends the arm's own pose as the target, so the controller does not pull the arm towards an
   old target the moment the robot moves again. Clearing the fault is the robot's side's job
   (``fosp_ros.reflex``).

For each action ``on_action`` also says which action the arm carries out instead
(``ShieldOutput.executed``, same units): the action itself (clipped to [-1, 1]) when it is
followed, zeros when the shield holds (stopped, stale, no pose), the step towards home while
homing. A demonstration recorder stores that, so a dataset never pairs an action with a
motion the arm did not make.

Time is passed in explicitly (seconds, any monotonic clock), which keeps the logic testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fosp_core.robot.geometry import (
    Workspace,
    delta_to_action,
    holds_still,
    limit_target,
    next_target,
)


@dataclass
class ShieldConfig:
    workspace: Workspace = field(default_factory=Workspace)
    pose_timeout: float = 0.5  # s without a pose before the shield stops sending targets
    action_timeout: float = 0.5  # s without a fresh action before it holds; older ones drop
    home_pose: tuple[float, ...] = (0.395, 0.0, 0.065, 0.0, 0.0, 0.0)
    home_tolerance: float = 0.002  # m / rad: homing is done when every axis is this close


@dataclass
class ShieldOutput:
    """What the shield decided: a target to send (or None) and why."""

    target: np.ndarray | None
    # "action", "hold", "stopped", "homing", "stale pose", "no pose", "bad action",
    # "stale action"
    reason: str
    # on_action only: the action the arm carries out instead of the one asked for (module
    # docstring); None for a bad action, which is no control step at all
    executed: np.ndarray | None = None


class SafetyShield:
    def __init__(self, config: ShieldConfig | None = None):
        self.config = config or ShieldConfig()
        self.stopped = False
        self.homing = False
        self._pose: np.ndarray | None = None
        self._pose_time = -np.inf
        self._action_time = -np.inf
        self._hold: np.ndarray | None = None  # last target sent: holding means staying there
        self._zero_run = False  # the last action was zero: hold the target it was sent
        self._stop_target: np.ndarray | None = None  # the target a latched stop holds
        self.fault: str | None = None  # why the robot itself does not move, if it does not

    # ---- inputs --------------------------------------------------------------------------
    def update_pose(self, pose: np.ndarray, now: float) -> None:
        pose = np.asarray(pose, dtype=float)
        if pose.shape == (6,) and np.all(np.isfinite(pose)):
            self._pose, self._pose_time = pose, now

    def stop(self) -> None:
        if not self.stopped:
            self._stop_target = None  # fixed by the first target the stop sends
        self.stopped, self.homing = True, False

    def resume(self) -> None:
        self.stopped, self._zero_run, self._stop_target = False, False, None

    def set_fault(self, fault: str | None) -> None:
        """The robot refuses to move (``fault`` says why) or moves again (None)."""
        if fault is not None:
            self.homing = False
        self.fault = fault

    def home(self) -> bool:
        """Start homing; refused (False) while stopped or while the robot is in a fault."""
        if self.stopped or self.fault is not None:
            return False
        self.homing, self._zero_run = True, False
        return True

    # ---- outputs -------------------------------------------------------------------------
    def on_action(self, action: np.ndarray, now: float, age: float = 0.0) -> ShieldOutput:
        """Target for one action (one control step).

        ``age``: seconds since the action was published (0 where the transport cannot say).
        """
        action = np.asarray(action, dtype=float)
        bad = action.shape != (6,) or not np.all(np.isfinite(action))
        out = self._blocked(now)
        if out is None and self.homing:
            out = self._homing_step()  # the action is ignored: the arm steps towards home
            out.executed = delta_to_action(out.target - self._pose, self.config.workspace)
        elif out is None and bad:
            return ShieldOutput(None, "bad action")
        elif out is None and age > self.config.action_timeout:
            out = ShieldOutput(None, "stale action")  # and the watchdog holds, as for none
        if out is not None:  # the action is not followed
            if bad:
                out.executed = None  # no control step at all
            elif out.executed is None:
                out.executed = np.zeros(6)  # the arm holds
            return out
        self._action_time = now
        held = self._hold if self._zero_run else None
        target = next_target(self._pose, action, self.config.workspace, held=held)
        self._zero_run = holds_still(action)
        out = self._send(target, "action")
        out.executed = np.clip(action, -1.0, 1.0)
        return out

    def on_tick(self, now: float) -> ShieldOutput | None:
        """Called by a timer at the control rate: holds or homes when no action drives the arm.

        Returns None when fresh actions are flowing (they produce their own targets).
        """
        blocked = self._blocked(now)
        if blocked is not None:
            return blocked
        if self.homing:
            return self._homing_step()
        if now - self._action_time > self.config.action_timeout:
            return self._hold_position("hold")
        return None

    # ---- internals -----------------------------------------------------------------------
    def _blocked(self, now: float) -> ShieldOutput | None:
        if self._pose is None:
            return ShieldOutput(None, "no pose")
        if now - self._pose_time > self.config.pose_timeout:
            return ShieldOutput(None, "stale pose")
        if self.fault is not None:  # the arm stands where it is: so does the target
            return self._send(self._pose.copy(), self.fault)
        if self.stopped:
            if self._stop_target is None:
                self._stop_target = self._hold_position("stopped").target
            return self._send(self._stop_target, "stopped")
        return None

    def _hold_position(self, reason: str) -> ShieldOutput:
        # Stay at the last target if it is still one step from the arm; otherwise (the arm
        # was moved away) hold where the arm is, pulled into the box by at most one step.
        target = self._hold if self._hold is not None else self._pose
        return self._send(self._limit(target), reason)

    def _homing_step(self) -> ShieldOutput:
        home = np.asarray(self.config.home_pose, dtype=float)
        if np.all(np.abs(self._pose - home) <= self.config.home_tolerance):
            self.homing = False
            return self._send(self._limit(home), "hold")
        return self._send(self._limit(home), "homing")

    def _limit(self, wanted: np.ndarray) -> np.ndarray:
        return limit_target(self._pose, wanted, self.config.workspace)

    def _send(self, target: np.ndarray, reason: str) -> ShieldOutput:
        self._hold = target
        return ShieldOutput(target.copy(), reason)
