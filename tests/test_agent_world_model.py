"""fosp_core.agent.world_model: shapes, resets, the weighted cost loss, and that it learns."""

from __future__ import annotations

import math

import pytest
import torch

from fosp_core.agent.config import AgentConfig, cpu
from fosp_core.agent.world_model import Latent, WorldModel
from fosp_core.util.config import merge

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(obs_mode: str, **model: float) -> AgentConfig:
    sizes = {"deter": 32, "stoch": 4, "classes": 4, "hidden": 32, "mlp_layers": 1}
    return merge(cpu(), {"obs_mode": obs_mode, "model": {**sizes, "cnn_depth": 4, **model}})


def make_batch(config: AgentConfig, batch: int, length: int) -> dict[str, torch.Tensor]:
    data = {
        "action": torch.rand(batch, length, config.action_dim) * 2 - 1,
        "reward": (torch.rand(batch, length) < 0.3).float(),
        "cost": (torch.rand(batch, length) < 0.2).float(),
        "is_first": torch.zeros(batch, length, dtype=torch.bool),
    }
    data["action"][:, 0] = 0  # nothing led to the first observation
    data["is_first"][:, 0] = True
    if config.obs_mode == "image":
        size = config.image_size
        data["image"] = torch.randint(0, 256, (batch, length, size, size, 3), dtype=torch.uint8)
        data["pose"] = torch.randn(batch, length, config.pose_dim)
    else:
        data["state"] = torch.randn(batch, length, config.state_dim)
    return data


@pytest.mark.parametrize("obs_mode", ["image", "state"])
def test_loss_shapes_and_metrics(obs_mode: str) -> None:
    config = tiny(obs_mode)
    model = WorldModel(config)
    loss, metrics, posterior = model.loss(make_batch(config, 2, 3))
    assert loss.shape == () and torch.isfinite(loss)
    assert posterior.deter.shape == (2, 3, 32)
    assert posterior.stoch.shape == posterior.logits.shape == (2, 3, 4, 4)
    assert posterior.features().shape == (2, 3, model.feat_dim) and model.feat_dim == 32 + 16
    recon = {"image": ["image_loss", "pose_loss"], "state": ["state_loss"]}[obs_mode]
    for key in recon + ["reward_loss", "cost_loss", "continue_loss", "dyn_loss", "rep_loss"]:
        assert isinstance(metrics[key], float)
    assert metrics["loss"] == pytest.approx(loss.item())
    # Latents are one-hot samples (straight-through values equal the one-hot exactly).
    assert torch.allclose(posterior.stoch.sum(-1), torch.ones(2, 3, 4))
    if obs_mode == "image":
        assert model.image_decoder(posterior.features()).shape == (2, 3, 64, 64, 3)


def test_state_mode_takes_the_state_size() -> None:
    config = merge(tiny("state"), {"state_dim": 7})
    batch = make_batch(config, 2, 3)
    assert batch["state"].shape == (2, 3, 7)
    loss, _, _ = WorldModel(config).loss(batch)
    assert torch.isfinite(loss)


def test_imagine_shapes() -> None:
    config = tiny("state")
    model = WorldModel(config)
    _, _, posterior = model.loss(make_batch(config, 2, 3))
    start = posterior.detach().map(lambda t: t.flatten(0, 1))  # 6 starting states
    states, actions = model.imagine(lambda s: torch.tanh(s.features()[:, :6]), start, horizon=15)
    assert states.deter.shape == (16, 6, 32) and states.stoch.shape == (16, 6, 4, 4)
    assert actions.shape == (15, 6, 6)
    assert torch.equal(states.deter[0], start.deter)


def test_is_first_resets_the_state() -> None:
    config = tiny("state")
    model = WorldModel(config)
    first = make_batch(config, 2, 4)
    second = {key: value.clone() for key, value in first.items()}
    second["state"][:, :2] = torch.randn(2, 2, config.state_dim)  # a different past episode
    second["action"][:, :2] = torch.rand(2, 2, 6)
    first["is_first"][:, 2] = second["is_first"][:, 2] = True
    with torch.no_grad():
        post_a = model.loss(first)[2]
        post_b = model.loss(second)[2]
    # From t = 2 on the state was reset, so the past cannot show in h_2 or q(z_2).
    assert not torch.allclose(post_a.deter[:, 1], post_b.deter[:, 1])
    assert torch.allclose(post_a.deter[:, 2], post_b.deter[:, 2])
    assert torch.allclose(post_a.logits[:, 2], post_b.logits[:, 2])


def test_deployment_step_matches_training_filter() -> None:
    config = tiny("image")
    model = WorldModel(config)
    batch = make_batch(config, 2, 1)
    with torch.no_grad():
        posterior = model.loss(batch)[2]
        obs = {"image": batch["image"][:, 0], "pose": batch["pose"][:, 0]}
        state = model.observe_step(
            model.rssm.initial(2), torch.zeros(2, 6), obs, torch.ones(2, dtype=torch.bool)
        )
    assert torch.allclose(state.deter, posterior.deter[:, 0])
    assert torch.allclose(state.logits, posterior.logits[:, 0], atol=1e-6)


def test_cost_loss_weights_violations() -> None:
    config = tiny("state", cost_weight=10.0)
    model = WorldModel(config)
    batch = make_batch(config, 2, 4)
    batch["cost"] = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    with torch.no_grad():
        _, metrics, _ = model.loss(batch)
    # Fresh two-hot heads are uniform over 255 bins: every step costs -ln(1/255) = 5.541264.
    # Weights: one violation at 10, seven steps at 1 -> mean (10 + 7) / 8 = 2.125;
    # cost loss 2.125 * 5.541264 = 11.775186. The reward loss is unweighted: 5.541264.
    assert metrics["cost_loss"] == pytest.approx(2.125 * math.log(255), rel=1e-5)
    assert metrics["reward_loss"] == pytest.approx(math.log(255), rel=1e-5)
    # Free bits: each KL term is floored at 1 nat before its weight (0.5 and 0.1).
    assert metrics["dyn_loss"] >= 0.5 - 1e-6 and metrics["rep_loss"] >= 0.1 - 1e-6


@pytest.mark.parametrize("obs_mode, key", [("state", "state_loss"), ("image", "pose_loss")])
def test_vector_weight_scales_only_the_pose_or_state_reconstruction(obs_mode, key) -> None:
    config = tiny(obs_mode)
    batch = make_batch(config, 2, 3)
    metrics = {}
    for weight in (1.0, 10.0):
        torch.manual_seed(0)  # same weights and latent samples for both
        model = WorldModel(merge(config, {"model": {"vector_weight": weight}}))
        with torch.no_grad():
            metrics[weight] = model.loss(batch)[1]
    assert metrics[10.0][key] == pytest.approx(10 * metrics[1.0][key], rel=1e-5)
    for other in ("reward_loss", "cost_loss", "dyn_loss", "rep_loss"):
        assert metrics[10.0][other] == pytest.approx(metrics[1.0][other], rel=1e-6)


def test_latent_stack_and_map() -> None:
    a = Latent(torch.zeros(3, 2), torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    stacked = Latent.stack([a, a], 1)
    assert stacked.deter.shape == (3, 2, 2) and stacked.stoch.shape == (3, 2, 4, 4)
    assert stacked.map(lambda t: t[:, 0]).features().shape == (3, 2 + 16)


def test_world_model_learns_a_fixed_batch() -> None:
    config = tiny("state", deter=64, stoch=8, classes=8, hidden=64)
    model = WorldModel(config)
    batch = make_batch(config, 8, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=config.model.eps)
    losses, state_losses = [], []
    for _ in range(150):
        loss, metrics, _ = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.model.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        state_losses.append(metrics["state_loss"])
    # Seeds 0-2 go from ~34 to ~11 overall and ~12.7 to ~4.6 in reconstruction.
    initial, final = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert final < 0.6 * initial, (initial, final)
    # Not only the reward / cost heads: the decoder reads the state back out of the latents.
    assert sum(state_losses[-5:]) < 0.6 * sum(state_losses[:5]), state_losses
