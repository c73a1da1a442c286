"""Teleoperation through the ROS graph: a stand-in spacenavd and spacenav topics drive the arm."""

import json
import subprocess
import sys
import time

import numpy as np
from geometry_msgs.msg import Twist
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float32MultiArray, String

from fosp_core.data.dataset import read_trajectory
from fosp_ros.conversions import array_from_msg
from fosp_teleop.spacemouse import ButtonEvent, MotionEvent
from tests.ros_graph import NodeProcess, RosClient, new_domain_id, stop_all, wait_for
from tests.spacenavd_standin import SpacenavdStandIn


def test_standin_spacemouse_records_a_demonstration(tmp_path):
    domain = new_domain_id()
    out = tmp_path / "demos"
    with SpacenavdStandIn(tmp_path / "spnav.sock") as daemon:
        procs = [NodeProcess(f"{pkg}.{name}", domain, params, log_dir=tmp_path)
                 for pkg, name, params in [
                     ("fosp_ros", "sim_robot", {}),
                     ("fosp_ros", "franka_interface", {}),
                     ("fosp_ros", "labeler", {"source": "sim"}),
                     ("fosp_teleop", "teleop", {"device": "spacenavd",
                                                "socket": str(tmp_path / "spnav.sock")}),
                     ("fosp_teleop", "recorder", {"out": str(out)}),
                 ]]
        client = RosClient(domain)
        try:
            status: list[str] = []
            client.node.create_subscription(String, "/fosp/record/status",
                                            lambda m: status.append(m.data), 10)
            daemon.wait_for_clients(1, timeout=30)
            wait_for(lambda: client.node.count_publishers("/fosp/episode") > 0
                     and client.node.count_subscribers("/fosp/episode") > 0
                     and client.node.count_subscribers("/fosp/action") > 0
                     and client.node.count_subscribers("/fosp/action/executed") > 0
                     and client.node.count_publishers("/fosp/record/status") > 0, 30,
                     "the graph")
            time.sleep(1.0)  # let every pair of endpoints finish matching

            def toggle_until(prefix):
                # The button toggles, so press again only when a press had no visible effect
                # for a while: a second press after a slow answer would undo the first.
                seen = len(status)
                daemon.send(ButtonEvent(button=0, pressed=True))
                daemon.send(ButtonEvent(button=0, pressed=False))
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and len(status) == seen:
                    time.sleep(0.05)
                return any(s.startswith(prefix) for s in status[seen:])

            wait_for(lambda: toggle_until("recording"), 20, "recording to start")
            # Operator across the table pushes the cap right: the arm moves to base +y.
            daemon.send(MotionEvent(350, 0, 0, 0, 0, 0, period=16))
            time.sleep(1.5)
            daemon.send(MotionEvent(0, 0, 0, 0, 0, 0, period=16))
            time.sleep(0.3)
            wait_for(lambda: toggle_until("saved"), 20, "the episode to be saved")
        finally:
            client.close()
            stop_all(procs)

    arrays, meta = read_trajectory(out / "traj_000000.npz")
    assert meta["behaviour"] == "teleop"
    moved = arrays["pose"][-1, 1] - arrays["pose"][0, 1]
    assert moved > 0.05, moved
    assert np.isclose(arrays["action"][:, 1].max(), 1.0)  # full deflection = full step
    assert np.all(np.abs(arrays["action"]) <= 1.0)
    info = subprocess.run([sys.executable, "-m", "fosp.cli", "dataset", "info", str(out),
                           "--json"], capture_output=True, text=True, check=True)
    report = json.loads(info.stdout)
    assert report["episodes"] == 1 and set(report["by_behaviour"]) == {"teleop"}


def test_spacenav_topics_and_buttons(tmp_path):
    domain = new_domain_id()
    proc = NodeProcess("fosp_teleop.teleop", domain,
                       {"device": "spacenav_topics", "operator": "behind"}, log_dir=tmp_path)
    client = RosClient(domain)
    try:
        node = client.node
        actions, episodes, flags = [], [], []
        node.create_subscription(Float32MultiArray, "/fosp/action",
                                 lambda m: actions.append(array_from_msg(m)), 50)
        node.create_subscription(String, "/fosp/episode", lambda m: episodes.append(m.data), 10)
        node.create_subscription(Bool, "/fosp/label/cost_flag", lambda m: flags.append(m.data), 10)
        twist_pub = node.create_publisher(Twist, "spacenav/twist", 10)
        joy_pub = node.create_publisher(Joy, "spacenav/joy", 10)
        wait_for(lambda: twist_pub.get_subscription_count() > 0 and len(actions) > 0, 30,
                 "the teleop node")
        time.sleep(0.5)
        twist = Twist()
        twist.linear.x = 1.0  # spacenav frame = behind the robot: +x forward
        for _ in range(5):
            twist_pub.publish(twist)
            time.sleep(0.1)
        wait_for(lambda: actions[-1][0] > 0.99, 5, "a full +x action")
        np.testing.assert_allclose(actions[-1][1:], 0.0, atol=1e-9)

        def press(button):
            for state in (1, 0):
                buttons = [0, 0]
                buttons[button] = state
                joy_pub.publish(Joy(buttons=buttons))
                time.sleep(0.15)

        wait_for(lambda: (press(0), "toggle" in episodes)[1], 10, "a record toggle")
        wait_for(lambda: (press(1), True in flags)[1], 10, "the violation flag")
    finally:
        client.close()
        assert proc.stop() == 0, proc.log()
