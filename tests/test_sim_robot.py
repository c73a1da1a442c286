"""sim_robot: the MuJoCo twin standing in for franka_ros2 and the camera."""

import time

import rclpy

from fosp_core.envs.safereach import SafeReachEnv
from fosp_ros.sim_robot import SimRobot
from tests.ros_graph import new_domain_id


def test_each_tick_renders_the_camera_frame_once(monkeypatch):
    """The frame it publishes is the only one it renders: with image observations every
    tick rendered a second frame that nobody read (17.1 against 10.0 ms a tick here)."""
    counts = {"render": 0, "publish": 0}

    def counted(name, method):
        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return method(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(SafeReachEnv, "render_image",
                        counted("render", SafeReachEnv.render_image))
    monkeypatch.setattr(SimRobot, "_publish", counted("publish", SimRobot._publish))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=new_domain_id())
    node = SimRobot(context=context)
    try:
        time.sleep(1.0)  # the reset and about ten ticks at 10 Hz
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert counts["publish"] >= 3, counts
    assert counts["render"] == counts["publish"], counts
