"""The checkpoints shipped in models/ (``make demo`` starts from them)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from fosp_core.cli import build_parser, pretrain_config
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.train import load_agent, load_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = sorted(p for p in (Path(__file__).parent.parent / "models").iterdir() if p.is_dir())
DEMO_MODEL = "fosp-safereach-state"  # the Makefile's MODEL


def test_the_demo_model_is_shipped() -> None:
    assert DEMO_MODEL in [p.name for p in MODELS]


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_shipped_model_is_what_its_recorded_command_trains(model: Path) -> None:
    """RETRAIN=1 reruns source.json's command: it must give the shipped config exactly."""
    source = json.loads((model / "source.json").read_text())
    argv = shlex.split(source["command"])
    assert argv[:2] == ["fosp", "pretrain"]
    args = build_parser().parse_args(argv[1:])
    assert pretrain_config(args) == load_run_config(model)
    assert args.steps == source["step"]


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_shipped_model_loads_without_pickle_and_acts(model: Path) -> None:
    torch.load(model / "checkpoint.pt", map_location="cpu", weights_only=True)
    agent, _ = load_agent(model)
    config = agent.config
    env = SafeReachEnv("safereach", obs_mode=config.obs_mode)
    obs, _ = env.reset(seed=0)
    agent.reset()
    actions = []
    for _ in range(3):
        action = agent.act(obs)
        actions.append(action)
        obs, *_ = env.step(action)
    env.close()
    actions = np.stack(actions)
    assert actions.shape == (3, config.action_dim)
    assert np.isfinite(actions).all() and np.abs(actions).max() <= 1.0
    assert np.abs(actions).max() > 1e-3  # a trained actor moves the arm
