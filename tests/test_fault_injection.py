"""Fault injection: SIGKILL (kill -9: no handler runs, nothing is flushed) at seeded random
points of collect, pretrain, finetune and the learner node. Afterwards what was finished is
whole, nothing is duplicated, and the same command again (or --resume) completes; where a
run never stopped gives a reference, the result is that run's, bit for bit."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
import torch

from fosp_core.data.dataset import load_dataset, load_index, trajectory_to_bytes
from fosp_core.util.config import save_yaml
from tests.agent_helpers import fosp_process, tiny_config, write_dataset

SEED = 20261206  # the kill points are random, and the same on every run of the suite


def kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 180.0) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds (or once it has
    exited, if it finishes first: then there is nothing to recover, which is fine too)."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, "never got to the kill point"
        time.sleep(0.02)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=60)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def same_tensors(a: dict, b: dict, where: str = "") -> None:
    for key, value in b.items():
        if isinstance(value, dict):
            same_tensors(a[key], value, f"{where}{key}.")
        elif isinstance(value, torch.Tensor):
            assert torch.equal(a[key], value), f"{where}{key}"


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    write_dataset(root / "data", episodes=4)
    save_yaml(tiny_config("state"), root / "tiny.yaml")
    return root


@pytest.mark.parametrize("attempt", range(2))
def test_collect_killed_then_rerun(attempt, rng, tmp_path):
    out = tmp_path / "data"
    command = ["collect", "--task", "safereach", "--episodes", "6", "--behaviour", "random",
               "--workers", "1", "--seed", str(attempt), "--out", str(out)]
    kill_when(fosp_process(*command), lambda: (out / "traj_000000.npz").exists(),
              float(rng.uniform(0.0, 1.5)))
    # Every file is whole, and the index lists each of them once.
    before = load_dataset(out, strict=True).trajectories
    assert len(load_index(out)) == len(before)
    finish(fosp_process(*command))
    after = load_dataset(out, strict=True).trajectories
    assert sorted(t.meta["intended"]["index"] for t in after) == list(range(6))
    assert [t.meta["seed"] for t in after[:len(before)]] == [t.meta["seed"] for t in before]
    assert len(load_index(out)) == 6


def test_pretrain_killed_then_resumed_ends_as_an_uninterrupted_run(rng, world, tmp_path):
    command = ["pretrain", "--data", str(world / "data"), "--preset", str(world / "tiny.yaml"),
               "--steps", "30", "--ckpt-every", "3"]
    finish(fosp_process(*command, "--out", str(tmp_path / "whole")))
    out = tmp_path / "killed"
    kill_when(fosp_process(*command, "--out", str(out)),
              lambda: (out / "checkpoint.pt").exists(), float(rng.uniform(0.0, 1.0)))
    saved = torch.load(out / "checkpoint.pt", weights_only=True)  # whole, weights only
    assert 3 <= saved["step"] <= 30
    finish(fosp_process(*command, "--out", str(out), "--resume"))
    got = torch.load(out / "checkpoint.pt", weights_only=True)
    want = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert got["step"] == want["step"] == 30
    same_tensors(got["agent"], want["agent"])


@pytest.fixture(scope="module")
def pretrained_tiny(world):
    from fosp_core.learning.train import pretrain

    pretrain(world / "data", world / "run", tiny_config("state"), steps=3, progress=False)
    return world / "run"


def test_finetune_killed_then_resumed_ends_as_an_uninterrupted_run(rng, world, pretrained_tiny,
                                                                   tmp_path):
    command = ["finetune", "--run", str(pretrained_tiny), "--data", str(world / "data"),
               "--task", "safereach-target-shape", "--grad-steps", "20", "--eval-episodes",
               "1", "--trajectories", "3"]
    finish(fosp_process(*command, "--out", str(tmp_path / "whole")))
    out = tmp_path / "killed"
    kill_when(fosp_process(*command, "--out", str(out)), lambda: (out / "learner.pt").exists(),
              float(rng.uniform(0.0, 2.0)))
    stored = load_dataset(out / "online_data", strict=True).trajectories
    torch.load(out / "learner.pt", weights_only=True)  # whole
    finish(fosp_process(*command, "--out", str(out), "--resume"))
    after = load_dataset(out / "online_data", strict=True).trajectories
    assert len(after) == 3 and len(stored) <= 3
    want = load_dataset(tmp_path / "whole" / "online_data", strict=True).trajectories
    for a, b in zip(after, want, strict=True):
        np.testing.assert_array_equal(a.arrays["action"], b.arrays["action"])
    same_tensors(torch.load(out / "learner.pt", weights_only=True)["agent"],
                 torch.load(tmp_path / "whole" / "learner.pt", weights_only=True)["agent"])


def test_the_learner_node_killed_while_training_restarts_with_what_it_stored(
        rng, world, pretrained_tiny, tmp_path):
    from std_msgs.msg import UInt8MultiArray
    from std_srvs.srv import Trigger

    from tests.ros_graph import NodeProcess, RosClient, new_domain_id, wait_for

    out = tmp_path / "online"
    params = {"run": str(pretrained_tiny), "data": str(world / "data"), "out": str(out),
              "grad_steps": 200}
    demos = load_dataset(world / "data", strict=True).trajectories
    domain = new_domain_id()
    node = NodeProcess("fosp_ros.learner", domain, params, log_dir=tmp_path)
    client = RosClient(domain)
    try:
        pub = client.node.create_publisher(UInt8MultiArray, "/fosp/trajectory", 10)
        wait_for(lambda: client.node.count_subscribers("/fosp/trajectory") > 0, 60,
                 "the learner's subscription")
        for demo in demos[:3]:
            pub.publish(UInt8MultiArray(data=trajectory_to_bytes(demo.arrays, demo.meta)))
        files = out / "online_data"
        wait_for(lambda: len(list(files.glob("traj_*.npz"))) >= 1, 60, "a stored trajectory")
        time.sleep(float(rng.uniform(0.0, 3.0)))  # in a round, saving, or storing the next
        node.proc.kill()
        node.proc.wait(timeout=30)
        stored = load_dataset(files, strict=True).trajectories  # every file whole
        assert 1 <= len(stored) <= 3
        if (out / "learner.pt").exists():
            torch.load(out / "learner.pt", weights_only=True)  # whole
        # The killed node never said goodbye: until its DDS lease runs out its service still
        # looks available on that domain, and a call could go to it alone. The restarted
        # learner gets a domain of its own.
        client.close()
        domain = new_domain_id()
        client = RosClient(domain)
        (tmp_path / "restarted").mkdir()
        node = NodeProcess("fosp_ros.learner", domain, dict(params, auto_finetune=False),
                           log_dir=tmp_path / "restarted")
        answer = client.call(Trigger, "/fosp/finetune", timeout=120)
        assert answer.success, answer.message
        assert f"trajectories={len(stored)}" in answer.message, answer.message
        assert f"{4 + len(stored)} trajectories in replay" in node.log()
    finally:
        client.close()
        code = node.stop()
        shutil.rmtree(out, ignore_errors=True)
    assert code == 0, node.log()
