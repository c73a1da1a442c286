import numpy as np
import pytest

from fosp_core.robot.geometry import (
    TOOL_DOWN,
    Workspace,
    action_to_delta,
    delta_to_action,
    holds_still,
    matrix_to_quat,
    next_target,
    pos_quat_from_pose,
    pose_from_pos_quat,
    quat_to_matrix,
    rpy_to_matrix,
)


def test_tool_down_is_zero_pose():
    pose = pose_from_pos_quat([0.5, 0.0, 0.1], matrix_to_quat(TOOL_DOWN))
    np.testing.assert_allclose(pose, [0.5, 0.0, 0.1, 0.0, 0.0, 0.0], atol=1e-12)
    # A Franka reaching down reports w=0, x=1 (pi about x): that is our zero orientation.
    np.testing.assert_allclose(matrix_to_quat(TOOL_DOWN), [0, 1, 0, 0], atol=1e-12)


def test_yaw_is_about_world_z():
    # Hand computation: tool-down flange rotated by +90 deg about world z maps x->y.
    pose = np.array([0.4, 0.1, 0.2, 0.0, 0.0, np.pi / 2])
    _, quat = pos_quat_from_pose(pose)
    rot = quat_to_matrix(quat)
    np.testing.assert_allclose(rot @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rot @ [0, 0, 1], [0, 0, -1], atol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_pose_quaternion_round_trip(seed):
    rng = np.random.default_rng(seed)
    pose = np.concatenate([rng.uniform(-1, 1, 3), rng.uniform(-1.2, 1.2, 3)])
    pos, quat = pos_quat_from_pose(pose)
    np.testing.assert_allclose(pose_from_pos_quat(pos, quat), pose, atol=1e-9)
    rot = rpy_to_matrix(pose[3:])
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(rot)), rot, atol=1e-12)


def test_action_scaling_round_trip_and_clip():
    ws = Workspace()
    np.testing.assert_allclose(action_to_delta(np.ones(6), ws), ws.max_step)
    np.testing.assert_allclose(action_to_delta(np.full(6, 5.0), ws), ws.max_step)
    delta = np.array([0.01, -0.005, 0.0, 0.05, 0.0, -0.02])
    np.testing.assert_allclose(action_to_delta(delta_to_action(delta, ws), ws), delta)


def test_next_target_stays_in_box_and_step():
    ws = Workspace()
    pose = np.array([0.62, 0.12, 0.08, 0.0, 0.0, 0.0])
    target = next_target(pose, np.ones(6), ws)
    assert ws.contains(target)
    np.testing.assert_allclose(target[:3], [0.625, 0.125, 0.085])
    step = np.abs(target - pose)
    assert np.all(step <= np.asarray(ws.max_step) + 1e-12)


@pytest.mark.parametrize("bad", [np.full(6, np.nan), np.array([np.inf, 0, 0, 0, 0, 0]), np.ones(3)])
def test_next_target_holds_on_bad_action(bad):
    ws = Workspace()
    pose = np.array([0.5, 0.0, 0.07, 0.1, 0.0, 0.0])
    np.testing.assert_allclose(next_target(pose, bad, ws), pose)


def test_a_held_target_is_kept_for_zero_actions_only():
    ws = Workspace()
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    held = pose + [0.005, 0, 0.003, 0, 0, 0.01]  # within one step (0.02 m, 0.1 rad)
    assert holds_still(np.zeros(6)) and holds_still([np.nan] * 6) and holds_still([1, 2])
    assert not holds_still([0, 0, 0, 0, 0, 1e-6])
    np.testing.assert_allclose(next_target(pose, np.zeros(6), ws, held=held), held)
    np.testing.assert_allclose(next_target(pose, np.zeros(6), ws), pose)  # a run's first step
    np.testing.assert_allclose(next_target(pose, [np.inf] * 6, ws, held=held), held)
    # Too far from the arm (it was pushed away): pulled to one step from it, never beyond.
    far = pose + [0.05, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(next_target(pose, np.zeros(6), ws, held=far),
                               pose + [0.02, 0, 0, 0, 0, 0])
    # A moving action ignores the hold: measured pose + its change.
    moved = next_target(pose, [1, 0, 0, 0, 0, 0], ws, held=held)
    np.testing.assert_allclose(moved, pose + [0.02, 0, 0, 0, 0, 0])
