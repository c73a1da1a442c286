"""Safety shield: property-based (hypothesis) and scripted checks of every guarantee."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fosp_core.robot.geometry import Workspace, next_target
from fosp_core.robot.shield import SafetyShield, ShieldConfig

WS = Workspace()
LOW, HIGH, STEP = np.array(WS.low), np.array(WS.high), np.array(WS.max_step)

adversarial = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e300, -1e300, np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0]),
)
actions = st.lists(adversarial, min_size=6, max_size=6).map(np.array)
bad_shapes = st.lists(st.floats(-2, 2), min_size=0, max_size=9).filter(lambda v: len(v) != 6)
poses_in_box = st.tuples(*[st.floats(lo, hi) for lo, hi in zip(WS.low, WS.high)]).map(np.array)


def in_box(target):
    return np.all(target >= LOW - 1e-12) and np.all(target <= HIGH + 1e-12)


def within_step(target, pose):
    return np.all(np.abs(target - pose) <= STEP + 1e-12)


@settings(max_examples=300, deadline=None)
@given(pose=poses_in_box, sequence=st.lists(st.one_of(actions, bad_shapes.map(np.array)),
                                            min_size=1, max_size=40))
def test_targets_stay_in_box_and_step_limit(pose, sequence):
    shield = SafetyShield()
    now = 0.0
    for action in sequence:
        shield.update_pose(pose, now)
        out = shield.on_action(action, now)
        if out.target is not None:
            assert in_box(out.target), out
            assert within_step(out.target, pose), out
            # the arm follows part of the way, as a real controller would
            pose = pose + 0.7 * (out.target - pose)
        else:
            assert out.reason == "bad action"
        now += 0.01  # bursts: 100 Hz, faster than the control rate


@settings(max_examples=200, deadline=None)
@given(pose=st.tuples(*[st.floats(-2, 2) for _ in range(6)]).map(np.array), action=actions)
def test_outside_the_box_only_moves_back_one_step(pose, action):
    shield = SafetyShield()
    shield.update_pose(pose, 0.0)
    out = shield.on_action(action, 0.0)
    if out.target is None:
        return
    assert within_step(out.target, pose)
    dist_before = np.abs(np.clip(pose, LOW, HIGH) - pose)
    dist_after = np.abs(np.clip(out.target, LOW, HIGH) - out.target)
    assert np.all(dist_after <= dist_before + 1e-12)


def test_non_finite_action_is_dropped():
    shield = SafetyShield()
    shield.update_pose(np.array([0.5, 0, 0.07, 0, 0, 0]), 0.0)
    for bad in ([np.nan] * 6, [0, 0, np.inf, 0, 0, 0], [1, 2, 3]):
        out = shield.on_action(np.array(bad, dtype=float), 0.0)
        assert out.target is None and out.reason == "bad action"


def test_no_pose_and_stale_pose_send_nothing():
    shield = SafetyShield(ShieldConfig(pose_timeout=0.5))
    assert shield.on_action(np.ones(6), 0.0).reason == "no pose"
    shield.update_pose(np.array([0.5, 0, 0.07, 0, 0, 0]), 0.0)
    assert shield.on_action(np.ones(6), 0.4).target is not None
    out = shield.on_action(np.ones(6), 0.6)
    assert out.target is None and out.reason == "stale pose"
    assert shield.on_tick(0.7).reason == "stale pose"


def test_stale_action_holds_last_target():
    shield = SafetyShield(ShieldConfig(action_timeout=0.3))
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    shield.update_pose(pose, 0.0)
    sent = shield.on_action(np.array([1, 0, 0, 0, 0, 0.0]), 0.0).target
    np.testing.assert_allclose(sent, pose + [0.02, 0, 0, 0, 0, 0])
    shield.update_pose(pose + [0.015, 0, 0, 0, 0, 0], 0.1)
    assert shield.on_tick(0.2) is None  # actions are fresh: no extra targets
    shield.update_pose(pose + [0.02, 0, 0, 0, 0, 0], 0.35)
    out = shield.on_tick(0.4)
    assert out.reason == "hold"
    np.testing.assert_allclose(out.target, sent)  # holds where it was sent, no drift


def test_an_action_older_than_the_timeout_is_dropped_and_the_arm_holds():
    shield = SafetyShield(ShieldConfig(action_timeout=0.3))
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    shield.update_pose(pose, 0.0)
    sent = shield.on_action(np.array([0, -1, 0, 0, 0, 0.0]), 0.0, age=0.29).target
    np.testing.assert_allclose(sent, pose + [0, -0.02, 0, 0, 0, 0])  # fresh enough: moves
    arrived = pose + [0, -0.02, 0, 0, 0, 0]
    shield.update_pose(arrived, 1.0)
    # A backlog handled after a stall: each action waited longer than the timeout.
    for k, age in enumerate((1.2, 1.1, 0.31)):
        out = shield.on_action(np.array([0, -1, 0, 0, 0, 0.0]), 1.0 + 0.01 * k, age=age)
        assert out.target is None and out.reason == "stale action"
    out = shield.on_tick(1.05)
    assert out.reason == "hold"  # a stale action is no action: the watchdog holds
    np.testing.assert_allclose(out.target, sent)
    # A fresh action after the backlog moves the arm again, one step from where it is.
    out = shield.on_action(np.array([0, -1, 0, 0, 0, 0.0]), 1.1, age=0.01)
    np.testing.assert_allclose(out.target, arrived + [0, -0.02, 0, 0, 0, 0])


def test_zero_actions_hold_where_the_first_found_the_arm():
    shield = SafetyShield()
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    zero = np.zeros(6)
    shield.update_pose(pose, 0.0)
    shield.on_action(np.array([1, 0, 0, 0, 0, 0.0]), 0.0)  # target x + 0.02
    lagging = pose + [0.015, 0, -0.001, 0, 0, 0.002]  # the arm got most of the way there
    shield.update_pose(lagging, 0.1)
    first = shield.on_action(zero, 0.1).target
    np.testing.assert_allclose(first, lagging)  # the hold starts where the arm is
    # The arm keeps sagging and turning (within one step of the hold); re-anchored on the
    # measured pose, the hold would follow it down.
    for k in range(2, 30):
        shield.update_pose(lagging + k * np.array([0, 0, -0.0005, 0, 0, 0.002]), 0.1 * k)
        held = shield.on_action(zero, 0.1 * k)
        assert held.reason == "action"
        np.testing.assert_allclose(held.target, first)
    # A moving action ends the hold: the next run of zeros starts from the new measured pose.
    moved = shield.on_action(np.array([0, 1, 0, 0, 0, 0.0]), 3.0).target
    np.testing.assert_allclose(moved[1], 0.02)
    shield.update_pose(pose + [0, 0.02, 0, 0, 0, 0], 3.1)
    np.testing.assert_allclose(shield.on_action(zero, 3.1).target, pose + [0, 0.02, 0, 0, 0, 0])


def test_stop_latches_until_resume():
    shield = SafetyShield()
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    shield.update_pose(pose, 0.0)
    shield.on_action(np.zeros(6), 0.0)
    shield.stop()
    for t in np.arange(0.01, 0.3, 0.01):
        shield.update_pose(pose, t)
        out = shield.on_action(np.ones(6), t)
        assert out.reason == "stopped"
        np.testing.assert_allclose(out.target, pose)
        assert shield.on_tick(t).reason == "stopped"
    assert shield.home() is False  # homing cannot clear a stop
    assert shield.stopped
    shield.resume()
    out = shield.on_action(np.ones(6), 0.3)
    assert out.reason == "action" and out.target[0] > pose[0]


def test_a_latched_stop_holds_its_target_exactly_while_the_arm_lags_and_moves():
    """Under load the poses lag: the arm can be more than one step behind the last target
    when the stop comes. The stop must hold that target bit for bit, not re-limit it to each
    new pose (it then crept along with the arm: one /fosp/stop check in six, heavy load)."""
    shield = SafetyShield()
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    shield.update_pose(pose, 0.0)
    last = shield.on_action(np.array([0, 1, 0, 0, 0, 0]), 0.0).target  # one step to +y
    # The pose arrives late: the arm is still where it was, then overshoots backwards.
    shield.stop()
    sent = []
    for i, t in enumerate(np.arange(0.01, 0.5, 0.01)):
        lagging = pose + np.array([0, -0.002 * i, 0, 0, 0, 0])
        shield.update_pose(lagging, t)
        sent.append(shield.on_action(np.array([0, -1, 0, 0, 0, 0]), t).target)
        sent.append(shield.on_tick(t).target)
    assert all(np.array_equal(target, last) for target in sent), "the target moved"
    shield.resume()
    assert shield.on_action(np.array([0, -1, 0, 0, 0, 0]), 0.6).reason == "action"


def test_homing_walks_back_within_limits():
    shield = SafetyShield()
    home = np.array(shield.config.home_pose)
    pose = np.array([0.62, 0.12, 0.08, 0.2, -0.2, 0.5])
    assert shield.home()
    for step in range(100):
        shield.update_pose(pose, step * 0.1)
        out = shield.on_action(np.zeros(6), step * 0.1)  # actions are ignored while homing
        if out.reason == "hold":
            break
        assert out.reason == "homing"
        assert in_box(out.target) and within_step(out.target, pose)
        pose = out.target  # a perfect tracker
    else:
        raise AssertionError("homing never finished")
    np.testing.assert_allclose(pose, home, atol=shield.config.home_tolerance)
    assert not shield.homing


def test_executed_is_the_action_the_arm_carries_out():
    """A recorder stores ``executed``: replayed through ``next_target`` from the same pose it
    must give the target the shield sent, and zeros wherever the arm did not follow."""
    shield = SafetyShield(ShieldConfig(action_timeout=0.3))
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    shield.update_pose(pose, 0.0)
    out = shield.on_action(np.array([0.5, -3.0, 0, 0, 0, 0.2]), 0.0)
    np.testing.assert_allclose(out.executed, [0.5, -1.0, 0, 0, 0, 0.2])  # clipped as applied
    np.testing.assert_allclose(next_target(pose, out.executed, WS), out.target)
    assert shield.on_action(np.array([np.nan] * 6), 0.0).executed is None  # no step at all
    stale = shield.on_action(np.ones(6), 0.05, age=0.4)
    assert stale.reason == "stale action"
    np.testing.assert_array_equal(stale.executed, np.zeros(6))
    shield.stop()
    stopped = shield.on_action(np.ones(6), 0.1)
    assert stopped.reason == "stopped"
    np.testing.assert_array_equal(stopped.executed, np.zeros(6))
    assert shield.on_action(np.array([1.0, 2.0]), 0.1).executed is None  # bad, even stopped
    shield.resume()
    # Homing ignores the action; executed is the step it takes: 10 cm out in x, 0.3 rad in
    # yaw, so one full step back on both axes.
    far = np.array([0.6, 0.0, 0.065, 0, 0, 0.3])
    shield.update_pose(far, 0.2)
    assert shield.home()
    homing = shield.on_action(np.array([0, 1.0, 0, 0, 0, 0]), 0.2)
    assert homing.reason == "homing"
    np.testing.assert_allclose(homing.executed, [-1, 0, 0, 0, 0, -1])
    np.testing.assert_allclose(next_target(far, homing.executed, WS), homing.target)
    # Without a pose nothing moves the arm.
    lost = SafetyShield().on_action(np.ones(6), 0.0)
    assert lost.reason == "no pose"
    np.testing.assert_array_equal(lost.executed, np.zeros(6))


def test_a_robot_fault_targets_the_arms_own_pose_and_refuses_homing():
    """After a reflex the FR3 stands still: every target is where the arm is (an old target
    would pull the arm the moment error recovery clears the reflex), actions move nothing,
    homing is refused until the fault clears."""
    shield = SafetyShield()
    pose = np.array([0.5, 0.0, 0.07, 0, 0, 0])
    shield.update_pose(pose, 0.0)
    assert shield.home()
    shield.set_fault("reflex")
    assert not shield.homing and shield.home() is False
    for i, t in enumerate(np.arange(0.01, 0.3, 0.01)):
        moved = pose + np.array([0.001 * i, 0, 0, 0, 0, 0])  # pushed away by the contact
        shield.update_pose(moved, t)
        out = shield.on_action(np.ones(6), t)
        assert out.reason == "reflex"
        np.testing.assert_array_equal(out.target, moved)
        np.testing.assert_array_equal(out.executed, np.zeros(6))
        np.testing.assert_array_equal(shield.on_tick(t).target, moved)
    shield.set_fault(None)
    assert shield.home()
    out = shield.on_tick(0.31)
    assert out.reason == "homing" and within_step(out.target, moved)
