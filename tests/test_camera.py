"""Camera node frame handling, tested with a pyrealsense2 software device (no camera here)."""

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from fosp_ros.conversions import image_from_msg
from tests.ros_graph import RosClient, new_domain_id, wait_for

rs = pytest.importorskip("pyrealsense2")

from fosp_ros.camera import Camera, CameraUnavailable, frame_to_rgb, open_realsense  # noqa: E402


class SoftwareCamera:
    """A RealSense software device with one colour stream, fed frame by frame."""

    def __init__(self, width=64, height=48, fmt=None):
        fmt = fmt or rs.format.rgb8
        self.device = rs.software_device()
        self.sensor = self.device.add_sensor("Color")
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy = width, height, 50.0, 50.0
        intr.ppx, intr.ppy, intr.model, intr.coeffs = width / 2, height / 2, \
            rs.distortion.none, [0.0] * 5
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp = width, height, 30, 3
        stream.fmt, stream.intrinsics = fmt, intr
        self.profile = self.sensor.add_video_stream(stream)
        self.syncer = rs.syncer()
        self.sensor.open(self.profile)
        self.sensor.start(self.syncer)
        self.width, self.count = width, 0

    def push(self, pixels: np.ndarray) -> None:
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(pixels).tobytes()
        frame.stride, frame.bpp = 3 * self.width, 3
        frame.timestamp, frame.frame_number = self.count * 33.0, self.count
        frame.domain = rs.timestamp_domain.hardware_clock
        frame.profile = self.profile.as_video_stream_profile()
        self.sensor.on_video_frame(frame)
        self.count += 1


@pytest.mark.parametrize("fmt", ["rgb8", "bgr8"])
def test_frame_to_rgb_is_byte_exact(fmt):
    cam = SoftwareCamera(fmt=getattr(rs.format, fmt))
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cam.push(pixels)
    color = cam.syncer.wait_for_frames(2000).first_or_default(rs.stream.color)
    rgb = frame_to_rgb(color)
    expected = pixels[..., ::-1] if fmt == "bgr8" else pixels
    np.testing.assert_array_equal(rgb, expected)


def test_no_camera_gives_a_clear_error():
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a real camera is connected")
    with pytest.raises(CameraUnavailable, match="no RealSense camera connected.*use_sim"):
        open_realsense("", 640, 480, 30)


def test_camera_node_publishes_exact_frames():
    domain = new_domain_id()
    client = RosClient(domain)
    received = []
    client.node.create_subscription(Image, "/camera/camera/color/image_raw",
                                    lambda m: received.append(image_from_msg(m)), 10)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    cam = SoftwareCamera()
    node = Camera(source=cam.syncer, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        frames = [np.full((48, 64, 3), i * 40, np.uint8) for i in range(1, 4)]
        frames[0][5, 7] = (1, 2, 3)
        # The first frames may go out before DDS matched the subscriber: push until one lands.
        def delivered():
            cam.push(np.zeros((48, 64, 3), np.uint8))
            executor.spin_once(timeout_sec=0.1)
            return len(received) > 0
        wait_for(delivered, 20, "the first camera frame")
        # rs.syncer keeps one frame: push one, wait for exactly that image to arrive.
        for frame in frames:
            cam.push(frame)
            wait_for(lambda f=frame: any(np.array_equal(g, f) for g in received), 10,
                     "a frame to arrive byte-exact")
        assert all(g.shape == (48, 64, 3) and g.dtype == np.uint8 for g in received)
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        client.close()
