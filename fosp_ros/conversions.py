"""ROS message <-> numpy conversions used by every node (one place for frames and encodings)."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray

from fosp_core.robot.geometry import pos_quat_from_pose, pose_from_pos_quat


def pose_from_msg(msg: PoseStamped) -> np.ndarray:
    p, q = msg.pose.position, msg.pose.orientation
    return pose_from_pos_quat([p.x, p.y, p.z], [q.w, q.x, q.y, q.z])


def pose_to_msg(pose: np.ndarray, stamp, frame_id: str) -> PoseStamped:
    pos, quat = pos_quat_from_pose(pose)
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pos)
    o = msg.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in quat)
    return msg


def image_to_msg(rgb: np.ndarray, stamp, frame_id: str) -> Image:
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.step = 3 * msg.width
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an rgb8/bgr8 Image, honouring the row stride."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; expected rgb8 or bgr8")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    rgb = rows[:, : 3 * msg.width].reshape(msg.height, msg.width, 3)
    return rgb[..., ::-1].copy() if msg.encoding == "bgr8" else rgb.copy()


def array_to_msg(values) -> Float32MultiArray:
    msg = Float32MultiArray()
    msg.data = [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
    return msg


def array_from_msg(msg: Float32MultiArray) -> np.ndarray:
    return np.asarray(msg.data, dtype=np.float64)
