"""train.precision: device and autocast choices, and a bf16 / fp16 train step that keeps its
distributions, losses and optimiser states in float32 (fosp_core.agent.precision)."""

from __future__ import annotations

import pytest
import torch

from fosp_core.agent.agent import Agent
from fosp_core.agent.precision import Precision, autocast_dtype, resolve_device
from fosp_core.agent.replay import SequenceReplay
from fosp_core.data.dataset import load_dataset
from fosp_core.util.config import merge
from tests.agent_helpers import tiny_config, write_dataset


@pytest.mark.parametrize("device, precision, bf16_supported, expected", [
    ("cpu", "fp32", True, None),
    ("cpu", "bf16", True, torch.bfloat16),
    ("cuda", "bf16", True, torch.bfloat16),
    ("cuda", "bf16", False, torch.float16),  # a GPU before Ampere: fp16 instead
    ("cuda", "fp16", True, torch.float16),
    ("cpu", "auto", True, torch.bfloat16),  # native bfloat16: use it
    ("cpu", "auto", False, None),  # emulated bfloat16 is slower than float32
    ("cuda", "auto", False, None),
])
def test_autocast_dtype(device, precision, bf16_supported, expected):
    assert autocast_dtype(device, precision, bf16_supported) == expected


def test_bad_precision_and_missing_gpu_are_one_line_errors():
    with pytest.raises(ValueError, match="train.precision must be one of"):
        autocast_dtype("cpu", "int8", True)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    data = load_dataset(write_dataset(tmp_path_factory.mktemp("data"), episodes=3), strict=True)
    config = tiny_config("image")
    replay = SequenceReplay(data.trajectories, config.batch_size, config.batch_length, "image",
                            seed=0)
    return replay.sample()


def agent(precision: str) -> Agent:
    torch.manual_seed(0)
    return Agent(merge(tiny_config("image"), {"train": {"precision": precision}}))


def test_a_bf16_step_matches_fp32_closely_and_keeps_float32_state(batch):
    fp32, bf16 = agent("fp32"), agent("bf16")
    torch.manual_seed(1)
    a = fp32.train_step(batch)
    torch.manual_seed(1)
    b = bf16.train_step(batch)
    # The same losses up to bfloat16's 3 significant digits (the first step, same weights).
    for key in ("model/loss", "model/image_loss", "model/reward_loss", "ac/critic_loss"):
        assert b[key] == pytest.approx(a[key], rel=0.03), key
    # Distributions and losses see float32; weights and Adam's moments stay float32.
    with bf16.precision.autocast():
        features = torch.zeros(4, bf16.world_model.feat_dim)
        assert bf16.world_model.reward_head(features).logits.dtype == torch.float32
        assert bf16.actor_critic.actor(features).mode.dtype == torch.float32
        assert bf16.world_model.image_decoder(features).dtype == torch.float32
    for opt in bf16.optimizers().values():
        for state in opt.state.values():
            assert state["exp_avg"].dtype == torch.float32
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in bf16.parameters())


def test_an_fp16_step_runs_with_its_gradient_scalers(batch):
    fp16 = agent("fp16")
    metrics = fp16.train_step(batch)
    assert torch.isfinite(torch.tensor(metrics["model/loss"]))
    assert len(fp16.precision._scalers) == len(fp16.optimizers())
    assert all(torch.isfinite(p).all() for p in fp16.parameters())


def test_batches_reach_the_device():
    moved = Precision(torch.device("cpu")).to_device({"x": torch.ones(2)})
    assert moved["x"].device.type == "cpu"
