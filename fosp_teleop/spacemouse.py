"""SpaceMouse (and keyboard) teleoperation input, turned into the policy's normalised action.

A demonstration and a policy rollout must mean the same thing, so every input device here ends
in ``TeleopMapping.to_action``: a pose change in [-1, 1]^6, the exact action the policy sends
and that ``fosp_core.robot.geometry.next_target`` and the safety shield bound. Nothing in this file
imports rclpy; the ROS node wraps these pieces.

Input paths, all producing ``MotionEvent`` / ``ButtonEvent`` in spacenavd's raw units:

* ``SpnavClient``: the spacenavd daemon's UNIX socket (what libspnav does, without libspnav).
* ``twist_to_raw`` / ``joy_buttons``: messages of the ROS ``spacenav`` node as plain numbers.
* ``PySpaceMouseReader``: direct HID access through the optional ``pyspacemouse`` package.
* ``KeyboardTeleop``: keys, for people without the device (builds the action directly).

spacenavd wire protocol (AF_UNIX stream socket, default ``/var/run/spnav.sock``)
-----------------------------------------------------------------------------
Source: FreeSpacenav/libspnav ``src/spnav.c`` (``spnav_open``, ``read_event``, ``proc_event``)
and ``src/proto.h``; FreeSpacenav/spacenavd ``src/proto_unix.c`` (``send_uevent``,
``handle_uevents``) and ``src/client.c`` (defaults of a new client).

* Daemon -> client events are fixed 32-byte packets of eight native-endian int32
  (``struct`` format ``=8i``): ``[type, d0 .. d6]``.

  - motion: ``[0, x, y, z, rx, ry, rz, period]``; the axes are already scaled by the client's
    sensitivity and truncated to int; ``period`` is the milliseconds since the previous motion
    event. A SpaceMouse reads about +-350 at full deflection.
  - button: ``[1, bnum, 0...]`` on press, ``[2, bnum, 0...]`` on release.
  - protocol v1 adds ``[3, op, id, devtype, usb_vendor, usb_product, 0]`` (device added,
    op 0, or removed, op 1: ``send_uevent`` and ``proto.h``), ``4`` (config changed), ``5``/``6``
    (raw axis/button). Device events are read (``DeviceEvent``); the others are skipped.
  - When a device is unplugged or its wireless link drops, the daemon sends a device-removed
    event and no zero-motion event; a v0 daemon sends neither. ``SpaceMouseTeleop`` therefore
    zeroes the action on a removal, on a lost socket, and when no motion event came for
    ``hold_timeout`` seconds.

* Handshake (what libspnav >= 1.0 ``spnav_open`` sends): right after connecting the client
  writes ONE int32 ``REQ_TAG | REQ_CHANGE_PROTO | version`` = ``0x7faa5501`` and waits 300 ms for
  a 4-byte reply carrying the agreed version in its low byte. A daemon older than protocol v1
  never replies and takes the 4 bytes as a (NaN) float sensitivity, so on timeout the client
  resets sensitivity by writing the float32 ``1.0`` and stays on protocol v0. We do the same.
* In v1, requests and responses are 32-byte ``{int32 type; int32 data[7]}`` packets tagged
  with ``REQ_TAG`` (0x7faa0000) in ``type``. We send none after the handshake, but a response
  packet in the stream is recognised by its tag and skipped.

So we *speak protocol v1 when the daemon offers it and v0 otherwise*; the event stream is the
same in both. Unlike libspnav we parse the stream by its tags, so an event the daemon sends
before the handshake reply (it may: a new client gets events at once) is kept, not misread.

Device axes (spacenavd's default config, i.e. no ``swap-yz``/``invert-*`` in /etc/spnavrc):
x to the operator's right, y up, z away from the operator (a left-handed frame, see libspnav
``spnav_posrot_moveobj`` which negates z). The ROS ``spacenav`` node turns this into its
right-handed (forward, left, up) frame as ``(z, -x, y)`` and rotations ``(rz, -rx, ry)``.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

SOCKET_PATH = "/var/run/spnav.sock"
SPNAVRC = "/etc/spnavrc"

EVENT_STRUCT = struct.Struct("=8i")
EVENT_SIZE = EVENT_STRUCT.size  # 32
WORD_STRUCT = struct.Struct("=i")
FLOAT_STRUCT = struct.Struct("=f")

UEV_MOTION, UEV_PRESS, UEV_RELEASE, UEV_DEV, UEV_CFG, UEV_RAWAXIS, UEV_RAWBUTTON = range(7)
DEV_ADD, DEV_RM = range(2)  # a device event's op (spacenavd proto.h)
# s without a motion event after which a held deflection no longer moves the arm.
HOLD_TIMEOUT_S = 0.5
REQ_TAG = 0x7FAA0000
REQ_CHANGE_PROTO = 0x5500
MAX_PROTO_VER = 1
# libspnav waits this long for the handshake reply before assuming an old daemon.
HANDSHAKE_TIMEOUT_S = 0.3

NOT_RUNNING_HINT = "is spacenavd running? sudo systemctl start spacenavd"


# --------------------------------------------------------------------------------------------
# Events and their wire format


@dataclass(frozen=True)
class MotionEvent:
    """Cap deflection in spacenavd's raw units (device frame, see the module docstring)."""

    x: int
    y: int
    z: int
    rx: int
    ry: int
    rz: int
    period: int = 0  # ms since the previous motion event

    @property
    def raw(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z, self.rx, self.ry, self.rz], dtype=float)


@dataclass(frozen=True)
class ButtonEvent:
    button: int
    pressed: bool


@dataclass(frozen=True)
class DeviceEvent:
    """Protocol v1: a device was added or removed (unplugged, or its wireless link lost)."""

    op: int
    device: int = 0

    @property
    def removed(self) -> bool:
        return self.op == DEV_RM


Event = MotionEvent | ButtonEvent | DeviceEvent


def pack_event(event: Event) -> bytes:
    """The 32 bytes spacenavd writes for ``event``."""
    if isinstance(event, MotionEvent):
        return EVENT_STRUCT.pack(UEV_MOTION, event.x, event.y, event.z, event.rx, event.ry,
                                 event.rz, event.period)
    if isinstance(event, DeviceEvent):
        return EVENT_STRUCT.pack(UEV_DEV, event.op, event.device, 0, 0, 0, 0, 0)
    kind = UEV_PRESS if event.pressed else UEV_RELEASE
    return EVENT_STRUCT.pack(kind, event.button, 0, 0, 0, 0, 0, 0)


def unpack_event(packet: bytes) -> Event | None:
    """Inverse of ``pack_event``; ``None`` for event types this module does not use."""
    kind, *data = EVENT_STRUCT.unpack(packet)
    if kind == UEV_MOTION:
        return MotionEvent(*data[:6], period=data[6])
    if kind in (UEV_PRESS, UEV_RELEASE):
        return ButtonEvent(button=data[0], pressed=kind == UEV_PRESS)
    if kind == UEV_DEV:
        return DeviceEvent(op=data[0], device=data[1])
    return None


def handshake_word(version: int = MAX_PROTO_VER) -> int:
    return REQ_TAG | REQ_CHANGE_PROTO | version


def _is_handshake_reply(word: int) -> bool:
    return (word & 0xFFFFFF00) == (REQ_TAG | REQ_CHANGE_PROTO)


def _is_response(word: int) -> bool:
    return (word & 0xFFFF0000) == REQ_TAG


class EventStream:
    """Splits the daemon's byte stream into events, whatever the recv() chunking.

    Packets are told apart by their first int32: event types are small (0..6), while the
    handshake reply (4 bytes) and request responses (32 bytes) carry ``REQ_TAG``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.protocol_reply: int | None = None
        self.skipped = 0  # responses and event types we do not use

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while len(self._buf) >= WORD_STRUCT.size:
            (word,) = WORD_STRUCT.unpack_from(self._buf)
            if _is_handshake_reply(word):
                self.protocol_reply = word & 0xFF
                del self._buf[: WORD_STRUCT.size]
                continue
            if len(self._buf) < EVENT_SIZE:
                break
            packet = bytes(self._buf[:EVENT_SIZE])
            del self._buf[:EVENT_SIZE]
            event = None if _is_response(word) else unpack_event(packet)
            if event is None:
                self.skipped += 1
            else:
                events.append(event)
        return events


# --------------------------------------------------------------------------------------------
# Client


class SpacenavdNotRunning(ConnectionError):
    """No daemon answers on the socket path."""


class SpacenavdDisconnected(ConnectionError):
    """The daemon closed the connection (stopped or restarted)."""


def default_socket_path() -> str:
    """Socket path the way libspnav picks it: $SPNAV_SOCKET, ``socket =`` in /etc/spnavrc,
    then /var/run/spnav.sock."""
    env = os.environ.get("SPNAV_SOCKET")
    if env:
        return env
    with contextlib.suppress(OSError):
        for line in Path(SPNAVRC).read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "socket" and value.strip():
                return value.strip()
    return SOCKET_PATH


class SpnavClient:
    """Non-blocking client of the spacenavd UNIX socket.

    >>> with SpnavClient() as client:          # doctest: +SKIP
    ...     for event in client.poll(): ...
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, handshake: bool = True,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
        self.path = str(path) if path is not None else default_socket_path()
        self.protocol = 0
        self._stream = EventStream()
        self._pending: list[Event] = []
        self._eof = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            self._sock.close()
            # A stale socket file left by a crashed daemon refuses; a missing one is not found.
            raise SpacenavdNotRunning(
                f"cannot connect to spacenavd at {self.path} ({err.strerror}); "
                f"{NOT_RUNNING_HINT}"
            ) from err
        except OSError:
            self._sock.close()
            raise
        try:
            if handshake:
                self._handshake(handshake_timeout)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def _handshake(self, timeout: float) -> None:
        self._sock.sendall(WORD_STRUCT.pack(handshake_word()))
        deadline = time.monotonic() + timeout
        while self._stream.protocol_reply is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._sock], [], [], remaining)[0]:
                break
            data = self._sock.recv(4096)
            if not data:
                self._eof = True
                break
            self._pending += self._stream.feed(data)
        if self._stream.protocol_reply is None and not self._eof:
            # Old daemon: it stored our request as a NaN sensitivity; put 1.0 back (libspnav).
            self._sock.sendall(FLOAT_STRUCT.pack(1.0))
        elif self._stream.protocol_reply is not None:
            self.protocol = min(self._stream.protocol_reply, MAX_PROTO_VER)

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def skipped(self) -> int:
        """Packets received and ignored (v1 device/config events, request responses)."""
        return self._stream.skipped

    def poll(self) -> list[Event]:
        """Every event received since the last call; never blocks.

        Raises ``SpacenavdDisconnected`` once the daemon has closed the connection and all
        events sent before that have been returned.
        """
        events, self._pending = self._pending, []
        while not self._eof:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self._eof = True
                break
            events += self._stream.feed(data)
        if self._eof and not events:
            raise SpacenavdDisconnected(f"spacenavd at {self.path} closed the connection")
        return events

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SpnavClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Raw device values -> normalised action


class TeleopCommand(str, enum.Enum):
    TOGGLE_RECORDING = "toggle_recording"
    MARK_VIOLATION = "mark_violation"


# Device axis indices in a MotionEvent.raw vector.
DX, DY, DZ, DRX, DRY, DRZ = range(6)


@dataclass(frozen=True)
class TeleopMapping:
    """Device axes -> pose-change axes ``[x, y, z, roll, pitch, yaw]`` of the robot base frame.

    ``action[i] = scale[i] * shaped(sign[i] * raw[axis[i]] / full_scale)``, where ``shaped``
    zeroes ``|v| <= deadband`` and rescales the rest linearly so the output rises from 0 at the
    deadband edge to 1 at full deflection (no jump). The result is clipped to [-1, 1].

    Default: the SpaceMouse on a table *facing the robot* (the operator stands across the
    table and looks at the arm, i.e. along the base's -x). Then what the operator sees moves
    the way the hand pushes: push the cap away (device +z) and the gripper moves away from the
    operator, towards the robot base (-x); push right (device +x) -> base +y (the operator's
    right is the robot's left); lift (device +y) -> +z. Rotations follow the same frame:
    twisting the cap about its vertical (ry) -> yaw, tilting about the push-away axis
    (rz) -> -roll, tilting about the right axis (rx) -> +pitch. Use ``behind_robot()`` when
    the operator stands behind the arm looking along +x, which is the ROS ``spacenav`` node's
    frame.
    """

    full_scale: float = 350.0
    deadband: float = 0.1
    scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    axes: tuple[int, ...] = (DZ, DX, DY, DRZ, DRX, DRY)
    signs: tuple[float, ...] = (-1.0, 1.0, 1.0, -1.0, 1.0, 1.0)
    record_button: int = 0
    violation_button: int = 1

    def __post_init__(self) -> None:
        for name in ("scale", "axes", "signs"):
            if len(getattr(self, name)) != 6:
                raise ValueError(f"TeleopMapping.{name} needs 6 entries, got {getattr(self, name)}")
        if not all(0 <= a < 6 for a in self.axes):
            raise ValueError(f"TeleopMapping.axes must index device axes 0..5, got {self.axes}")
        if not all(s in (-1, 1) for s in self.signs):
            raise ValueError(f"TeleopMapping.signs must be +-1, got {self.signs}")
        if not (self.full_scale > 0 and math.isfinite(self.full_scale)):
            raise ValueError(f"TeleopMapping.full_scale must be > 0, got {self.full_scale}")
        if not 0.0 <= self.deadband < 1.0:
            raise ValueError(f"TeleopMapping.deadband must be in [0, 1), got {self.deadband}")
        if self.record_button == self.violation_button:
            raise ValueError("record_button and violation_button must differ")

    @classmethod
    def behind_robot(cls, **overrides: Any) -> TeleopMapping:
        """Operator behind the arm looking along +x (the ROS spacenav node's twist frame)."""
        return cls(**{"signs": (1.0, -1.0, 1.0, 1.0, -1.0, 1.0), **overrides})

    def to_action(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Raw device values (x, y, z, rx, ry, rz) -> action in [-1, 1]^6 (float64)."""
        raw = np.asarray(raw, dtype=float)
        if raw.shape != (6,):
            raise ValueError(f"expected 6 raw axis values, got shape {raw.shape}")
        # A garbage reading must not move the arm: non-finite counts as "cap at rest".
        raw = np.where(np.isfinite(raw), raw, 0.0)
        # Clip before dividing: beyond full scale means full speed, and huge values stay finite.
        fs = self.full_scale
        v = np.asarray(self.signs) * np.clip(raw[list(self.axes)], -fs, fs) / fs
        shaped = np.sign(v) * np.maximum(np.abs(v) - self.deadband, 0.0) / (1.0 - self.deadband)
        return np.clip(shaped * np.asarray(self.scale, dtype=float), -1.0, 1.0)

    def command(self, event: ButtonEvent) -> TeleopCommand | None:
        """What a button press means; releases and unassigned buttons mean nothing."""
        if not event.pressed:
            return None
        if event.button == self.record_button:
            return TeleopCommand.TOGGLE_RECORDING
        if event.button == self.violation_button:
            return TeleopCommand.MARK_VIOLATION
        return None


class EventSource(Protocol):
    def poll(self) -> list[Event]: ...


@dataclass
class TeleopStep:
    action: np.ndarray
    commands: list[TeleopCommand]


class SpaceMouseTeleop:
    """Turns an event source into one action per control tick.

    spacenavd sends a motion event only when the reading changes, so the latest deflection is
    held between events (the cap at rest produces a final all-zero event), but never for
    longer than ``hold_timeout`` seconds without a motion event: an unplugged device or a
    dropped wireless link sends no zero-motion event. A device-removed event (protocol v1) and
    a lost connection (the source's ``poll`` raising ``ConnectionError``) zero it at once;
    ``lost`` then holds the reason until a source is set again.
    """

    def __init__(self, source: EventSource, mapping: TeleopMapping | None = None,
                 hold_timeout: float = HOLD_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mapping = mapping or TeleopMapping()
        self.hold_timeout = hold_timeout
        self.clock = clock
        self.raw = np.zeros(6)
        self.source = source
        self.lost = ""
        self._last_motion = clock()

    def set_source(self, source: EventSource) -> None:
        """A new connection (the daemon restarted): no deflection carries over."""
        self.source, self.lost, self.raw = source, "", np.zeros(6)

    def step(self) -> TeleopStep:
        commands = []
        try:
            events = self.source.poll()
        except ConnectionError as err:
            events, self.raw = [], np.zeros(6)
            self.lost = str(err)
        now = self.clock()
        for event in events:
            if isinstance(event, MotionEvent):
                self.raw, self._last_motion = event.raw, now
            elif isinstance(event, DeviceEvent):
                if event.removed:
                    self.raw = np.zeros(6)
            elif (command := self.mapping.command(event)) is not None:
                commands.append(command)
        if now - self._last_motion > self.hold_timeout:
            self.raw = np.zeros(6)
        return TeleopStep(self.mapping.to_action(self.raw), commands)


# --------------------------------------------------------------------------------------------
# ROS spacenav node messages as plain numbers

# spacenav node default for its `full_scale` parameter (joystick_drivers, spacenav.cpp).
SPACENAV_NODE_FULL_SCALE = 512.0


def twist_to_raw(linear: Sequence[float], angular: Sequence[float],
                 node_full_scale: float = SPACENAV_NODE_FULL_SCALE) -> np.ndarray:
    """``spacenav/twist`` (linear xyz, angular xyz) -> raw device values (x, y, z, rx, ry, rz).

    Inverts the node's ``linear = (z, -x, y) / full_scale``, ``angular = (rz, -rx, ry) /
    full_scale`` (with its linear_scale/angular_scale left at 1), so the same ``TeleopMapping``
    serves the socket client and the ROS topic. Pass the node's ``full_scale`` parameter.
    """
    vx, vy, vz = (float(v) for v in linear)
    wx, wy, wz = (float(w) for w in angular)
    return np.array([-vy, vz, vx, -wy, wz, wx]) * node_full_scale


def joy_buttons(buttons: Sequence[int], previous: Sequence[int] = ()) -> list[ButtonEvent]:
    """``spacenav/joy`` button states -> the press/release events since ``previous``.

    A Joy message carries states, not edges; comparing with the previous message gives the
    same events the socket delivers (a shorter list counts as released).
    """
    events = []
    for i in range(max(len(buttons), len(previous))):
        now = bool(buttons[i]) if i < len(buttons) else False
        before = bool(previous[i]) if i < len(previous) else False
        if now != before:
            events.append(ButtonEvent(button=i, pressed=now))
    return events


# --------------------------------------------------------------------------------------------
# Direct HID access (optional)


class PySpaceMouseReader:
    """SpaceMouse over HID with the optional ``pyspacemouse`` package, no daemon needed.

    Produces the same events as ``SpnavClient`` in spacenavd's device frame and units.
    pyspacemouse reports x right, y forward, z up and roll/pitch/yaw about forward/right/up,
    each in [-1, 1]; the sign conventions of the rotations follow its docs and have not been
    checked against a device here.
    """

    def __init__(self, full_scale: float = 350.0, device: str | None = None) -> None:
        try:
            import pyspacemouse
        except ImportError as err:
            raise ImportError(
                "PySpaceMouseReader needs the optional 'pyspacemouse' package: "
                "pip install pyspacemouse (and apt-get install libhidapi-hidraw0); "
                "or run spacenavd and use SpnavClient"
            ) from err
        self._lib = pyspacemouse
        self.full_scale = full_scale
        self._device = pyspacemouse.open(device=device) if device else pyspacemouse.open()
        if not self._device:
            raise ConnectionError("pyspacemouse found no SpaceMouse (is it plugged in?)")
        self._buttons: list[int] = []
        self._raw: tuple[int, ...] | None = None

    def poll(self) -> list[Event]:
        state = self._lib.read()
        fs = self.full_scale
        raw = tuple(int(round(v * fs)) for v in (state.x, state.z, state.y, state.pitch,
                                                  state.yaw, state.roll))
        events: list[Event] = []
        if raw != self._raw:
            events.append(MotionEvent(*raw))
            self._raw = raw
        buttons = list(state.buttons)
        events += joy_buttons(buttons, self._buttons)
        self._buttons = buttons
        return events

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._lib.close()


# --------------------------------------------------------------------------------------------
# Keyboard


# key -> (pose-change axis, sign), in the robot base frame.
DEFAULT_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0),
    "a": (1, 1.0), "d": (1, -1.0),
    "r": (2, 1.0), "f": (2, -1.0),
    "q": (5, 1.0), "e": (5, -1.0),
}
DEFAULT_COMMAND_KEYS: dict[str, TeleopCommand] = {
    " ": TeleopCommand.TOGGLE_RECORDING,
    "v": TeleopCommand.MARK_VIOLATION,
}


class KeyboardTeleop:
    """Keys -> action, for people without a SpaceMouse.

    w/s: +-x, a/d: +-y, r/f: +-z, q/e: +-yaw (robot base frame); space: start/stop recording;
    v: mark a violation. A terminal reports key presses, not releases, so each press moves one
    control step: the keys received since the previous ``step()`` are summed (auto-repeat of a
    held key keeps the arm moving) and the action clipped to [-1, 1]. Unknown keys are ignored.

    ``stream`` is anything with a file descriptor (a terminal, a pipe) or, for tests, any
    object with ``read()``. Use ``with teleop.cbreak():`` to get single keys from a terminal
    without Enter and without echo (entering it discards keys typed before).
    """

    def __init__(self, stream: IO[str] | IO[bytes] | None = None, *, gain: float = 1.0,
                 keys: dict[str, tuple[int, float]] | None = None,
                 command_keys: dict[str, TeleopCommand] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self.gain = gain
        self.keys = dict(DEFAULT_KEYS if keys is None else keys)
        self.command_keys = dict(DEFAULT_COMMAND_KEYS if command_keys is None else command_keys)

    def keys_to_step(self, chars: str) -> TeleopStep:
        action = np.zeros(6)
        commands = []
        for ch in chars:
            key = ch if ch == " " else ch.lower()
            if key in self.keys:
                axis, sign = self.keys[key]
                action[axis] += sign * self.gain
            elif key in self.command_keys:
                commands.append(self.command_keys[key])
        return TeleopStep(np.clip(action, -1.0, 1.0), commands)

    def _fd(self) -> int | None:
        try:
            return self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def read_available(self) -> str:
        """Characters typed since the last call, without blocking."""
        fd = self._fd()
        if fd is None:
            data = self.stream.read()
        else:
            chunks = []
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 1024)
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="ignore")
        return data or ""

    def step(self) -> TeleopStep:
        return self.keys_to_step(self.read_available())

    @contextlib.contextmanager
    def cbreak(self):
        """Terminal in cbreak mode (keys arrive one by one, no echo) for the block's duration;
        a no-op for pipes and files."""
        fd = self._fd()
        if fd is None or not os.isatty(fd):
            yield self
            return
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            yield self
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
