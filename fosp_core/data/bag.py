"""rosbag2 recordings of teleoperated demonstrations -> dataset (``fosp dataset from-bag``).

A lab records the robot while someone teleoperates it::

    ros2 bag record -s mcap /camera/camera/color/image_raw \\
        /franka_robot_state_broadcaster/current_pose /fosp/action /fosp/reward /fosp/cost \\
        /fosp/episode

(with the project's own ROS graph: ``/fosp/labels`` instead of reward and cost, and
``/fosp/action/executed``, what the arm did for each action after the safety shield, instead
of ``/fosp/action``; then ``fosp dataset from-bag BAG --out DIR --action-topic
/fosp/action/executed``). ``bag_to_dataset`` reads
such a bag (MCAP or SQLite3, with the pure-Python ``rosbags`` library, no ROS install needed)
and writes one trajectory per episode with ``DatasetWriter``. Only the camera frames that end
up in a row are decoded, so a long recording at 30 fps costs memory for the rows alone.

Topics and message types:

=========  ==================================  ============================================
role       type                                use
=========  ==================================  ============================================
image      sensor_msgs/msg/Image               rgb8 or bgr8, any size; resized to 64x64 with
                                               OpenCV INTER_AREA (64x64 input is kept as is)
pose       geometry_msgs/msg/PoseStamped       end-effector pose; the message quaternion is
                                               (x, y, z, w), converted with
                                               ``geometry.pose_from_pos_quat``
action     std_msgs/msg/Float32MultiArray      the 6 normalised action values the teleop or
                                               policy node sent (one message per control tick)
reward     std_msgs/msg/Float32                optional
cost       std_msgs/msg/Float32                optional
labels     std_msgs/msg/Float32MultiArray      optional, [reward, cost] as ``fosp_ros.labeler``
                                               publishes them; replaces reward and cost
episode    std_msgs/msg/String or Bool         "start"/"stop"/"toggle" (True/False); optional
=========  ==================================  ============================================

The rules are the live recorder's (``fosp_teleop.recorder``) inside an episode; at its edges a
bag allows a better choice (below: row 0 at the first action rather than at the start marker,
the last row one control period after the last action rather than at the stop marker, so it
shows that action's result). Every message sits at its bag (receive) timestamp, since the
std_msgs types carry no header. An episode runs from "start" to "stop" ("toggle" flips;
a start while recording and a stop while idle are ignored, as the recorder does; no episode
topic: the whole bag is one episode). Inside it the action messages ``a_1 .. a_N`` at times
``t_1 .. t_N`` are the control ticks, and the rows follow the dataset's convention:

* row 0: the latest image and pose at ``t_1`` (what the operator saw when sending the first
  action); action, reward and cost zero;
* row k (1 <= k <= N): action ``a_k``, the latest image and pose at the next tick ``t_{k+1}``
  (zero-order hold: the result of ``a_k``), and the reward and cost of that step: the largest
  value received in ``(t_k, t_{k+1}]`` (a flag raised at any point of the step counts), or the
  latest earlier value if none arrived (a topic that publishes only on change). For the last
  action the next tick is ``t_N + 1 / rate_hz``.

Actions with a non-finite value are skipped, as the shield drops them (they never moved the
arm); the others are clipped to [-1, 1], what the shield executes. Actions sent before the
first image and pose arrived are dropped too (nothing to pair them with;
``meta["dropped_actions"]`` counts them). Reward and cost read 0 before their first message.

Real robots have no privileged state: ``state`` is stored as zeros with 25 columns (the width
of the simulated twin's state, so bag and simulator datasets can share a directory), and
``meta["state"]`` says so.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fosp_core.data.dataset import IMAGE_SHAPE, DatasetWriter
from fosp_core.data.images import to_policy_image
from fosp_core.envs.state_layout import STATE_DIM
from fosp_core.robot.geometry import pose_from_pos_quat

SUPPORTED_ENCODINGS = ("rgb8", "bgr8")
STORAGE_FORMATS = ("mcap", "sqlite3")

IMAGE_TYPE = "sensor_msgs/msg/Image"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
ACTION_TYPE = "std_msgs/msg/Float32MultiArray"
SCALAR_TYPE = "std_msgs/msg/Float32"
EPISODE_TYPES = ("std_msgs/msg/String", "std_msgs/msg/Bool")


class BagError(ValueError):
    """The bag cannot be converted; the message names the bag and the topic at fault."""


@dataclass(frozen=True)
class BagTopics:
    """Topic names; ``None`` for reward, cost or episode means "not recorded"."""

    image: str = "/camera/camera/color/image_raw"
    pose: str = "/franka_robot_state_broadcaster/current_pose"
    action: str = "/fosp/action"
    reward: str | None = "/fosp/reward"
    cost: str | None = "/fosp/cost"
    episode: str | None = "/fosp/episode"
    labels: str | None = None


# --------------------------------------------------------------------------------------------
# Message decoding


def image_from_msg(msg: Any, topic: str = "image") -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> (64, 64, 3) uint8 RGB."""

    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise BagError(f"{topic}: unsupported image encoding {msg.encoding!r}; "
                       f"supported: {', '.join(SUPPORTED_ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < 3 * w or data.size < h * step:
        raise BagError(f"{topic}: image data of {data.size} bytes does not fit "
                       f"{h}x{w} {msg.encoding} with row step {step}")
    # Rows may be padded beyond width * 3 bytes; step says where each row starts.
    rgb = data[: h * step].reshape(h, step)[:, : 3 * w].reshape(h, w, 3)
    if msg.encoding == "bgr8":
        rgb = rgb[:, :, ::-1]
    return to_policy_image(rgb, IMAGE_SHAPE[0])


def pose_from_msg(msg: Any) -> np.ndarray:
    p, q = msg.pose.position, msg.pose.orientation
    # geometry_msgs stores the quaternion x, y, z, w; the geometry helpers take w first.
    return pose_from_pos_quat(np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z]))


def action_from_msg(msg: Any, topic: str = "action") -> np.ndarray | None:
    """Float32MultiArray -> the executed action, or None for one the shield would drop."""
    action = np.asarray(msg.data, dtype=np.float64)
    if action.shape != (6,):
        raise BagError(f"{topic}: expected 6 action values per message, got {action.size}")
    if not np.all(np.isfinite(action)):
        return None
    return np.clip(action, -1.0, 1.0)


def labels_from_msg(msg: Any, topic: str = "labels") -> np.ndarray:
    labels = np.asarray(msg.data, dtype=np.float64)
    if labels.size < 2:
        raise BagError(f"{topic}: expected [reward, cost], got {labels.size} values")
    return labels[:2]


MARKERS = ("start", "stop", "toggle")


def marker_from_msg(msg: Any, topic: str = "episode") -> str:
    """Episode marker -> "start", "stop" or "toggle" (Bool: True is start)."""
    value = msg.data
    if isinstance(value, (bool, np.bool_)):
        return "start" if value else "stop"
    text = str(value).strip().lower()
    if text not in MARKERS:
        raise BagError(f"{topic}: episode marker {value!r} is not one of {', '.join(MARKERS)}")
    return text


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Series:
    """Time-sorted values of one topic, with zero-order-hold lookup."""

    times: list[int]
    values: list[Any]

    def at(self, t: int, default: Any = None) -> Any:
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[i] if i >= 0 else default

    def has(self, t: int) -> bool:
        return bool(self.times) and self.times[0] <= t

    def step_max(self, after: int, upto: int, default: float = 0.0) -> float:
        """Largest value in (after, upto]; the held value when none arrived then."""
        lo = bisect.bisect_right(self.times, after)
        hi = bisect.bisect_right(self.times, upto)
        if hi > lo:
            return float(max(self.values[lo:hi]))
        return float(self.at(upto, default))


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """The message definitions of ROS 2 Kilted, for reading and writing bags."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


EXPECTED_TYPES = {"image": (IMAGE_TYPE,), "pose": (POSE_TYPE,), "action": (ACTION_TYPE,),
                  "reward": (SCALAR_TYPE,), "cost": (SCALAR_TYPE,), "episode": EPISODE_TYPES,
                  "labels": (ACTION_TYPE,)}


@contextlib.contextmanager
def _open_bag(bag: Path):
    from rosbags.highlevel import AnyReader, AnyReaderError

    try:
        reader = AnyReader([bag], default_typestore=typestore())
        reader.open()
    except (AnyReaderError, FileNotFoundError) as err:  # e.g. a directory without metadata
        raise BagError(f"{bag}: not a readable rosbag2 recording ({err})") from err
    try:
        yield reader
    finally:
        reader.close()


def _connections(reader: Any, bag: Path, topics: BagTopics) -> dict[str, list[Any]]:
    """Connections per role; every named topic must exist with the expected type."""
    wanted = {role: name for role, name in asdict(topics).items() if name}
    present = {c.topic: c.msgtype for c in reader.connections}
    missing = [f"{role} topic {name!r}" for role, name in wanted.items() if name not in present]
    if missing:
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(present.items())) or "none"
        raise BagError(f"{bag}: missing {', '.join(missing)}; the bag has: {listing}")
    for role, name in wanted.items():
        if present[name] not in EXPECTED_TYPES[role]:
            raise BagError(f"{bag}: {role} topic {name!r} has type {present[name]}, "
                           f"expected {' or '.join(EXPECTED_TYPES[role])}")
    return {role: [c for c in reader.connections if c.topic == name]
            for role, name in wanted.items()}


def _read_series(reader: Any, conns: Mapping[str, list[Any]]) -> dict[str, _Series]:
    """Every topic's values in time order, except images: only their times (pass one).

    Camera frames are the bulk of a bag; decoding only the frames that end up in a row (pass
    two, ``_images_at``) keeps memory and time proportional to the rows, not to the frames.
    """
    role_of = {c.topic: role for role, cs in conns.items() for c in cs}
    roles = [r for r in conns if r != "labels"] + (["reward", "cost"] if "labels" in conns else [])
    series = {role: _Series([], []) for role in roles}
    everything = [c for cs in conns.values() for c in cs]
    # AnyReader yields in time order (ties in recorded order), so the series come out sorted.
    for conn, t, raw in reader.messages(connections=everything):
        role = role_of[conn.topic]
        if role == "image":
            series["image"].times.append(int(t))
            series["image"].values.append(None)
            continue
        value = _decode(role, reader.deserialize(raw, conn.msgtype), conn.topic)
        if value is None:
            continue
        if role == "labels":  # one [reward, cost] message feeds both series
            for key, v in zip(("reward", "cost"), value):
                series[key].times.append(int(t))
                series[key].values.append(float(v))
        else:
            series[role].times.append(int(t))
            series[role].values.append(value)
    return series


def _decode(role: str, msg: Any, topic: str) -> Any:
    if role == "pose":
        return pose_from_msg(msg)
    if role == "action":
        return action_from_msg(msg, topic)
    if role == "episode":
        return marker_from_msg(msg, topic)
    if role == "labels":
        return labels_from_msg(msg, topic)
    return float(msg.data)


def _images_at(reader: Any, conns: list[Any], times: Sequence[int]) -> dict[int, np.ndarray]:
    """The latest image at each of the sorted ``times`` (pass two; each frame decoded once)."""
    out: dict[int, np.ndarray] = {}
    i = 0
    previous: tuple[Any, bytes] | None = None
    decoded: np.ndarray | None = None

    def latest() -> np.ndarray:
        nonlocal decoded
        if decoded is None:
            conn, raw = previous
            decoded = image_from_msg(reader.deserialize(raw, conn.msgtype), conn.topic)
        return decoded

    for conn, t, raw in reader.messages(connections=conns):
        while i < len(times) and times[i] < t:
            out[times[i]] = latest()
            i += 1
        if i == len(times):
            break
        previous, decoded = (conn, raw), None
    for sample in times[i:]:
        out[sample] = latest()
    return out


def _episodes(markers: _Series | None) -> list[tuple[float, float]]:
    """[start, stop] intervals (ns) from the markers; the whole bag without markers."""
    if markers is None:
        return [(-math.inf, math.inf)]
    intervals = []
    start: int | None = None
    for t, marker in zip(markers.times, markers.values):
        recording = start is not None
        if marker == "toggle":
            marker = "stop" if recording else "start"
        if marker == "start" and not recording:
            start = t
        elif marker == "stop" and recording:
            intervals.append((start, t))
            start = None
    if start is not None:
        intervals.append((start, math.inf))
    return intervals


@dataclass
class _Episode:
    index: int
    start: float
    stop: float
    samples: list[int]  # row times: the ticks t_1 .. t_N, then t_N + period
    actions: list[np.ndarray]
    dropped: int  # leading actions sent before any image and pose


def _plan(series: Mapping[str, _Series], index: int, start: float, stop: float,
          period_ns: int) -> _Episode | None:
    actions = series["action"]
    lo = bisect.bisect_left(actions.times, start)
    hi = bisect.bisect_right(actions.times, stop)
    ticks, acts = actions.times[lo:hi], actions.values[lo:hi]
    image, pose = series["image"], series["pose"]
    first = next((i for i, t in enumerate(ticks) if image.has(t) and pose.has(t)), len(ticks))
    if first == len(ticks):
        return None
    ticks, acts = ticks[first:], acts[first:]
    return _Episode(index, start, stop, [*ticks, ticks[-1] + period_ns], acts, first)


def _arrays(episode: _Episode, series: Mapping[str, _Series],
            images: Mapping[int, np.ndarray]) -> dict[str, np.ndarray]:
    samples = episode.samples
    rows = len(samples)
    arrays = {
        "image": np.stack([images[t] for t in samples]).astype(np.uint8),
        "pose": np.stack([series["pose"].at(t) for t in samples]).astype(np.float32),
        "action": np.zeros((rows, 6), np.float32),
        "reward": np.zeros(rows, np.float32),
        "cost": np.zeros(rows, np.float32),
        "state": np.zeros((rows, STATE_DIM), np.float32),
    }
    arrays["action"][1:] = np.stack(episode.actions)
    for key in ("reward", "cost"):
        if key in series:
            arrays[key][1:] = [series[key].step_max(a, b) for a, b in zip(samples, samples[1:])]
    return arrays


def bag_to_dataset(
    bag_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    task: str = "safereach",
    image_topic: str = BagTopics.image,
    pose_topic: str = BagTopics.pose,
    action_topic: str = BagTopics.action,
    reward_topic: str | None = BagTopics.reward,
    cost_topic: str | None = BagTopics.cost,
    episode_topic: str | None = BagTopics.episode,
    labels_topic: str | None = None,
    rate_hz: float = 10.0,
) -> list[Path]:
    """Convert a rosbag2 recording into trajectories in ``out_dir``; return their paths.

    Every topic named must be in the bag; pass ``None`` (or "") for an optional one that was
    not recorded. ``labels_topic`` replaces ``reward_topic`` and ``cost_topic``.

    Raises ``BagError`` (a ``ValueError``) naming missing topics, wrong message types or
    unsupported image encodings, and ``FileNotFoundError`` for a missing bag. Nothing is
    written unless the whole bag converts.
    """
    bag = Path(bag_path)
    if not bag.exists():
        raise FileNotFoundError(f"{bag}: no such bag")
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise BagError(f"rate_hz must be > 0, got {rate_hz}")
    labels = labels_topic or None
    topics = BagTopics(image=image_topic, pose=pose_topic, action=action_topic,
                       reward=None if labels else reward_topic or None,
                       cost=None if labels else cost_topic or None,
                       episode=episode_topic or None, labels=labels)
    period_ns = round(1e9 / rate_hz)
    with _open_bag(bag) as reader:
        conns = _connections(reader, bag, topics)
        series = _read_series(reader, conns)
        intervals = _episodes(series.get("episode"))
        episodes = [e for i, (start, stop) in enumerate(intervals)
                    if (e := _plan(series, i, start, stop, period_ns)) is not None]
        needed = sorted({t for e in episodes for t in e.samples})
        images = _images_at(reader, conns["image"], needed)
    trajectories = [(e, _arrays(e, series, images)) for e in episodes]
    writer = DatasetWriter(out_dir)
    paths = []
    for episode, arrays in trajectories:
        meta = {
            "task": task,
            "behaviour": "teleop",
            "seed": None,
            "layout": {},
            "source": "rosbag",
            "bag": str(bag),
            "topics": asdict(topics),
            "rate_hz": rate_hz,
            "episode_index": episode.index,
            "start_ns": None if math.isinf(episode.start) else int(episode.start),
            "stop_ns": None if math.isinf(episode.stop) else int(episode.stop),
            "dropped_actions": episode.dropped,
            "state": "zeros: a real robot has no privileged state",
        }
        paths.append(writer.add(arrays, meta))
    return paths
