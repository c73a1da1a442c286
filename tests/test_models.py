"""The checkpoints shipped in models/ (``make demo`` starts from them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fosp.cli import build_parser, pretrain_config
from fosp.shipped import main as shipped_main
from fosp.shipped import recorded_commands, rerun_commands
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.learning.recipes import extract_settings
from fosp_core.learning.runs import load_agent, load_run_config
from fosp_core.util.config import dotted_overrides, merge, save_yaml
from tests.agent_helpers import tiny_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).parent.parent
MODELS = sorted(p for p in (REPO / "models").iterdir() if p.is_dir())


def test_the_demo_model_is_shipped() -> None:
    """The Makefile's MODEL (what ``make demo`` starts from) is one of the shipped models."""
    match = re.search(r"^MODEL \?= (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match and REPO / match.group(1) in MODELS


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.name)
def test_shipped_model_is_what_its_recorded_commands_train(model: Path, tmp_path: Path) -> None:
    """RETRAIN=1 reruns source.json's commands (pretraining, then perhaps extracting an
    actor): they must give the shipped config exactly."""
    source = json.loads((model / "source.json").read_text())
    commands = recorded_commands(model)
    assert commands[0][:2] == ["fosp", "pretrain"]
    args = build_parser().parse_args(commands[0][1:])
    config = pretrain_config(args)
    assert args.steps == source["step"]
    for argv in commands[1:]:
        assert argv[:2] == ["fosp", "extract"]
        args = build_parser().parse_args(argv[1:])
        save_yaml(config, tmp_path / "config.yaml")  # the run extract reads its recipe from
        _, _, overrides = extract_settings(args.recipe, tmp_path, None, None,
                                           dotted_overrides(args.set))
        config = merge(config, overrides)
    assert config == load_run_config(model)


def test_a_rerun_chains_the_recorded_commands_through_new_paths() -> None:
    commands = [["fosp", "pretrain", "--data", "data/real", "--steps", "9", "--out", "r/a"],
                ["fosp", "extract", "--run", "r/a", "--out", "r/b", "--seed", "1"]]
    assert rerun_commands(commands, "demo/data", "demo/model") == [
        ["fosp", "pretrain", "--data", "demo/data", "--steps", "9", "--out", "demo/model-1"],
        ["fosp", "extract", "--run", "demo/model-1", "--out", "demo/model", "--seed", "1"]]
    assert rerun_commands(commands[:1], "d", "o")[0][3::4] == ["d", "o"]
    with pytest.raises(ValueError, match="no --out"):
        rerun_commands([["fosp", "pretrain", "--data", "x"]], "d", "o")


def test_retrain_reruns_pretraining_and_extraction_on_new_data(tmp_path: Path) -> None:
    """What ``make demo RETRAIN=1`` runs, on a tiny config: both recorded commands, the
    extraction reading the run the pretraining wrote, and the final run in OUT."""
    save_yaml(tiny_config(), tmp_path / "tiny.yaml")
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "source.json").write_text(json.dumps({"step": 2, "commands": [
        f"fosp pretrain --data elsewhere --preset {tmp_path / 'tiny.yaml'} --steps 2 --out x",
        "fosp extract --run x --out y --updates 3 --set actor_critic.entropy=0.001"]}))
    data = write_dataset(tmp_path / "data", episodes=4)
    out = tmp_path / "demo" / "pretrained"
    assert shipped_main([str(model), "--rerun", str(data), str(out)]) == 0
    assert (tmp_path / "demo" / "pretrained-1" / "checkpoint.pt").is_file()
    assert load_run_config(out).actor_critic.entropy == 0.001
    assert json.loads((out / "extract.json").read_text())["updates"] == 3


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


def test_no_shipped_model_records_a_machine_path():
    for source in Path("models").glob("*/source.json"):
        text = source.read_text()
        assert "/work/" not in text and '"/' not in text, f"{source}: an absolute path"
