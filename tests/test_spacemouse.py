"""SpaceMouse teleop input: spacenavd wire protocol over real UNIX sockets, mapping, keyboard."""

from __future__ import annotations

import io
import os
import socket
import struct
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fosp_teleop.spacemouse import (
    DEV_RM,
    ButtonEvent,
    DeviceEvent,
    EventStream,
    KeyboardTeleop,
    MotionEvent,
    SpaceMouseTeleop,
    SpacenavdDisconnected,
    SpacenavdNotRunning,
    SpnavClient,
    TeleopCommand,
    TeleopMapping,
    default_socket_path,
    joy_buttons,
    pack_event,
    twist_to_raw,
    unpack_event,
)
from tests.spacenavd_standin import SpacenavdStandIn

INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be long.
    short = Path("/tmp") / f"spnav-{os.getpid()}-{tmp_path.name[-20:]}.sock"
    yield str(short)
    short.unlink(missing_ok=True)


def poll_until(client: SpnavClient, n: int, timeout: float = 2.0) -> list:
    events: list = []
    deadline = time.monotonic() + timeout
    while len(events) < n and time.monotonic() < deadline:
        events += client.poll()
        time.sleep(0.002)
    return events


# --------------------------------------------------------------------------------------------
# Wire format


def test_packed_events_have_the_documented_layout():
    motion = MotionEvent(1, -2, 3, -4, 5, -350, period=16)
    assert pack_event(motion) == struct.pack("=8i", 0, 1, -2, 3, -4, 5, -350, 16)
    assert pack_event(ButtonEvent(3, True)) == struct.pack("=8i", 1, 3, 0, 0, 0, 0, 0, 0)
    assert pack_event(ButtonEvent(3, False)) == struct.pack("=8i", 2, 3, 0, 0, 0, 0, 0, 0)
    assert len(pack_event(motion)) == 32
    if sys.byteorder == "little":  # x86-64, arm64: spacenavd writes native ints
        assert pack_event(motion)[:8] == bytes([0, 0, 0, 0, 1, 0, 0, 0])
        assert pack_event(motion)[24:28] == (-350).to_bytes(4, "little", signed=True)


def test_unpack_inverts_pack_and_skips_other_event_types():
    for event in (MotionEvent(INT32_MIN, INT32_MAX, 0, 1, -1, 7, 3), ButtonEvent(11, True),
                  ButtonEvent(0, False)):
        assert unpack_event(pack_event(event)) == event
    assert unpack_event(struct.pack("=8i", 3, 1, 0, 0x200, 0x256F, 0xC635, 0, 0)) == \
        DeviceEvent(op=DEV_RM, device=0)
    assert unpack_event(struct.pack("=8i", 4, 1, 0, 0, 0, 0, 0, 0)) is None  # config changed


def test_event_stream_reassembles_any_chunking_and_skips_tagged_packets():
    events = [MotionEvent(10, 20, 30, 40, 50, 60, 8), ButtonEvent(1, True), ButtonEvent(1, False)]
    handshake_reply = struct.pack("=i", 0x7FAA5501)
    response = struct.pack("=8i", 0x7FAA1001, 0, 0, 0, 0, 0, 0, 0)  # a v1 request response
    device = struct.pack("=8i", 3, 0, 0, 0x200, 0x256F, 0xC635, 0, 0)  # v1 device event
    # An event the daemon sent before answering the handshake must survive.
    wire = pack_event(events[0]) + handshake_reply + response + pack_event(events[1]) + device
    wire += pack_event(events[2])
    for chunk in (1, 3, 5, 32, len(wire)):
        stream = EventStream()
        got = []
        for i in range(0, len(wire), chunk):
            got += stream.feed(wire[i : i + chunk])
        assert got == [*events[:2], DeviceEvent(op=0, device=0), events[2]]
        assert stream.protocol_reply == 1
        assert stream.skipped == 1


# --------------------------------------------------------------------------------------------
# Client <-> stand-in daemon over a real socket


def test_stand_in_sends_the_documented_bytes_to_a_raw_socket(sock_path):
    with SpacenavdStandIn(sock_path) as daemon:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(2.0)
        raw.connect(sock_path)
        raw.sendall(struct.pack("=i", 0x7FAA5501))  # what libspnav's spnav_open sends
        assert raw.recv(4) == struct.pack("=i", 0x7FAA5501)
        daemon.send(MotionEvent(-5, 6, -7, 8, -9, 10, period=12))
        daemon.send(ButtonEvent(2, True))
        expected = struct.pack("=8i", 0, -5, 6, -7, 8, -9, 10, 12)
        expected += struct.pack("=8i", 1, 2, 0, 0, 0, 0, 0, 0)
        got = b""
        while len(got) < len(expected):
            got += raw.recv(64)
        assert got == expected
        raw.close()


def test_stand_in_applies_v0_sensitivity_like_the_daemon(sock_path):
    with SpacenavdStandIn(sock_path) as daemon:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.settimeout(2.0)
        raw.connect(sock_path)
        raw.sendall(struct.pack("=f", 0.5))  # protocol v0: a bare float is the sensitivity
        daemon.wait_for(lambda cs: len(cs) == 1 and cs[0].sensitivity == 0.5)
        daemon.send(MotionEvent(100, -101, 3, 0, 350, -350, period=5))
        # (int)((float)v * 0.5): C truncates towards zero.
        got = b""
        while len(got) < 32:
            got += raw.recv(32)
        assert got == struct.pack("=8i", 0, 50, -50, 1, 0, 175, -175, 5)
        raw.close()


def test_motion_and_button_events_round_trip_through_the_client(sock_path):
    script = [
        MotionEvent(0, 0, -350, 0, 0, 0, period=0),
        MotionEvent(INT32_MAX, INT32_MIN, 1, -1, 349, -349, period=16),
        ButtonEvent(0, True),
        ButtonEvent(0, False),
        ButtonEvent(31, True),
        MotionEvent(0, 0, 0, 0, 0, 0, period=8),
    ]
    with SpacenavdStandIn(sock_path) as daemon, SpnavClient(sock_path) as client:
        assert client.protocol == 1
        (server_side,) = daemon.wait_for_clients(1)
        assert server_side.words == [0x7FAA5501]
        daemon.play(script)
        assert poll_until(client, len(script)) == script
        assert client.poll() == []  # non-blocking, nothing left


def test_old_daemon_without_handshake_falls_back_to_protocol_0(sock_path):
    with SpacenavdStandIn(sock_path, protocol=0) as daemon, SpnavClient(sock_path) as client:
        assert client.protocol == 0
        # Like libspnav: the handshake word, then sensitivity 1.0 to undo the NaN it became.
        (server_side,) = daemon.wait_for(lambda cs: len(cs) == 1 and len(cs[0].words) == 2)
        assert server_side.words == [0x7FAA5501, struct.unpack("=i", struct.pack("=f", 1.0))[0]]
        assert server_side.sensitivity == 1.0
        daemon.send(MotionEvent(1, 2, 3, 4, 5, 6, 7))
        assert poll_until(client, 1) == [MotionEvent(1, 2, 3, 4, 5, 6, 7)]


def test_client_without_handshake_speaks_plain_v0(sock_path):
    with SpacenavdStandIn(sock_path) as daemon:
        with SpnavClient(sock_path, handshake=False) as client:
            daemon.wait_for_clients(1)
            daemon.send(ButtonEvent(4, True))
            assert poll_until(client, 1) == [ButtonEvent(4, True)]
            assert client.protocol == 0
            assert daemon.clients[0].words == []  # nothing sent: no handshake, no sensitivity


def test_daemon_going_away_delivers_pending_events_then_raises(sock_path):
    with SpacenavdStandIn(sock_path) as daemon, SpnavClient(sock_path) as client:
        daemon.wait_for_clients(1)
        daemon.send(ButtonEvent(1, True))
        daemon.disconnect_all()
        daemon.wait_for(lambda cs: not cs)
        assert poll_until(client, 1) == [ButtonEvent(1, True)]
        with pytest.raises(SpacenavdDisconnected):
            client.poll()


def test_missing_socket_gives_the_clear_error(sock_path):
    with pytest.raises(SpacenavdNotRunning) as info:
        SpnavClient(sock_path)
    message = str(info.value)
    assert sock_path in message
    assert "is spacenavd running? sudo systemctl start spacenavd" in message


def test_stale_socket_file_gives_the_clear_error(sock_path):
    # A daemon that crashed leaves its socket file behind; connecting is refused.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()
    with pytest.raises(SpacenavdNotRunning, match="sudo systemctl start spacenavd"):
        SpnavClient(sock_path)


def test_socket_path_follows_spnav_socket_like_libspnav(monkeypatch, sock_path):
    monkeypatch.setenv("SPNAV_SOCKET", sock_path)
    assert default_socket_path() == sock_path
    with SpacenavdStandIn(sock_path), SpnavClient() as client:
        assert client.path == sock_path
    monkeypatch.delenv("SPNAV_SOCKET")
    if not Path("/etc/spnavrc").exists():
        assert default_socket_path() == "/var/run/spnav.sock"


def test_teleop_holds_the_last_deflection_between_events(sock_path):
    mapping = TeleopMapping(deadband=0.0)
    with SpacenavdStandIn(sock_path) as daemon, SpnavClient(sock_path) as client:
        teleop = SpaceMouseTeleop(client, mapping, hold_timeout=10.0)
        daemon.wait_for_clients(1)
        daemon.play([MotionEvent(0, 0, 175, 0, 0, 0), ButtonEvent(0, True), ButtonEvent(0, False),
                     ButtonEvent(1, True)])
        poll_until_commands = []
        deadline = time.monotonic() + 2.0
        while len(poll_until_commands) < 2 and time.monotonic() < deadline:
            step = teleop.step()
            poll_until_commands += step.commands
        assert poll_until_commands == [TeleopCommand.TOGGLE_RECORDING,
                                       TeleopCommand.MARK_VIOLATION]
        # No new event: the cap is still pushed away, half way -> -x at half speed.
        np.testing.assert_allclose(teleop.step().action, [-0.5, 0, 0, 0, 0, 0])
        daemon.send(MotionEvent(0, 0, 0, 0, 0, 0))
        deadline = time.monotonic() + 2.0
        while np.any(teleop.step().action) and time.monotonic() < deadline:
            time.sleep(0.002)
        np.testing.assert_array_equal(teleop.step().action, np.zeros(6))


def deflected(sock_path, protocol: int, hold_timeout: float = 10.0):
    """A stand-in daemon, a client and a teleop whose cap is held at full deflection."""
    daemon = SpacenavdStandIn(sock_path, protocol=protocol)
    client = SpnavClient(sock_path)
    teleop = SpaceMouseTeleop(client, TeleopMapping(deadband=0.0), hold_timeout=hold_timeout)
    daemon.wait_for_clients(1)
    daemon.send(MotionEvent(350, 0, 0, 0, 0, 0))
    deadline = time.monotonic() + 2.0
    while not np.any(teleop.step().action) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert np.any(teleop.step().action)
    return daemon, client, teleop


def step_until_still(teleop: SpaceMouseTeleop, timeout: float = 2.0) -> float:
    """Steps until the action is zero; the seconds it took."""
    start = time.monotonic()
    while np.any(teleop.step().action) and time.monotonic() < start + timeout:
        time.sleep(0.002)
    assert not np.any(teleop.step().action), "the action never went back to zero"
    return time.monotonic() - start


def test_a_removed_device_stops_the_action_though_no_zero_motion_comes(sock_path):
    """spacenavd (protocol v1) sends a device-removed event on unplug or a dropped wireless
    link, and no zero-motion event: the last deflection must not go on."""
    daemon, client, teleop = deflected(sock_path, protocol=1)
    with daemon, client:
        assert client.protocol == 1
        daemon.send(DeviceEvent(op=DEV_RM, device=0))
        step_until_still(teleop)
        # A device added back (op 0) does not restart the motion either.
        daemon.send(DeviceEvent(op=0, device=0))
        time.sleep(0.05)
        assert not np.any(teleop.step().action)


def test_a_lost_daemon_connection_stops_the_action(sock_path):
    daemon, client, teleop = deflected(sock_path, protocol=1)
    with daemon, client:
        daemon.disconnect_all()
        step_until_still(teleop)
        assert "closed the connection" in teleop.lost


def test_an_old_daemon_held_deflection_times_out(sock_path):
    """A v0 daemon sends no device events: with no motion event for hold_timeout the action
    goes back to zero, however long the last deflection was held."""
    daemon, client, teleop = deflected(sock_path, protocol=0, hold_timeout=0.3)
    with daemon, client:
        assert client.protocol == 0
        took = step_until_still(teleop, timeout=2.0)
        assert took <= 0.3 + 0.2, took
        daemon.send(MotionEvent(350, 0, 0, 0, 0, 0))  # a fresh reading moves it again
        deadline = time.monotonic() + 2.0
        while not np.any(teleop.step().action) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert np.any(teleop.step().action)


def test_device_event_wire_format_round_trips():
    event = DeviceEvent(op=DEV_RM, device=3)
    packet = pack_event(event)
    assert struct.unpack("=8i", packet)[:3] == (3, 1, 3)  # UEV_DEV, DEV_RM, id
    assert unpack_event(packet) == event and event.removed


# --------------------------------------------------------------------------------------------
# Mapping


def test_default_mapping_hand_computed():
    mapping = TeleopMapping()  # full scale 350, deadband 0.1, operator facing the robot
    raw = [70, 175, -350, 0, -105, 17]  # x, y, z, rx, ry, rz
    # pose x = -z/350 = 1 -> 1; y = x/350 = 0.2 -> (0.2-0.1)/0.9; z = y/350 = 0.5 -> 0.4/0.9;
    # roll = -rz/350 = -0.049 -> 0 (deadband); pitch = rx = 0; yaw = ry/350 = -0.3 -> -0.2/0.9
    np.testing.assert_allclose(mapping.to_action(raw), [1, 1 / 9, 4 / 9, 0, 0, -2 / 9])
    scaled = TeleopMapping(scale=(0.5, 1, 1, 1, 1, 2))
    np.testing.assert_allclose(scaled.to_action(raw), [0.5, 1 / 9, 4 / 9, 0, 0, -4 / 9])


def test_mapping_without_deadband_is_signed_permutation():
    mapping = TeleopMapping(deadband=0.0)
    raw = np.array([35.0, -70.0, 105.0, -140.0, 175.0, -210.0])
    expected = np.array([-105.0, 35.0, -70.0, 210.0, -140.0, 175.0]) / 350.0
    np.testing.assert_allclose(mapping.to_action(raw), expected)
    identity = TeleopMapping(deadband=0.0, axes=(0, 1, 2, 3, 4, 5), signs=(1,) * 6,
                             full_scale=100.0)
    np.testing.assert_allclose(identity.to_action([10, -20, 30, -40, 50, -60]),
                               [0.1, -0.2, 0.3, -0.4, 0.5, -0.6])


def test_deadband_edge_is_continuous():
    mapping = TeleopMapping(deadband=0.2, axes=(0, 1, 2, 3, 4, 5), signs=(1,) * 6,
                            full_scale=100.0)
    below, edge, above = (mapping.to_action([v, 0, 0, 0, 0, 0])[0] for v in (19.9, 20.0, 20.1))
    assert below == 0.0 and edge == 0.0
    assert 0 < above < 0.002


def test_mapping_rejects_bad_configuration():
    with pytest.raises(ValueError, match="6 entries"):
        TeleopMapping(scale=(1, 1, 1))
    with pytest.raises(ValueError, match="axes"):
        TeleopMapping(axes=(0, 1, 2, 3, 4, 6))
    with pytest.raises(ValueError, match="signs"):
        TeleopMapping(signs=(1, 1, 1, 1, 1, 0.5))
    with pytest.raises(ValueError, match="deadband"):
        TeleopMapping(deadband=1.0)
    with pytest.raises(ValueError, match="full_scale"):
        TeleopMapping(full_scale=0)
    with pytest.raises(ValueError, match="differ"):
        TeleopMapping(record_button=1, violation_button=1)
    with pytest.raises(ValueError, match="6 raw"):
        TeleopMapping().to_action([1, 2, 3])


def test_buttons_are_configurable():
    default = TeleopMapping()
    assert default.command(ButtonEvent(0, True)) is TeleopCommand.TOGGLE_RECORDING
    assert default.command(ButtonEvent(1, True)) is TeleopCommand.MARK_VIOLATION
    assert default.command(ButtonEvent(0, False)) is None
    assert default.command(ButtonEvent(7, True)) is None
    swapped = TeleopMapping(record_button=1, violation_button=0)
    assert swapped.command(ButtonEvent(1, True)) is TeleopCommand.TOGGLE_RECORDING


raw_value = st.one_of(
    st.integers(INT32_MIN, INT32_MAX),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    raw=st.lists(raw_value, min_size=6, max_size=6),
    deadband=st.floats(0.0, 0.99),
    scale=st.lists(st.floats(-1e6, 1e6), min_size=6, max_size=6),
    full_scale=st.floats(1e-3, 1e6),
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=6, max_size=6),
)
def test_to_action_always_in_unit_box(raw, deadband, scale, full_scale, signs):
    mapping = TeleopMapping(deadband=deadband, scale=tuple(scale), full_scale=full_scale,
                            signs=tuple(signs))
    action = mapping.to_action(raw)
    assert action.shape == (6,)
    assert np.all(np.isfinite(action))
    assert np.all(np.abs(action) <= 1.0)


# --------------------------------------------------------------------------------------------
# ROS spacenav node adapters


def node_twist(raw, full_scale=512.0):
    """What joystick_drivers' spacenav node publishes for a raw event (scales left at 1)."""
    x, y, z, rx, ry, rz = raw
    return (z / full_scale, -x / full_scale, y / full_scale), (
        rz / full_scale, -rx / full_scale, ry / full_scale)


def test_twist_adapter_recovers_raw_device_values():
    raw = [12.0, -34.0, 56.0, -78.0, 90.0, -123.0]
    linear, angular = node_twist(raw)
    np.testing.assert_allclose(twist_to_raw(linear, angular), raw)
    linear, angular = node_twist(raw, full_scale=350.0)
    np.testing.assert_allclose(twist_to_raw(linear, angular, node_full_scale=350.0), raw)


def test_twist_through_mapping_gives_same_action_as_socket_path():
    mapping = TeleopMapping()
    raw = [100.0, -200.0, 300.0, 0.0, 50.0, -340.0]
    linear, angular = node_twist(raw)
    np.testing.assert_allclose(mapping.to_action(twist_to_raw(linear, angular)),
                               mapping.to_action(raw))
    # behind_robot is the node's own twist frame: the action is the twist rescaled.
    behind = TeleopMapping.behind_robot(deadband=0.0, full_scale=512.0)
    np.testing.assert_allclose(behind.to_action(twist_to_raw(linear, angular)),
                               [*linear, *angular])


def test_joy_buttons_become_press_and_release_events():
    assert joy_buttons([0, 1], [0, 0]) == [ButtonEvent(1, True)]
    assert joy_buttons([1, 0], [0, 1]) == [ButtonEvent(0, True), ButtonEvent(1, False)]
    assert joy_buttons([0], [1, 1]) == [ButtonEvent(0, False), ButtonEvent(1, False)]
    assert joy_buttons([1, 1], [1, 1]) == []
    mapping = TeleopMapping()
    commands = [mapping.command(e) for e in joy_buttons([1, 1], [])]
    assert commands == [TeleopCommand.TOGGLE_RECORDING, TeleopCommand.MARK_VIOLATION]


# --------------------------------------------------------------------------------------------
# Keyboard


def test_keyboard_mapping():
    keys = KeyboardTeleop(io.StringIO())
    np.testing.assert_array_equal(keys.keys_to_step("w").action, [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(keys.keys_to_step("s").action, [-1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(keys.keys_to_step("ad").action, np.zeros(6))
    np.testing.assert_array_equal(keys.keys_to_step("a").action, [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(keys.keys_to_step("rF").action, np.zeros(6))
    np.testing.assert_array_equal(keys.keys_to_step("fq").action, [0, 0, -1, 0, 0, 1])
    np.testing.assert_array_equal(keys.keys_to_step("ee").action, [0, 0, 0, 0, 0, -1])
    np.testing.assert_array_equal(keys.keys_to_step("x?\n").action, np.zeros(6))
    step = keys.keys_to_step(" wv")
    assert step.commands == [TeleopCommand.TOGGLE_RECORDING, TeleopCommand.MARK_VIOLATION]
    half = KeyboardTeleop(io.StringIO(), gain=0.5)
    np.testing.assert_array_equal(half.keys_to_step("w").action, [0.5, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(half.keys_to_step("www").action, [1, 0, 0, 0, 0, 0])


def test_keyboard_reads_a_pipe_without_blocking():
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb", buffering=0) as stream:
        keys = KeyboardTeleop(stream)
        np.testing.assert_array_equal(keys.step().action, np.zeros(6))  # nothing typed yet
        os.write(write_fd, b"dd ")
        step = keys.step()
        np.testing.assert_array_equal(step.action, [0, -1, 0, 0, 0, 0])
        assert step.commands == [TeleopCommand.TOGGLE_RECORDING]
        assert keys.step().commands == []  # consumed
        with keys.cbreak():  # a pipe is no terminal: nothing to switch
            pass
    os.close(write_fd)


def step_until_moving(keys: KeyboardTeleop, timeout: float = 2.0) -> np.ndarray:
    # A pty hands written bytes to the reader asynchronously: poll for a while.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        action = keys.step().action
        if np.any(action):
            return action
        time.sleep(0.005)
    return np.zeros(6)


def test_keyboard_cbreak_delivers_single_keys_from_a_terminal():
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "rb", buffering=0, closefd=False) as tty_stream:
            keys = KeyboardTeleop(tty_stream)
            before = termios.tcgetattr(slave)
            os.write(master, b"w")
            time.sleep(0.05)
            # Canonical mode: the key waits for Enter...
            np.testing.assert_array_equal(keys.step().action, np.zeros(6))
            os.write(master, b"\n")
            np.testing.assert_array_equal(step_until_moving(keys), [1, 0, 0, 0, 0, 0])
            with keys.cbreak():
                # ...in cbreak mode it arrives alone.
                os.write(master, b"r")
                np.testing.assert_array_equal(step_until_moving(keys), [0, 0, 1, 0, 0, 0])
            assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
