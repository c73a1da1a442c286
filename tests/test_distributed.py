"""fosp pretrain under torchrun: 2 gloo processes on CPU end with identical weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fosp_core.learning.runs import load_checkpoint
from fosp_core.util.config import save_yaml
from tests.agent_helpers import tiny_config, write_dataset
from tests.ros_graph import REPO


def test_two_gloo_ranks_finish_with_identical_weights(tmp_path):
    data = write_dataset(tmp_path / "data", episodes=4)
    config = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(), config)
    run = tmp_path / "run"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "fosp.cli",
         "pretrain", "--data", str(data), "--preset", str(config), "--steps", "4",
         "--out", str(run), "--ckpt-every", "2"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((run / "ddp.json").read_text())
    assert record["world_size"] == 2
    assert record["weight_checksums"][0] == record["weight_checksums"][1]
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] == 4
    # the saved weights are the replicas' weights
    total = sum(v.double().sum().item() for k, v in checkpoint["agent"]["modules"].items()
                if k in dict(_parameter_names(run)))
    assert abs(total - record["weight_checksums"][0]) < 1e-6 * max(1.0, abs(total))


def _parameter_names(run):
    from fosp_core.agent.agent import Agent
    from fosp_core.learning.runs import load_run_config

    agent = Agent(load_run_config(run))
    return [(name, None) for name, _ in agent.named_parameters()]


