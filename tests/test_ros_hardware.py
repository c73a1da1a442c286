"""A hardware rehearsal: the robot graph (use_sim:=false) against stand-ins that behave as the
upstream drivers do (tests/robot_standins.py): franka_ros2's state broadcaster (best-effort,
depth 1, 1 kHz; and the older reliable one), crisp_controllers' Cartesian impedance
controller on /target_pose, realsense-ros's color image. Real rclpy over DDS on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import yaml
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float32MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from fosp_core.data.dataset import trajectory_from_bytes
from fosp_core.learning.train import pretrain
from fosp_core.robot.geometry import Workspace
from fosp_ros.conversions import array_to_msg, pose_from_msg
from fosp_ros.graph import launch_plan
from fosp_ros.runtime import POSE_QOS
from tests.agent_helpers import tiny_config, write_dataset
from tests.robot_standins import POSE_TOPIC, REFLEX_STANDIN, TARGET_TOPIC
from tests.ros_graph import REPO, NodeProcess, RosClient, new_domain_id, stop_all, wait_for

WS = Workspace()


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hardware")
    data = write_dataset(root / "data", episodes=4)
    pretrain(data, root / "run", tiny_config("image"), steps=2, progress=False)
    config = yaml.safe_load((REPO / "config" / "safereach.yaml").read_text())
    config["env"]["episode_steps"] = 30
    config["ros"]["reflex"].update(REFLEX_STANDIN)
    (root / "graph.yaml").write_text(yaml.safe_dump(config))
    config["ros"]["reflex"]["confirm"] = True
    (root / "graph-confirm.yaml").write_text(yaml.safe_dump(config))
    return root


class Watch:
    """What the test sees of the robot side: the targets the controller got, the poses."""

    def __init__(self, client: RosClient):
        self.lock = threading.Lock()
        self.targets: list[np.ndarray] = []
        self.pose_at_target: list[np.ndarray] = []  # the arm's pose when each target came
        self.pose: np.ndarray | None = None
        self.poses = 0
        self.status: list[str] = []
        node = client.node
        node.create_subscription(PoseStamped, TARGET_TOPIC, self._on_target, 100)
        node.create_subscription(PoseStamped, POSE_TOPIC, self._on_pose, POSE_QOS)
        node.create_subscription(String, "/fosp/policy/status",
                                 lambda m: self.status.append(m.data), 10)

    def _on_target(self, msg):
        with self.lock:
            if self.pose is not None:
                self.targets.append(pose_from_msg(msg))
                self.pose_at_target.append(self.pose)

    def _on_pose(self, msg):
        pose = pose_from_msg(msg)
        with self.lock:
            self.pose = pose
            self.poses += 1


def robot_nodes(config: str, run: str) -> list[tuple[str, dict]]:
    """The safereach graph with use_sim:=false and camera:=none (the realsense-ros stand-in
    publishes the images), as the launch file plans it, minus the learner."""
    nodes, choices = launch_plan("safereach", {
        "use_sim": "false", "config": config, "run": run, "data": "", "task": "",
        "with_learner": "false", "policy_run": run, "camera": "none", "controller": ""})
    assert not choices["use_sim"]
    result = [(spec.module, params) for spec, params in nodes]
    assert [m for m, _ in result] == ["fosp_ros.franka_interface", "fosp_ros.labeler",
                                      "fosp_ros.policy"]
    for module, params in result:
        if module == "fosp_ros.policy":
            params.update(episodes=2, wait_for_weights=False)
    return result


def test_episodes_on_the_robot_graph_against_the_upstream_drivers(image_run, tmp_path):
    domain = new_domain_id()
    config, run = str(image_run / "graph.yaml"), str(image_run / "run")
    # FOSP_TEST_POSE_RATE=10 gives the same run at the sim's pose rate, for comparison.
    rate = float(os.environ.get("FOSP_TEST_POSE_RATE", 1000))
    procs = [NodeProcess("tests.robot_standins", domain, {"pose_rate": rate}, log_dir=tmp_path)]
    procs += [NodeProcess(module, domain, params, log_dir=tmp_path)
              for module, params in robot_nodes(config, run)]
    client = RosClient(domain)
    busy: list[subprocess.Popen] = []
    try:
        watch = Watch(client)
        wait_for(lambda: any("2 episodes done" in s for s in watch.status), 180,
                 "two episodes of the policy on the robot graph")
        # The best-effort 1 kHz pose reached the nodes: the episodes ran, and no tick waited
        # for a stale pose.
        reports = [s for s in watch.status if s.startswith("episode ")]
        assert len(reports) == 2, watch.status
        figures = dict(re.findall(r"(\w+)=([\d.]+)", reports[-1]))
        print(f"\npose {watch.poses} received; policy step p50 {figures['step_ms_p50']} ms, "
              f"p99 {figures['step_ms_p99']} ms, late ticks {figures['late_ticks']}, "
              f"stale ticks {figures['stale_ticks']}")
        with watch.lock:
            targets = np.array(watch.targets)
            poses = np.array(watch.pose_at_target)
        assert len(targets) > 20
        # The shield's box and step limit hold for every target the controller received: in
        # the box, and one step at most from where the arm was. This test's view of the pose
        # is one pose message off the shield's at most: 5 mm of slack for the arm's motion in
        # a millisecond or two at 1 kHz; at 10 Hz a pose is up to a control step old, so one
        # more step.
        slack = 0.005 + (0.0 if rate >= 100 else max(WS.max_step[:3]))
        assert np.all(targets >= np.array(WS.low) - 1e-9)
        assert np.all(targets <= np.array(WS.high) + 1e-9)
        assert np.all(np.abs(targets[:, :3] - poses[:, :3]) <= np.array(WS.max_step[:3])
                      + slack)

        # /fosp/stop under CPU load holds the target exactly still.
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        actions = client.node.create_publisher(Float32MultiArray, "/fosp/action", 10)
        assert client.call(Trigger, "/fosp/stop").success
        time.sleep(0.3)
        with watch.lock:
            watch.targets.clear()
        for _ in range(20):
            actions.publish(array_to_msg([0, 1, 0, 0, 0, 0]))
            time.sleep(0.1)
        with watch.lock:
            held = list(watch.targets)
        assert len(held) >= 5, "no target while stopped"
        assert all(np.array_equal(t, held[0]) for t in held), np.ptp(np.array(held), axis=0)
        assert client.call(Trigger, "/fosp/resume").success
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
        client.close()
        stop_all(procs)


def test_an_old_reliable_pose_publisher_still_reaches_the_shield(image_run, tmp_path):
    """franka_ros2 before v2.4.0 / v3.3.0 published current_pose reliable: a best-effort
    subscriber matches it too."""
    domain = new_domain_id()
    config = str(image_run / "graph.yaml")
    procs = [NodeProcess("tests.robot_standins", domain,
                         {"pose_rate": 100.0, "pose_reliable": True}, log_dir=tmp_path),
             NodeProcess("fosp_ros.franka_interface", domain, {"config": config},
                         log_dir=tmp_path)]
    client = RosClient(domain)
    try:
        status: list[str] = []
        client.node.create_subscription(String, "/fosp/shield_status",
                                        lambda m: status.append(m.data), 10)
        wait_for(lambda: status[-3:] == ["hold"] * 3, 60,
                 "the shield holding the arm at its pose, tick after tick")
    finally:
        client.close()
        stop_all(procs)


def test_a_reflex_is_recovered_by_the_next_reset_and_marks_its_trajectory(image_run, tmp_path):
    """A reflex in episode 1: the shield holds the arm where it stands, the policy marks the
    trajectory (the reflex's row costs 1), the reset calls error recovery (aborted once, as
    franka_hardware does when libfranka's recovery throws; tried again), then episode 2 runs
    on a moving arm."""
    domain = new_domain_id()
    config, run = str(image_run / "graph.yaml"), str(image_run / "run")
    procs = [NodeProcess("tests.robot_standins", domain,
                         {"pose_rate": 200.0, "recovery_failures": 1}, log_dir=tmp_path)]
    procs += [NodeProcess(module, domain, params, log_dir=tmp_path)
              for module, params in robot_nodes(config, run)]
    client = RosClient(domain)
    try:
        watch = Watch(client)
        events, shield, trajectories = [], [], []
        node = client.node
        node.create_subscription(String, "/robot_standin/events",
                                 lambda m: events.append(m.data), 10)
        node.create_subscription(String, "/fosp/shield_status",
                                 lambda m: shield.append(m.data), 100)
        node.create_subscription(UInt8MultiArray, "/fosp/trajectory",
                                 lambda m: trajectories.append(bytes(m.data)), 10)
        wait_for(lambda: shield.count("action") >= 5, 120, "episode 1 driving the arm")
        assert client.call(Trigger, "/robot_standin/reflex").success
        wait_for(lambda: "reflex" in shield, 10, "the shield holding for the reflex")
        wait_for(lambda: any("2 episodes done" in s for s in watch.status), 180,
                 "episode 2 after error recovery")
        assert events == ["reflex", "recovery aborted", "recovered"], events
        reports = [s for s in watch.status if s.startswith("episode ")]
        assert ["reflex=True" in r for r in reports] == [True, False], reports
        assert any("reset refused, asking again" in s for s in watch.status), watch.status
        first_arrays, first_meta = trajectory_from_bytes(trajectories[0])
        second_arrays, second_meta = trajectory_from_bytes(trajectories[1])
        assert first_meta["reflex_at"] is not None and second_meta["reflex_at"] is None
        assert first_arrays["cost"][first_meta["reflex_at"]] == 1.0
        assert shield.index("reflex") < len(shield) - shield[::-1].index("action") - 1, \
            "the arm never moved again after the recovery"
    finally:
        client.close()
        stop_all(procs)


def test_with_confirm_the_reset_waits_for_the_operator(image_run, tmp_path):
    domain = new_domain_id()
    procs = [NodeProcess("tests.robot_standins", domain, {"pose_rate": 200.0}, log_dir=tmp_path),
             NodeProcess("fosp_ros.franka_interface", domain,
                         {"config": str(image_run / "graph-confirm.yaml")}, log_dir=tmp_path)]
    client = RosClient(domain)
    try:
        shield: list[str] = []
        client.node.create_subscription(String, "/fosp/shield_status",
                                        lambda m: shield.append(m.data), 100)
        wait_for(lambda: "hold" in shield, 60, "the shield holding the arm")
        assert client.call(Trigger, "/fosp/home").message == "homing"
        assert client.call(Trigger, "/robot_standin/reflex").success
        wait_for(lambda: shield[-1:] == ["reflex"], 10, "the shield holding for the reflex")
        for _ in range(3):  # however often the policy asks, nothing happens without the operator
            answer = client.call(Trigger, "/fosp/home")
            assert not answer.success and "call /fosp/recover" in answer.message, answer.message
        assert client.call(Trigger, "/fosp/recover").success
        answer = client.call(Trigger, "/fosp/home")
        assert not answer.success and "calling error recovery" in answer.message
        wait_for(lambda: client.call(Trigger, "/fosp/home").message == "homing", 10,
                 "homing once error recovery has succeeded")
        wait_for(lambda: shield[-1:] in (["homing"], ["hold"]), 10, "the arm homing")
    finally:
        client.close()
        stop_all(procs)
