"""Writing rosbag2 recordings of demonstrations, as the teleop recorder's topics carry them:
the test fixtures of ``fosp dataset from-bag`` (fosp_core.data.bag), and a reference for what a
recording must hold."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fosp_core.data.bag import (  # the topics and types the reader expects
    ACTION_TYPE,
    IMAGE_TYPE,
    POSE_TYPE,
    SCALAR_TYPE,
    STORAGE_FORMATS,
    SUPPORTED_ENCODINGS,
    BagTopics,
    typestore,
)
from fosp_core.robot.geometry import pos_quat_from_pose


def _stamp(store: Any, t_ns: int) -> Any:
    return store.types["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000,
                                                     nanosec=t_ns % 1_000_000_000)


def image_msg(store: Any, image: np.ndarray, t_ns: int, encoding: str = "rgb8") -> Any:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image in ``encoding`` (rgb8 or bgr8)."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(f"encoding must be one of {SUPPORTED_ENCODINGS}, got {encoding!r}")
    image = np.asarray(image, dtype=np.uint8)
    pixels = image[:, :, ::-1] if encoding == "bgr8" else image
    h, w, _ = image.shape
    header = store.types["std_msgs/msg/Header"](stamp=_stamp(store, t_ns), frame_id="camera")
    return store.types[IMAGE_TYPE](header=header, height=h, width=w, encoding=encoding,
                                   is_bigendian=0, step=3 * w,
                                   data=np.ascontiguousarray(pixels).reshape(-1))


def pose_msg(store: Any, pose: np.ndarray, t_ns: int) -> Any:
    """6-D pose -> geometry_msgs/PoseStamped (quaternion stored x, y, z, w)."""
    pos, quat_wxyz = pos_quat_from_pose(pose)
    types = store.types
    return types[POSE_TYPE](
        header=types["std_msgs/msg/Header"](stamp=_stamp(store, t_ns), frame_id="base"),
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=pos[0], y=pos[1], z=pos[2]),
            orientation=types["geometry_msgs/msg/Quaternion"](
                x=quat_wxyz[1], y=quat_wxyz[2], z=quat_wxyz[3], w=quat_wxyz[0]),
        ),
    )


def array_msg(store: Any, values: Iterable[float]) -> Any:
    """std_msgs/Float32MultiArray, as the action and labels topics carry."""
    layout = store.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return store.types[ACTION_TYPE](layout=layout, data=np.asarray(list(values), np.float32))


def write_demo_bag(
    path: str | os.PathLike[str],
    trajectories: Iterable[Mapping[str, np.ndarray]],
    *,
    storage: str = "mcap",
    topics: BagTopics | None = None,
    encoding: str = "rgb8",
    marker: str = "string",
    rate_hz: float = 10.0,
    start_ns: int = 1_700_000_000 * 1_000_000_000,
    idle_actions: int = 0,
) -> Path:
    """Write the bag a recording of ``trajectories`` would give (tests, and a reference).

    Each trajectory is a dict with ``image`` (T, H, W, 3) uint8 RGB of any size, ``pose``
    (T, 6), ``action`` (T, 6), ``reward`` (T,) and ``cost`` (T,) in the dataset row convention.
    Timeline of one episode, ``dt = 1 / rate_hz``, tick k at ``t0 + (k + 1) dt``: a start
    marker at ``t0``; per tick k the row-k image, pose, reward and cost (or [reward, cost] on
    ``topics.labels`` if set) 1 ms before the tick, then (k < T - 1) action k + 1 at the tick;
    a stop marker at the last tick. Episodes are 10 ticks apart, and ``idle_actions`` actions
    are sent in each gap (outside any episode, as a teleop node that keeps publishing does).
    ``marker``: "string" (start/stop), "toggle" (String "toggle") or "bool" (std_msgs/Bool).
    Topics set to ``None`` in ``topics`` are not written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGE_FORMATS:
        raise ValueError(f"storage must be one of {STORAGE_FORMATS}, got {storage!r}")
    if marker not in ("string", "toggle", "bool"):
        raise ValueError(f"marker must be 'string', 'toggle' or 'bool', got {marker!r}")
    topics = topics or BagTopics()
    store = typestore()
    types = store.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    marker_type = "std_msgs/msg/Bool" if marker == "bool" else "std_msgs/msg/String"
    dt = round(1e9 / rate_hz)
    with Writer(Path(path), version=9, storage_plugin=plugin) as writer:
        roles = {"image": IMAGE_TYPE, "pose": POSE_TYPE, "action": ACTION_TYPE,
                 "reward": SCALAR_TYPE, "cost": SCALAR_TYPE, "labels": ACTION_TYPE,
                 "episode": marker_type}
        conns = {role: writer.add_connection(getattr(topics, role), msgtype, typestore=store)
                 for role, msgtype in roles.items() if getattr(topics, role)}

        def write(role: str, msg: Any, t_ns: int) -> None:
            if role in conns:
                writer.write(conns[role], t_ns, store.serialize_cdr(msg, msg.__msgtype__))

        def write_marker(is_start: bool, t_ns: int) -> None:
            data = {"string": "start" if is_start else "stop", "toggle": "toggle",
                    "bool": is_start}[marker]
            write("episode", types[marker_type](data=data), t_ns)

        t0 = start_ns
        for traj in trajectories:
            n = len(traj["action"])
            write_marker(True, t0)
            for k in range(n):
                tick = t0 + (k + 1) * dt
                obs_t = tick - 1_000_000
                reward, cost = float(traj["reward"][k]), float(traj["cost"][k])
                write("image", image_msg(store, traj["image"][k], obs_t, encoding), obs_t)
                write("pose", pose_msg(store, traj["pose"][k], obs_t), obs_t)
                write("reward", types[SCALAR_TYPE](data=reward), obs_t)
                write("cost", types[SCALAR_TYPE](data=cost), obs_t)
                write("labels", array_msg(store, [reward, cost]), obs_t)
                if k + 1 < n:
                    write("action", array_msg(store, traj["action"][k + 1]), tick)
            last_tick = t0 + n * dt
            write_marker(False, last_tick)
            for i in range(idle_actions):
                write("action", array_msg(store, np.full(6, 0.5)), last_tick + (i + 2) * dt)
            t0 = last_tick + 10 * dt
    return Path(path)
