"""The safereach graph over DDS: policy -> shield -> twin -> learner -> new weights."""

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from std_msgs.msg import Float32MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger
from torch import nn

from fosp_core.data.dataset import load_dataset, trajectory_from_bytes
from fosp_core.learning.finetune import Learner, weights_from_bytes, weights_to_bytes
from fosp_core.learning.train import pretrain
from fosp_core.util.stats import rate_text
from fosp_ros.policy import LATCHED
from tests.agent_helpers import tb_scalars, tiny_config, write_dataset
from tests.ros_graph import REPO, NodeProcess, RosClient, new_domain_id, stop_all, wait_for


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("graph")
    data = write_dataset(root / "data", episodes=4)
    pretrain(data, root / "run", tiny_config(), steps=2, progress=False)
    config = yaml.safe_load((REPO / "config" / "safereach.yaml").read_text())
    config["env"]["episode_steps"] = 8  # short episodes keep the test quick
    (root / "graph.yaml").write_text(yaml.safe_dump(config))
    return root


def graph_config(tiny_run, name: str, episode_steps: int) -> str:
    """The test graph's YAML with longer episodes, written as ``name.yaml``; its path."""
    config = yaml.safe_load((tiny_run / "graph.yaml").read_text())
    config["env"]["episode_steps"] = episode_steps
    (tiny_run / f"{name}.yaml").write_text(yaml.safe_dump(config))
    return str(tiny_run / f"{name}.yaml")


def policy_graph(config: str, sim: dict | None = None, policy: dict | None = None) -> list:
    """sim_robot, franka_interface (the shield), labeler (the twin's contacts) and a policy
    that runs one episode: (module, parameters) for each node."""
    return [("fosp_ros.sim_robot", {"config": config, **(sim or {})}),
            ("fosp_ros.franka_interface", {"config": config}),
            ("fosp_ros.labeler", {"config": config, "source": "sim"}),
            ("fosp_ros.policy", {"config": config, "reset_service": "/fosp/sim/reset",
                                 "episodes": 1, **(policy or {})})]


def test_episode_trajectory_finetune_and_weights(tiny_run):
    domain = new_domain_id()
    config = str(tiny_run / "graph.yaml")
    run = tiny_run / "run"
    nodes = policy_graph(config, policy={"episodes": 3}) + [
        ("fosp_ros.learner", {"config": config, "run": str(run), "grad_steps": 2,
                              "set": '["fosp.online_actor_loss=safe_success", '
                                     '"fosp.online_hold_weight=0.5", '
                                     '"fosp.foresight_stop=1000", '
                                     '"fosp.foresight_veto=true"]'}),
    ]
    procs = [NodeProcess(module, domain, params, log_dir=tiny_run) for module, params in nodes]
    client = RosClient(domain)
    try:
        status: list[str] = []
        client.node.create_subscription(String, "/fosp/policy/status",
                                        lambda m: status.append(m.data), 10)
        weights: list[bytes] = []
        client.node.create_subscription(UInt8MultiArray, "/fosp/weights",
                                        lambda m: weights.append(bytes(m.data)), LATCHED)
        stored = run / "online" / "online_data"
        # A full episode runs, its trajectory reaches the learner and is on disk.
        wait_for(lambda: stored.is_dir() and any(stored.glob("traj_*.npz")), 90,
                 "the first trajectory on the learner's disk")
        dataset = load_dataset(stored, strict=True)
        arrays = dataset.trajectories[0].arrays
        assert len(arrays["action"]) == 9 and dataset.trajectories[0].behaviour == "policy"
        assert abs(arrays["action"][1:]).max() > 0  # the policy acted
        meta = dataset.trajectories[0].meta  # which of PEX's policies chose each action
        assert len(meta["policy"]) == 8 and set(meta["policy"]) <= {0, 1}
        assert sum(meta["policy"]) == meta["chosen"]["online"]
        assert "stopped_at" in meta and meta["stopped_at"] is None  # no cost reaches 1000
        assert meta["vetoed"] == {"offline": 0, "online": 0}  # nor drops a proposal
        assert "held_at" in meta
        # /fosp/finetune returns success with figures.
        reply = client.call(Trigger, "/fosp/finetune", timeout=60)
        assert reply.success, reply.message
        assert "steps=2" in reply.message and "loss=" in reply.message
        # ... and the learner's curves hold that round (OUT/tb, x = total gradient steps).
        total = int(re.search(r"total_steps=(\d+)", reply.message).group(1))
        lagrange = float(re.search(r" lagrange=(\S+)", reply.message).group(1))
        curve = dict(tb_scalars(run / "online" / "tb", "finetune/ac/lagrange"))
        assert curve[total] == pytest.approx(lagrange, rel=1e-3)
        # New weights reach the policy (after the automatic and the requested rounds).
        wait_for(lambda: any("weights of learner step" in s and "step 0 " not in s
                             for s in status), 30, "new weights at the policy")
        wait_for(lambda: any(s.startswith("episode 2") for s in status), 30, "a second episode")
        assert (run / "online" / "learner.pt").is_file()
        # The learner's 'set' overrides reach the policy with the weights.
        wait_for(lambda: weights, 10, "weights at the test client")
        fosp = weights_from_bytes(weights[-1])["config"]["fosp"]
        assert fosp["online_actor_loss"] == "safe_success"
        assert fosp["online_hold_weight"] == 0.5 and fosp["foresight_stop"] == 1000
        assert any("stopped_at=None" in s for s in status if s.startswith("episode 2"))
        # After its last episode (episodes=3) the policy sums them up, as an evaluation
        # on the robot needs: the counts of the three trajectories the learner stored.
        wait_for(lambda: any(s.startswith("3 episodes done:") for s in status), 60,
                 "the summary after the third episode")
        wait_for(lambda: len(load_dataset(stored).trajectories) == 3, 10, "3 on disk")
        done = [t.arrays for t in load_dataset(stored, strict=True).trajectories]
        successes = sum(bool(a["reward"].any()) for a in done)
        violations = sum(bool(a["cost"].any()) for a in done)
        summary = next(s for s in status if s.startswith("3 episodes done:"))
        assert f"success {rate_text(successes, 3)}, violating {rate_text(violations, 3)}" \
            in summary, summary
        time.sleep(0.2)
        for p in procs:
            assert p.proc.poll() is None, p.log()
    finally:
        client.close()
        stop_all(procs)


def pushing_weights(tiny_run, **fosp) -> UInt8MultiArray:
    """Weights whose two actors' most likely action is +x at a full step."""
    learner = Learner.from_run(tiny_run / "run", tiny_run / "data", pex=True,
                               overrides={"fosp": fosp})
    for actor in (learner.agent.actor_critic.actor, learner.offline_actor):
        with torch.no_grad():
            actor.mlp.out.weight.zero_()
            actor.mlp.out.bias.zero_()
            actor.mlp.out.bias[0] = 5.0
    return UInt8MultiArray(data=weights_to_bytes(learner.snapshot()))


def test_a_real_touch_through_the_graph_starts_the_hold(tiny_run):
    """sim_robot's contacts -> labeler -> policy: the arm drives into a target with nothing in
    between (``layout`` parameter) and holds still from the touch (fosp.hold_on_success)."""
    # The target is ~10 full steps ahead; the hand lags its target, and a loaded machine
    # slows it (measured beside two training runs: the touch at step 13 in one try, 21 in
    # another).
    config = graph_config(tiny_run, "touch", episode_steps=40)
    domain = new_domain_id()
    client = RosClient(domain)
    trajectories: list[bytes] = []
    client.node.create_subscription(UInt8MultiArray, "/fosp/trajectory",
                                    lambda m: trajectories.append(bytes(m.data)), 10)
    weights = client.node.create_publisher(UInt8MultiArray, "/fosp/weights", LATCHED)
    weights.publish(pushing_weights(tiny_run, hold_on_success=True))
    # Target 1 (the middle one) with obstacles 0 and 2 beside the straight line.
    nodes = policy_graph(config, sim={"layout": "[1, 0, 2]"}, policy={"deterministic": True})
    procs = [NodeProcess(module, domain, params, log_dir=tiny_run) for module, params in nodes]
    try:
        wait_for(lambda: trajectories, 120, "the episode's trajectory")
    finally:
        client.close()
        stop_all(procs)
    arrays, meta = trajectory_from_bytes(trajectories[0])
    touched = np.flatnonzero(arrays["reward"])
    assert touched.size and not arrays["cost"].any(), meta
    first, held = int(touched[0]), meta["held_at"]
    # The policy holds from the action after the first labelled touch it saw: the row's label,
    # or one tick later when the label crossed the tick.
    assert held in (first, first + 1), (first, held)
    assert np.all(arrays["action"][1:held + 1, 0] > 0.99)  # pushed all the way in
    assert not arrays["action"][held + 1:].any()
    drift = np.abs(arrays["pose"][held + 2:, :3] - arrays["pose"][held + 2, :3]).max()
    assert drift < 0.01, drift  # and the arm stays there


def test_the_policy_waits_while_its_input_is_stale(tiny_run):
    """sim_robot frozen mid-episode (SIGSTOP: the camera and robot streams stall): within
    ``ros.max_obs_age`` the policy stops acting on the frozen input, and once the streams
    run again the episode goes on to its full length."""
    config = graph_config(tiny_run, "stall", episode_steps=60)
    domain = new_domain_id()
    client = RosClient(domain)
    actions: list[float] = []  # arrival times
    status: list[str] = []
    trajectories: list[bytes] = []
    client.node.create_subscription(Float32MultiArray, "/fosp/action",
                                    lambda m: actions.append(time.monotonic()), 10)
    client.node.create_subscription(String, "/fosp/policy/status",
                                    lambda m: status.append(m.data), 10)
    client.node.create_subscription(UInt8MultiArray, "/fosp/trajectory",
                                    lambda m: trajectories.append(bytes(m.data)), 10)
    nodes = policy_graph(config, policy={"run": str(tiny_run / "run")})
    procs = [NodeProcess(module, domain, params, log_dir=tiny_run) for module, params in nodes]
    sim = procs[0].proc
    try:
        wait_for(lambda: len(actions) >= 5, 90, "the episode's first actions")
        sim.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            time.sleep(2.5)
        finally:
            sim.send_signal(signal.SIGCONT)
        thawed = time.monotonic()
        wait_for(lambda: trajectories, 60, "the episode's trajectory")
        wait_for(lambda: any(s.startswith("episode 1:") for s in status), 10,
                 "the episode's report")  # published just after the trajectory
    finally:
        client.close()
        stop_all(procs)
    max_age = yaml.safe_load(Path(config).read_text())["ros"]["max_obs_age"]
    # A tick already under way may still publish; nothing after that until the thaw.
    during = [t for t in actions if frozen + max_age + 0.5 < t < thawed]
    assert not during, (len(during), max_age)
    assert any(t > thawed for t in actions)
    arrays, _ = trajectory_from_bytes(trajectories[0])
    assert len(arrays["action"]) == 61  # every step of the episode, none lost to the stall
    report = next(s for s in status if s.startswith("episode 1:"))
    # About 20 ticks fall in the 2 s past max_obs_age at 10 Hz when the node runs on time
    # (20-22 measured alone), but a busy machine delays the timer and rclpy does not replay
    # missed ticks: a 2-core clean-clone suite once counted 7. The check above that no action
    # arrived is the safety property; this one asks that the node reported the wait.
    assert int(report.split("stale_ticks=", 1)[1].split()[0]) >= 3, report


def test_steps_the_shield_held_are_stored_as_what_the_arm_did(tiny_run):
    """With the shield stopped the policy still pushes +x, but the trajectory the learner gets
    holds zeros (franka_interface's executed actions) and counts the held steps."""
    config = str(tiny_run / "graph.yaml")
    domain = new_domain_id()
    client = RosClient(domain)
    trajectories: list[bytes] = []
    status: list[str] = []
    client.node.create_subscription(UInt8MultiArray, "/fosp/trajectory",
                                    lambda m: trajectories.append(bytes(m.data)), 10)
    client.node.create_subscription(String, "/fosp/policy/status",
                                    lambda m: status.append(m.data), 10)
    nodes = policy_graph(config, policy={"deterministic": True})
    procs = [NodeProcess(module, domain, params, log_dir=tiny_run) for module, params in nodes]
    try:
        assert client.call(Trigger, "/fosp/stop", timeout=30).success
        # Before the episode: the echo's publisher (franka_interface) and subscriber (policy)
        # must have found each other, or the first steps fall back to the policy's own action.
        wait_for(lambda: client.node.count_publishers("/fosp/action/executed") == 1
                 and client.node.count_subscribers("/fosp/action/executed") == 1, 30,
                 "the executed_action endpoints")
        time.sleep(1.0)  # let every pair of endpoints finish matching
        # The policy has no run: it starts its episode when these weights arrive.
        weights = client.node.create_publisher(UInt8MultiArray, "/fosp/weights", LATCHED)
        weights.publish(pushing_weights(tiny_run))
        wait_for(lambda: trajectories, 90, "the episode's trajectory")
        wait_for(lambda: any(s.startswith("episode 1:") for s in status), 10, "the report")
    finally:
        client.close()
        stop_all(procs)
    arrays, meta = trajectory_from_bytes(trajectories[0])
    assert len(arrays["action"]) == 9
    np.testing.assert_array_equal(arrays["action"], 0.0)
    assert np.abs(arrays["pose"][1:, :3] - arrays["pose"][1, :3]).max() < 0.005
    assert meta["shield_held"] == 8, meta
    assert "shield_held=8" in next(s for s in status if s.startswith("episode 1:"))


def test_a_restarted_learner_picks_up_its_state_and_every_stored_trajectory(tiny_run, tmp_path):
    # A stop between storing a trajectory and the next checkpoint: two stored, one saved.
    import rclpy
    from rclpy.parameter import Parameter

    from fosp_core.data.dataset import DatasetWriter
    from fosp_core.learning.runs import is_finetuned, load_run_config
    from fosp_ros.learner import LearnerNode
    from fosp_ros.policy import Policy

    run, out = tiny_run / "run", tmp_path / "online"
    stored = load_dataset(tiny_run / "data", strict=True).trajectories[:2]
    writer = DatasetWriter(out / "online_data")
    before = Learner.from_run(run, tiny_run / "data", seed=3)
    writer.add(stored[0].arrays, stored[0].meta)
    before.add_trajectory(stored[0].arrays)
    before.train(2)
    before.save(out / "learner.pt")
    writer.add(stored[1].arrays, stored[1].meta)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=new_domain_id())
    node = LearnerNode(context=context, parameter_overrides=[
        Parameter("run", value=str(run)), Parameter("out", value=str(out)),
        Parameter("auto_finetune", value=False)])
    try:
        learner = node.learner
        assert (learner.trajectories, learner.steps) == (2, 2)
        assert is_finetuned(out)  # with its config.yaml, `fosp eval --run OUT` evaluates it
        assert load_run_config(out) == learner.agent.config
        assert len(learner.replay) == 4 + 2  # the offline dataset and both stored
        saved = before.snapshot()
        for key, value in learner.snapshot()["agent"].items():
            assert torch.equal(value, saved["agent"][key]), key
        # The fine-tuned directory is also a run the policy node acts with, learner or not:
        # how a policy fine-tuned on the robot is run again without learning.
        policy = Policy(context=context, parameter_overrides=[
            Parameter("config", value=str(tiny_run / "graph.yaml")),
            Parameter("run", value=str(out)), Parameter("autostart", value=False)])
        try:
            acting = policy.policy
            modules = nn.Module.state_dict(acting.agent)
            for key, value in saved["agent"].items():
                assert torch.equal(modules[key], value), key
            offline = acting.offline_actor.state_dict()
            for key, value in saved["offline_actor"].items():
                assert torch.equal(offline[key], value), key
        finally:
            policy.destroy_node()
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=context)


def test_the_policy_drops_reports_of_actions_sent_before_its_episode(tiny_run):
    """A report of the previous episode's last action, handled after the reset, must not
    become the new episode's first executed action (it would shift every row by one)."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.task import Future
    from std_srvs.srv import Trigger

    from fosp_ros.conversions import array_to_msg
    from fosp_ros.policy import Policy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=new_domain_id())
    node = Policy(context=context, parameter_overrides=[
        Parameter("config", value=str(tiny_run / "graph.yaml")),
        Parameter("run", value=str(tiny_run / "run")), Parameter("autostart", value=False)])
    try:
        for key in ("image", "pose", "state"):
            node._set_obs(key, np.zeros(node.policy.config.state_dim if key == "state"
                                        else 6 if key == "pose" else (64, 64, 3), np.float32),
                          None)  # no message info: received now
        reset = Future()
        reset.set_result(Trigger.Response(success=True))
        node._on_reset_done(reset)
        assert node._episode is not None
        started = node._started_ns
        right, up = array_to_msg([0, 1, 0, 0, 0, 0]), array_to_msg([0, 0, 1, 0, 0, 0])
        node._on_executed(right, {"source_timestamp": started - 1_000_000})  # before: dropped
        node._on_executed(up, {"source_timestamp": started + 1_000_000})
        node._on_executed(up, None)  # no info (rclpy before Iron): counts
        rows = node._episode["rows"] + [{"action": np.ones(6, np.float32)} for _ in range(2)]
        assert node._executed_actions(rows) == 0
        np.testing.assert_array_equal([row["action"] for row in rows[1:]], [[0, 0, 1, 0, 0, 0]] * 2)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
