"""End-effector pose conventions and the action -> Cartesian target step.

Everything that turns a policy action into a robot command goes through ``next_target``: the
simulated twin, the ROS ``franka_interface`` shield and teleoperation all share it, so actions
recorded from a SpaceMouse, from the scripted behaviours and from the policy mean the same thing.

The 6-D pose is ``[x, y, z, roll, pitch, yaw]`` in the robot base frame. The angles are *relative
to the tool-down orientation* (gripper pointing at the table): a Franka's raw orientation while
reaching down sits at roll = +-pi, where Euler angles wrap; learning on a wrapping input is
needlessly hard, and the relative form is 0 at the home orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Tool-down reference: the flange z axis points at the table (rotation of pi about base x).
TOOL_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Rotation matrix of extrinsic x-y-z Euler angles (R = Rz(yaw) Ry(pitch) Rx(roll))."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_rpy(rot: np.ndarray) -> np.ndarray:
    """Inverse of ``rpy_to_matrix`` (pitch kept in [-pi/2, pi/2])."""
    pitch = np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))
    roll = np.arctan2(rot[2, 1], rot[2, 2])
    yaw = np.arctan2(rot[1, 0], rot[0, 0])
    return np.array([roll, pitch, yaw])


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(quat_wxyz, dtype=float) / np.linalg.norm(quat_wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0, robust for every rotation (Shepperd)."""
    m = rot
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    return q if q[0] >= 0 else -q


def pose_from_pos_rot(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """6-D pose from a position and a world rotation matrix of the tool frame."""
    relative = rot @ TOOL_DOWN.T
    return np.concatenate([np.asarray(pos, dtype=float), matrix_to_rpy(relative)])


def pos_rot_from_pose(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``pose_from_pos_rot``."""
    pose = np.asarray(pose, dtype=float)
    return pose[:3].copy(), rpy_to_matrix(pose[3:]) @ TOOL_DOWN


def pose_from_pos_quat(pos: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
    """6-D pose from a geometry_msgs-style position + quaternion (w first here)."""
    return pose_from_pos_rot(pos, quat_to_matrix(quat_wxyz))


def pos_quat_from_pose(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, rot = pos_rot_from_pose(pose)
    return pos, matrix_to_quat(rot)


@dataclass
class Workspace:
    """Box the commanded end-effector pose must stay in, and the per-step motion limit.

    Defaults describe the SafeReach table: a 25 cm x 25 cm square centred 0.5 m in front of
    the robot base, and a height band low enough that the gripper cannot hop over obstacles.
    """

    low: tuple[float, ...] = (0.375, -0.125, 0.055, -0.3, -0.3, -0.8)
    high: tuple[float, ...] = (0.625, 0.125, 0.085, 0.3, 0.3, 0.8)
    # Largest pose change one action may ask for: metres for xyz, radians for the angles.
    max_step: tuple[float, ...] = field(default=(0.02, 0.02, 0.02, 0.1, 0.1, 0.1))

    def clamp(self, pose: np.ndarray) -> np.ndarray:
        return np.clip(pose, self.low, self.high)

    def contains(self, pose: np.ndarray, tol: float = 1e-9) -> bool:
        pose = np.asarray(pose)
        above = np.all(pose >= np.subtract(self.low, tol))
        return bool(above and np.all(pose <= np.add(self.high, tol)))


def action_to_delta(action: np.ndarray, workspace: Workspace) -> np.ndarray:
    """Normalised action in [-1, 1]^6 -> pose change. Out-of-range values are clipped."""
    return np.clip(np.asarray(action, dtype=float), -1.0, 1.0) * np.asarray(workspace.max_step)


def delta_to_action(delta: np.ndarray, workspace: Workspace) -> np.ndarray:
    """Pose change -> normalised action (clipped to [-1, 1]); inverse of ``action_to_delta``."""
    return np.clip(np.asarray(delta, dtype=float) / np.asarray(workspace.max_step), -1.0, 1.0)


def limit_target(pose: np.ndarray, wanted: np.ndarray, workspace: Workspace) -> np.ndarray:
    """The target closest to ``wanted`` that is in the box and one step from ``pose``.

    Per axis: clamp into the box, then into [pose - max_step, pose + max_step]. With the pose in
    the box the result satisfies both. With the pose outside (the arm was pushed or started
    elsewhere) the two intervals do not overlap and the result moves one step towards the box,
    never away from it.
    """
    pose = np.asarray(pose, dtype=float)
    step = np.asarray(workspace.max_step)
    return np.clip(workspace.clamp(np.asarray(wanted, dtype=float)), pose - step, pose + step)


def holds_still(action: np.ndarray) -> bool:
    """Is this the zero action (or a non-finite or wrongly shaped one, treated as zero)?"""
    action = np.asarray(action, dtype=float)
    return action.shape != (6,) or not np.all(np.isfinite(action)) or not action.any()


def next_target(pose: np.ndarray, action: np.ndarray, workspace: Workspace,
                held: np.ndarray | None = None) -> np.ndarray:
    """Cartesian target for the next control step: measured pose + bounded change, in the box.

    The change is applied to the *measured* pose, not to the previous target, so a blocked arm
    does not wind up a target far away that it would jump to once free. A non-finite or
    wrongly shaped action is treated as "hold position" (``holds_still``).

    A run of zero actions (a policy's stop, an idle SpaceMouse) holds still where its first
    step found the arm: pass the previous target as ``held`` while the run lasts and it is
    kept (still within one step of the pose). Re-anchored on the measured pose every step,
    the hold would creep after the arm's tracking lag: up to 4 cm and 0.2 rad over 70 steps
    in the twin.
    """
    pose = np.asarray(pose, dtype=float)
    if holds_still(action):
        return limit_target(pose, pose if held is None else held, workspace)
    delta = action_to_delta(np.asarray(action, dtype=float), workspace)
    return limit_target(pose, pose + delta, workspace)
