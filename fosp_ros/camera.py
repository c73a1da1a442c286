"""camera: RealSense colour stream -> sensor_msgs/Image (rgb8), via pyrealsense2.

Parameters: ``serial`` ('' = the only connected camera), ``width``, ``height``, ``fps``. The
topic is ``ros.topics.image`` of the project YAML, the one realsense-ros uses, so this node and
``realsense2_camera`` are interchangeable. Without a camera it stops with a message that says
what to check.

The frame loop reads any object with ``wait_for_frames`` (an ``rs.pipeline`` on hardware, an
``rs.syncer`` fed by a software device in tests), so the tested path is the shipped one.
"""

from __future__ import annotations

import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from fosp_ros.config import load_graph_config
from fosp_ros.conversions import image_to_msg
from fosp_ros.runtime import config_parameter, run_nodes

try:
    import pyrealsense2 as rs
except ImportError:  # reported with advice by open_realsense; simulation needs no camera
    rs = None

FRAME_ID = "camera_color_optical_frame"


def frame_to_rgb(frame) -> np.ndarray:
    """A pyrealsense2 colour frame as an (H, W, 3) RGB uint8 array (copied, stride honoured)."""
    video = frame.as_video_frame()
    fmt = video.get_profile().format()
    if fmt not in (rs.format.rgb8, rs.format.bgr8):
        raise ValueError(f"unsupported colour format {fmt}; configure the stream as rgb8")
    height, width = video.get_height(), video.get_width()
    stride = video.get_stride_in_bytes()
    rows = np.frombuffer(bytes(video.get_data()), dtype=np.uint8).reshape(height, stride)
    rgb = rows[:, : 3 * width].reshape(height, width, 3)
    return (rgb[..., ::-1] if fmt == rs.format.bgr8 else rgb).copy()


class CameraUnavailable(ConnectionError):
    """No RealSense to open (library, device or serial missing); the message says which.

    An OSError, so a node that cannot start for want of it stops with one line."""


def open_realsense(serial: str, width: int, height: int, fps: int):
    """A started ``rs.pipeline`` for the colour stream, or CameraUnavailable saying why not."""
    if rs is None:
        raise CameraUnavailable(
            "pyrealsense2 is not installed: pip install pyrealsense2 (and apt-get install "
            "libusb-1.0-0), or run realsense-ros, or use the simulated robot (use_sim:=true)"
        )
    connected = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
    if not connected:
        raise CameraUnavailable(
            "no RealSense camera connected. Check the USB 3 cable and port, the librealsense "
            "udev rules (99-realsense-libusb.rules) and `rs-enumerate-devices`; or run with "
            "the simulated robot (use_sim:=true)"
        )
    if serial and serial not in connected:
        raise CameraUnavailable(f"RealSense {serial} not found; connected: {', '.join(connected)}")
    config = rs.config()
    if serial:
        config.enable_device(serial)
    config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
    pipeline = rs.pipeline()
    pipeline.start(config)
    return pipeline


class Camera(Node):
    def __init__(self, source=None, **node_kwargs):
        super().__init__("camera", **node_kwargs)
        self.cfg = load_graph_config(config_parameter(self) or None)
        p = {name: self.declare_parameter(name, default).value for name, default in
             (("serial", ""), ("width", 640), ("height", 480), ("fps", 30))}
        self.source = source or open_realsense(p["serial"], p["width"], p["height"], p["fps"])
        self.pub = self.create_publisher(Image, self.cfg.ros.topics.image, 10)
        self.frames = 0
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="camera", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            try:
                frames = self.source.wait_for_frames(500)
            except RuntimeError:  # timeout: no frame within 0.5 s; check _running again
                continue
            color = frames.first_or_default(rs.stream.color)
            if not color:
                continue
            stamp = self.get_clock().now().to_msg()
            try:
                self.pub.publish(image_to_msg(frame_to_rgb(color), stamp, FRAME_ID))
            except Exception:
                if self.context.ok():
                    raise
                return  # SIGINT shut the context down: the run is over
            self.frames += 1

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2.0)
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()


def main(args: list[str] | None = None) -> int:
    return run_nodes([Camera], args)


if __name__ == "__main__":
    raise SystemExit(main())
