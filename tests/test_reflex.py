"""Recovery after a reflex: the decisions of fosp_ros.reflex.ReflexWatch, step by step.
(The same logic against a stand-in robot over DDS: tests/test_ros_hardware.py.)"""

import pytest

from fosp_ros.reflex import HOME, RECOVER, ReflexWatch, RobotMode, interface_type


def test_a_reflex_is_recovered_before_homing():
    watch = ReflexWatch()
    assert watch.on_mode(RobotMode.MOVE) is None
    assert watch.before_home() == HOME and watch.fault() is None
    assert "reflex" in watch.on_mode(RobotMode.REFLEX)
    assert watch.on_mode(RobotMode.REFLEX) is None  # said once, not at 1 kHz
    assert watch.fault() == "reflex" and watch.reflexes == 1
    assert watch.before_home() == RECOVER
    attempt = watch.recovery_started(now=0.0)
    assert watch.before_home().startswith("refused: error recovery is under way")
    # The robot passes through its own recovery mode: that is not "recovered elsewhere".
    assert watch.on_mode(RobotMode.AUTOMATIC_ERROR_RECOVERY) is None
    assert watch.on_mode(RobotMode.MOVE) is None and watch.fault() == "reflex"
    assert watch.recovery_done(attempt, True, "goal status 4") == "error recovery succeeded: homing"
    assert watch.fault() is None and watch.before_home() == HOME


def test_a_failed_recovery_is_tried_again_by_the_next_reset():
    watch = ReflexWatch()
    watch.on_mode(RobotMode.REFLEX)
    attempt = watch.recovery_started(now=0.0)
    assert "failed (goal status 6)" in watch.recovery_done(attempt, False, "goal status 6")
    assert watch.fault() == "reflex" and watch.before_home() == RECOVER


def test_the_operator_confirms_before_recovery_when_configured():
    watch = ReflexWatch(confirm=True)
    assert watch.confirm_recovery() == (False, "no reflex to recover from")
    assert "/fosp/recover" in watch.on_mode(RobotMode.REFLEX)
    assert "call /fosp/recover" in watch.before_home()
    assert watch.confirm_recovery()[0]
    assert watch.before_home() == RECOVER
    watch.recovery_done(watch.recovery_started(0.0), True, "")
    # The next reflex needs the operator again.
    watch.on_mode(RobotMode.MOVE)
    watch.on_mode(RobotMode.REFLEX)
    assert "call /fosp/recover" in watch.before_home()


def test_a_result_after_its_timeout_is_ignored():
    watch = ReflexWatch(timeout=10.0)
    watch.on_mode(RobotMode.REFLEX)
    first = watch.recovery_started(now=0.0)
    assert not watch.timed_out(9.0) and watch.timed_out(10.5)
    assert "no result" in watch.recovery_done(first, False, "no result within 10 s")
    second = watch.recovery_started(now=11.0)
    assert watch.recovery_done(first, True, "late") is None  # the first one's late answer
    assert watch.fault() == "reflex"
    assert watch.recovery_done(second, True, "") is not None and watch.fault() is None


def test_the_user_stop_holds_and_refuses_resets_until_released():
    watch = ReflexWatch()
    assert "user stop" in watch.on_mode(RobotMode.USER_STOPPED)
    assert watch.fault() == "user stop"
    assert "release it" in watch.before_home()
    watch.on_mode(RobotMode.IDLE)
    assert watch.fault() is None and watch.before_home() == HOME


def test_a_reflex_cleared_elsewhere_ends_the_fault():
    watch = ReflexWatch()
    watch.on_mode(RobotMode.REFLEX)
    assert "recovered elsewhere" in watch.on_mode(RobotMode.IDLE)
    assert watch.fault() is None and watch.before_home() == HOME


def test_an_unknown_mode_counts_as_other():
    watch = ReflexWatch()
    watch.on_mode(99)
    assert watch.mode == RobotMode.OTHER and watch.before_home() == HOME


def test_interface_types_are_imported_by_name_only_where_installed():
    from std_msgs.msg import UInt8

    assert interface_type("std_msgs/msg/UInt8") is UInt8
    assert interface_type("no_such_msgs/msg/Thing") is None  # franka_msgs on a plain machine
    with pytest.raises(ValueError, match="has no msg Nope"):
        interface_type("std_msgs/msg/Nope")
    with pytest.raises(ValueError, match="not an interface name"):
        interface_type("std_msgs.UInt8")
