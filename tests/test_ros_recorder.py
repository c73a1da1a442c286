"""Recording demonstrations through the ROS graph (sim robot, shield, labeler, recorder)."""

import signal
import time

import numpy as np
import yaml
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from fosp_core.data.dataset import load_dataset, read_trajectory
from fosp_ros.conversions import array_to_msg
from tests.ros_graph import REPO, NodeProcess, RosClient, new_domain_id, stop_all, wait_for

EPISODE_STEPS = 15


def test_recorder_writes_episodes_and_survives_a_kill(tmp_path):
    domain = new_domain_id()
    out = tmp_path / "demos"
    # Episodes end by themselves after env.episode_steps: with 15, the first episode's length
    # is fixed by the action stream alone. A "stop" on its own topic could overtake actions
    # still queued in a recorder that lags (CI saw a 5-step episode for 15 actions).
    config = yaml.safe_load((REPO / "config" / "safereach.yaml").read_text())
    config["env"]["episode_steps"] = EPISODE_STEPS
    (tmp_path / "graph.yaml").write_text(yaml.safe_dump(config))
    recorder = {"out": str(out), "config": str(tmp_path / "graph.yaml")}
    procs = {name: NodeProcess(f"{pkg}.{name}", domain, params, log_dir=tmp_path)
             for pkg, name, params in [
                 ("fosp_ros", "sim_robot", {}),
                 ("fosp_ros", "franka_interface", {}),
                 ("fosp_ros", "labeler", {"source": "sim"}),
                 ("fosp_teleop", "recorder", recorder),
             ]}
    client = RosClient(domain)
    try:
        node = client.node
        status: list[str] = []
        node.create_subscription(String, "/fosp/record/status", lambda m: status.append(m.data),
                                 10)
        episode = node.create_publisher(String, "/fosp/episode", 10)
        actions = node.create_publisher(Float32MultiArray, "/fosp/action", 10)
        wait_for(lambda: episode.get_subscription_count() > 0
                 and actions.get_subscription_count() > 0
                 and node.count_subscribers("/fosp/action/executed") > 0, 30,
                 "franka_interface and recorder")
        right = [0, 1, 0, 0, 0, 0]

        def record(action, steps):
            status.clear()

            def started():
                # "start" is idempotent; resend it in case the first one raced DDS matching
                episode.publish(String(data="start"))
                time.sleep(0.2)
                return any(s.startswith("recording") for s in status)

            wait_for(started, 10, "start")
            for _ in range(steps):
                actions.publish(array_to_msg(action))
                time.sleep(0.1)

        # Warm up until actions reach the arm (franka_interface and sim_robot may still be
        # discovering each other). Warm-up actions still in flight at "start" are recorded too,
        # so they are the same as the recorded ones.
        moved = []
        node.create_subscription(Float32MultiArray, "/fosp/sim/state",
                                 lambda m: moved.append(m.data[1]), 10)
        wait_for(lambda: len(moved) > 0, 30, "the sim state")
        start_y = moved[-1]
        deadline = time.monotonic() + 20
        while moved[-1] - start_y <= 0.01 and time.monotonic() < deadline:
            actions.publish(array_to_msg(right))
            time.sleep(0.1)
        time.sleep(0.5)
        # More actions than the episode holds: the recorder saves after EPISODE_STEPS of them
        # and ignores the rest.
        record(right, EPISODE_STEPS + 5)
        wait_for(lambda: any(s.startswith("saved") for s in status), 10, "the first save")
        first = out / "traj_000000.npz"
        arrays, meta = read_trajectory(first)
        assert len(arrays["action"]) == EPISODE_STEPS + 1  # row 0 holds the first observation
        assert meta["behaviour"] == "teleop" and meta["state_available"] is True
        assert not arrays["action"][0].any()
        # The recorded actions are the ones sent, and the arm moved sideways meanwhile.
        assert np.allclose(arrays["action"][1:], right)
        assert arrays["pose"][-1, 1] - arrays["pose"][0, 1] > 0.05
        assert arrays["image"].shape[1:] == (64, 64, 3) and arrays["image"].std() > 0
        # state and pose arrive on separate topics, and each row holds the latest of each, so a
        # row may pair them a step or two apart, and a loaded machine may deliver one pose late
        # enough that no row holds it (CI saw rows 1 and 2 with the same pose and row 1's state
        # the skipped pose between them). Every recorded state must still lie on the arm's path
        # through the poses of the rows around it, and the state must follow the arm sideways.
        state, pose = arrays["state"][:, :3], arrays["pose"][:, :3]
        for i, position in enumerate(state):
            nearby = pose[max(0, i - 3):i + 4]
            # Row 0 has no earlier row to hold the pose its state may lag (CI saw the state one
            # 2 cm step behind there): within a step of the arm's first recorded poses.
            margin = 0.025 if i == 0 else 0.002
            low, high = nearby.min(axis=0) - margin, nearby.max(axis=0) + margin
            assert np.all((low <= position) & (position <= high)), (i, position, nearby)
        assert state[-1, 1] - state[0, 1] > 0.05

        # Second episode, with the shield stopped: the operator pushes left, the arm holds,
        # and the recorder stores what the arm did (zeros), not what was asked.
        assert client.call(Trigger, "/fosp/stop").success
        time.sleep(1.0)  # the step under way when the stop came ends
        record([0, -1, 0, 0, 0, 0], EPISODE_STEPS + 5)
        wait_for(lambda: (out / "traj_000001.npz").exists(), 10, "the second save")
        arrays, _ = read_trajectory(out / "traj_000001.npz")
        assert len(arrays["action"]) == EPISODE_STEPS + 1
        np.testing.assert_array_equal(arrays["action"], 0.0)
        assert abs(arrays["pose"][-1, 1] - arrays["pose"][0, 1]) < 0.005
        assert client.call(Trigger, "/fosp/resume").success

        # Third episode: kill -9 the recorder half-way; the saved files must be untouched.
        saved = sorted(p.name for p in out.glob("traj_*"))
        assert saved == ["traj_000000.npz", "traj_000001.npz"]
        before = first.read_bytes()
        record([0, -1, 0, 0, 0, 0], 8)
        procs["recorder"].proc.send_signal(signal.SIGKILL)
        procs["recorder"].proc.wait(10)
        dataset = load_dataset(out, strict=True)
        assert len(dataset) == 2 and dataset.errors == []
        assert first.read_bytes() == before
        assert sorted(p.name for p in out.glob("traj_*")) == saved
    finally:
        client.close()
        procs["recorder"].stop()  # killed on purpose: its exit code is -9
        stop_all([p for name, p in procs.items() if name != "recorder"])


def test_recorder_drops_actions_carried_out_before_its_episode_started(tmp_path):
    # A recorder that lags may handle "start" before the previous episode's last executed
    # actions (the multi-threaded executor takes callbacks in any order): those must not
    # become the new episode's first steps. CI once saw three of them in a stopped episode.
    import rclpy
    from rclpy.parameter import Parameter

    from fosp_teleop.recorder import Recorder

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=new_domain_id())
    node = Recorder(context=context, parameter_overrides=[
        Parameter("out", value=str(tmp_path / "demos"))])
    try:
        node._image, node._pose = np.zeros((64, 64, 3), np.uint8), np.zeros(6, np.float32)
        assert node.start() == "recording"
        started = node._started_ns
        right = array_to_msg([0, 1, 0, 0, 0, 0])
        node._on_action(right, {"source_timestamp": started - 1_000_000})  # before: dropped
        node._on_action(right, {"source_timestamp": started + 1_000_000})  # after: a step
        node._on_action(right, None)  # no info (rclpy before Iron): a step
        node._on_action(right, {"source_timestamp": 0})  # no stamp: a step
        assert node.stop().startswith("saved")
        arrays, _ = read_trajectory(tmp_path / "demos" / "traj_000000.npz")
        assert len(arrays["action"]) == 1 + 3
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
