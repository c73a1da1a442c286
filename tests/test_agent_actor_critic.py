"""fosp_core.agent.actor_critic and agent: eq. 7 / 9-11 pieces, every algo, ablation flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fosp_core.agent.actor_critic import (
    ActorCritic,
    critic_nll,
    dataset_pairs,
    obstacle_set_input,
    offline_advantages,
    one_step_targets,
    symlog_expectile_loss,
)
from fosp_core.agent.agent import Agent, VectorNormalizer
from fosp_core.agent.config import ALGOS
from fosp_core.agent.math import symexp, symlog, symlog_bins
from fosp_core.agent.networks import TwoHotDist
from fosp_core.agent.replay import SequenceReplay
from tests.agent_helpers import make_trajectory, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def replay_for(config, episodes: int = 4) -> SequenceReplay:
    trajectories = [make_trajectory(seed) for seed in range(episodes)]
    return SequenceReplay(
        trajectories, config.batch_size, config.batch_length, config.obs_mode, seed=0
    )


# --------------------------------------------------------------------------------------------
# The dataset regulariser of eq. 10 and its pairing with Dreamer rows, by hand.


def test_dataset_pairs_shift_rows_and_drop_pairs_across_resets() -> None:
    features = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)  # row id as feature
    batch = {
        "action": torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 6) / 100,
        "reward": torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 5.0, 6.0, 7.0]]),
        "cost": torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]),
        "is_first": torch.tensor([[True, False, False, False], [True, False, True, False]]),
    }
    pairs = dataset_pairs(features, batch, actor_input=10 * features)
    # Row 2 of the second sequence starts an episode, so (row 1 -> row 2) is not a transition.
    assert pairs["state"].squeeze(-1).tolist() == [0, 1, 2, 4, 6]
    assert pairs["actor_input"].squeeze(-1).tolist() == [0, 10, 20, 40, 60]
    assert pairs["next_state"].squeeze(-1).tolist() == [1, 2, 3, 5, 7]
    assert pairs["reward"].tolist() == [1, 2, 3, 5, 7]
    assert pairs["cost"].tolist() == [0, 1, 0, 1, 0]
    assert torch.equal(pairs["action"][0], batch["action"][0, 1])
    assert torch.equal(pairs["action"][3], batch["action"][1, 1])


def test_eq10_target_and_loss_by_hand() -> None:
    reward = torch.tensor([1.0, 0.0, 2.0])
    next_value = torch.tensor([0.5, -1.0, 3.0])
    target = one_step_targets(reward, next_value, 0.9)
    assert target.tolist() == pytest.approx([1.45, -0.9, 4.7])

    bins = symlog_bins(255)
    logits = torch.randn(3, 255)
    loss = critic_nll(TwoHotDist(logits, bins), target)
    by_hand = 0.0
    for i in range(3):
        # -ln p(target) of a two-hot head: cross-entropy with the two-hot of symlog(target).
        x = math.copysign(math.log1p(abs(target[i].item())), target[i].item())
        k = int(torch.searchsorted(bins, torch.tensor(x), right=True)) - 1
        w_hi = (x - bins[k].item()) / (bins[k + 1] - bins[k]).item()
        log_p = logits[i].log_softmax(-1)
        by_hand -= (1 - w_hi) * log_p[k].item() + w_hi * log_p[k + 1].item()
    assert loss.item() == pytest.approx(by_hand / 3, rel=1e-5)
    # A fresh head (zero output layer) is uniform: the loss is ln 255 for every target.
    assert critic_nll(TwoHotDist(torch.zeros(3, 255), bins), target).item() == pytest.approx(
        math.log(255)
    )


def test_eq10_loss_in_an_update_is_the_one_step_target_loss() -> None:
    config = tiny_config()
    agent = Agent(config)
    ac = agent.actor_critic
    batch = replay_for(config).sample()
    _, _, posterior = agent.world_model.loss(batch)
    features = posterior.detach().features()
    data = dataset_pairs(features, batch, features)
    with torch.no_grad():
        next_value = ac.slow_critics["v_reward"](data["next_state"]).mean()
        target = data["reward"] + config.actor_critic.discount * next_value
        q = ac.critics["q_reward"](torch.cat([data["state"], data["action"]], -1))
        expected = critic_nll(q, target).item()
    torch.manual_seed(1)
    metrics = ac.update(agent.world_model, posterior, batch)
    assert metrics["q_reward_data_loss"] == pytest.approx(expected, rel=1e-6)


def test_offline_advantages_by_hand() -> None:
    q_r, v_r = torch.tensor([3.0, 2.0]), torch.tensor([2.0, 2.0])
    q_c, v_c = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    penalty = torch.tensor([0.1, -0.1])
    # Raw: A^r = [3 - 2 - 0.1, 2 - 2 + 0.1] = [0.9, 0.1], A^c = [0.5, -0.5].
    adv_r, adv_c = offline_advantages(q_r, v_r, q_c, v_c, penalty, None, center=False)
    assert adv_r.tolist() == pytest.approx([0.9, 0.1])
    assert adv_c.tolist() == pytest.approx([0.5, -0.5])
    # Scaled by (2, 0.5): [0.45, 0.05] and [1, -1].
    scales = (torch.tensor(2.0), torch.tensor(0.5))
    adv_r, adv_c = offline_advantages(q_r, v_r, q_c, v_c, penalty, scales, center=False)
    assert adv_r.tolist() == pytest.approx([0.45, 0.05])
    assert adv_c.tolist() == pytest.approx([1.0, -1.0])
    # Centred: minus the batch means 0.5 and 0: [0.4, -0.4] and [0.5, -0.5].
    adv_r, adv_c = offline_advantages(q_r, v_r, q_c, v_c, penalty, None, center=True)
    assert adv_r.tolist() == pytest.approx([0.4, -0.4])
    assert adv_c.tolist() == pytest.approx([0.5, -0.5])


# --------------------------------------------------------------------------------------------
# Eq. 7: which side the expectile leans to.


def test_symlog_expectile_makes_v_an_upper_expectile_of_q() -> None:
    bins = symlog_bins(255)
    q = torch.tensor([0.0, 0.0, 0.0, 4.0])  # mean 1; upper 0.8-expectile (in symlog) above it
    values = {}
    for kappa in (0.2, 0.5, 0.8):
        logits = torch.zeros(255, requires_grad=True)
        opt = torch.optim.Adam([logits], lr=0.05)
        for _ in range(400):
            loss = symlog_expectile_loss(q, TwoHotDist(logits.expand(4, 255), bins), kappa)
            opt.zero_grad()
            loss.backward()
            opt.step()
        values[kappa] = (logits.softmax(-1) * bins).sum().item()
    mean_symlog = symlog(q).mean().item()
    # kappa = 0.5 is the mean (in symlog space); 0.8 lies above it and 0.2 below.
    assert values[0.5] == pytest.approx(mean_symlog, abs=0.02)
    assert values[0.2] < mean_symlog - 0.1 < mean_symlog + 0.1 < values[0.8]
    # Closed form of the 0.8-expectile of {0, 0, 0, s}: 0.8 * (s - v) = 3 * 0.2 * v.
    s = symlog(torch.tensor(4.0)).item()
    assert values[0.8] == pytest.approx(0.8 * s / (0.8 + 0.6), abs=0.02)
    assert symexp(torch.tensor(values[0.8])).item() > q.mean().item()


# --------------------------------------------------------------------------------------------
# Every variant runs, and the ablation flags change what is trained.


def test_mode_latent_input_feeds_the_actor_the_most_likely_classes() -> None:
    config = tiny_config(actor_critic={"latent_input": "mode"})
    agent = Agent(config)
    batch = replay_for(config).sample()
    _, _, posterior = agent.world_model.loss(batch)
    inputs = agent.actor_critic.inputs(posterior.detach())
    stoch = inputs[..., config.model.deter :].view(*inputs.shape[:-1], 4, 4)
    assert torch.equal(stoch.argmax(-1), posterior.logits.argmax(-1))
    assert torch.equal(stoch.sum(-1), torch.ones_like(stoch.sum(-1)))  # one-hot per latent
    assert torch.equal(inputs[..., : config.model.deter], posterior.deter.detach())
    # The deployed agent reads the same input as training, also when it samples the latent.
    agent.reset()
    features = agent.observe({"state": np.zeros(config.state_dim, np.float32)}, False)
    assert torch.equal(features, agent._latent.mode_features())
    with pytest.raises(ValueError, match="latent_input"):
        tiny_config(actor_critic={"latent_input": "mean"})


def test_observation_actor_input_reads_the_state_and_in_imagination_its_reconstruction() -> None:
    config = tiny_config(actor_critic={"actor_input": "observation"})
    agent = Agent(config)
    ac = agent.actor_critic
    assert ac.actor.mlp.body[0].in_features == config.state_dim
    seen: list[torch.Tensor] = []
    ac.actor.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    batch = replay_for(config).sample()
    batch["state"] = batch["state"] * 3 + 1  # the update reads whatever state it is given
    _, _, posterior = agent.world_model.loss(batch)
    torch.manual_seed(1)
    ac.update(agent.world_model, posterior, batch)
    # Imagination: H actor calls, the first on the decoded start states s^0 = the posteriors.
    assert len(seen) == config.actor_critic.horizon + 1
    with torch.no_grad():
        decoded = agent.world_model.state_decoder(posterior.features().flatten(0, 1))
    assert torch.allclose(seen[0], decoded, atol=1e-6)
    # Eq. 19: the dataset rows' own states, in the decoder's (symlog) space.
    valid = ~batch["is_first"][:, 1:].bool()
    assert torch.allclose(seen[-1], symlog(batch["state"][:, :-1][valid]))
    # Acting reads the standardised observation, not the latent.
    agent.normalizer.fit(np.random.default_rng(0).normal(2.0, 3.0, (50, config.state_dim)))
    obs = np.random.default_rng(1).normal(2.0, 3.0, config.state_dim).astype(np.float32)
    agent.reset()
    action = agent.act({"state": obs}, deterministic=True)
    standard = (torch.as_tensor(obs) - agent.normalizer.mean) / agent.normalizer.std
    with torch.no_grad():
        expected = ac.actor(symlog(standard)[None]).mode[0].numpy()
    assert np.allclose(action, expected, atol=1e-6)
    with pytest.raises(ValueError, match="actor_input"):
        tiny_config(actor_critic={"actor_input": "pixels"})
    with pytest.raises(ValueError, match="obs_mode 'state'"):
        tiny_config("image", actor_critic={"actor_input": "observation"})


def _safereach_state(gripper, target, obstacles) -> np.ndarray:
    state = np.zeros(25, np.float32)
    state[:3], state[6:9] = gripper, target
    for k, obstacle in enumerate(obstacles):
        state[9 + 4 * k: 13 + 4 * k] = [*obstacle, 1.0]
    return state


def test_obstacle_set_input_on_hand_computed_geometry() -> None:
    raw = torch.as_tensor(_safereach_state([0.4, 0.0, 0.1], [0.5, 0.05, 0.02],
                                           [[0.45, 0.0, 0.02]]))
    standardised = torch.arange(25.0)  # only its pose part is read
    x = obstacle_set_input(standardised, raw)
    assert x.shape == (9 + 4 * 7,)
    expected_ego = [*symlog(torch.arange(6.0)).tolist(), 1.0, 0.5, -0.8]  # 10 x (target - gripper)
    assert torch.allclose(x[:9], torch.tensor(expected_ego))
    # Slot 0: 10 x (obstacle - gripper), 10 x (obstacle - target), present.
    assert torch.allclose(x[9:16], torch.tensor([0.5, 0.0, -0.8, -0.5, -0.5, 0.0, 1.0]))
    assert x[16:].abs().max() <= 10 * 0.5 + 1e-6 and x[16 + 6::7].tolist() == [0.0, 0.0, 0.0]


def test_obstacle_set_actor_reads_the_state_as_a_set_when_acting_and_imagining() -> None:
    config = tiny_config(actor_critic={"actor_input": "obstacle_set"})
    agent = Agent(config)
    ac = agent.actor_critic
    rng = np.random.default_rng(0)
    rows = np.stack([_safereach_state(rng.uniform(0.3, 0.6, 3), rng.uniform(0.3, 0.6, 3),
                                      rng.uniform(0.3, 0.6, (2, 3))) for _ in range(50)])
    agent.normalizer.fit(rows)
    seen: list[torch.Tensor] = []
    ac.actor.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    # Acting: the input is computed from the observation in metres, whatever the normaliser.
    gripper, target = [0.4, 0.0, 0.1], [0.5, 0.05, 0.02]
    two = _safereach_state(gripper, target, [[0.45, 0.0, 0.02], [0.5, 0.1, 0.02]])
    agent.reset()
    agent.act({"state": two}, deterministic=True)
    standard = (torch.as_tensor(two) - agent.normalizer.mean) / agent.normalizer.std
    assert torch.allclose(seen[-1][0], obstacle_set_input(standard, torch.as_tensor(two)),
                          atol=1e-5)
    # The same two obstacles in swapped slots act the same; a third one changes the action.
    swapped = _safereach_state(gripper, target, [[0.5, 0.1, 0.02], [0.45, 0.0, 0.02]])
    three = _safereach_state(gripper, target, [[0.45, 0.0, 0.02], [0.5, 0.1, 0.02],
                                               [0.42, 0.0, 0.02]])
    with torch.no_grad():
        def mode(state):
            std = (torch.as_tensor(state) - agent.normalizer.mean) / agent.normalizer.std
            return ac.actor(ac.actor_input(None, std[None])).mode
        assert torch.allclose(mode(two), mode(swapped), atol=1e-6)
        assert not torch.allclose(mode(two), mode(three), atol=1e-4)
    # Imagination: the decoded state, back in metres, through the same function.
    seen.clear()
    batch = replay_for(config).sample()
    _, _, posterior = agent.world_model.loss(batch)
    ac.update(agent.world_model, posterior, batch)
    with torch.no_grad():
        decoded = symexp(agent.world_model.state_decoder(posterior.features().flatten(0, 1)))
    assert torch.allclose(seen[0], obstacle_set_input(decoded, agent.normalizer.inverse(decoded)),
                          atol=1e-5)
    with pytest.raises(ValueError, match="needs the state normaliser"):
        type(ac)(config, feat_dim=48).actor_input(None, torch.zeros(1, 25))
    with pytest.raises(ValueError, match="obs_mode 'state'"):
        tiny_config("image", actor_critic={"actor_input": "obstacle_set"})
    with pytest.raises(ValueError, match="SafeReach state"):
        tiny_config(state_dim=10, actor_critic={"actor_input": "obstacle_set"})


def test_unnormalised_centred_masked_weights_train() -> None:
    overrides = {"awr_normalise": False, "awr_center": True, "cost_expectile": 0.2}
    config = tiny_config(actor_critic=overrides, fosp={"feasible_mask": True})
    agent = Agent(config)
    metrics = agent.train_step(replay_for(config).sample())
    assert all(math.isfinite(value) for value in metrics.values())
    assert abs(metrics["ac/adv_reward"]) < 1e-5  # centred
    assert metrics["ac/awr_weight"] > 0


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algo_runs_one_finite_train_step(algo: str) -> None:
    config = tiny_config(algo=algo)
    agent = Agent(config)
    metrics = agent.train_step(replay_for(config).sample())
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    assert "ac/actor_loss" in metrics and "ac/critic_loss" in metrics


def test_image_mode_train_step() -> None:
    config = tiny_config(obs_mode="image")
    metrics = Agent(config).train_step(replay_for(config).sample())
    assert math.isfinite(metrics["model/image_loss"]) and math.isfinite(metrics["ac/actor_loss"])


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_fosp_trains_the_ref_and_the_in_sample_critics() -> None:
    config = tiny_config(algo="fosp")
    agent = Agent(config)
    ac = agent.actor_critic
    assert ac.ref is not None and set(ac.critics) == {"v_reward", "v_cost", "q_reward", "q_cost"}
    before = _params(ac.ref)
    metrics = agent.train_step(replay_for(config).sample())
    assert any(not torch.equal(a, b) for a, b in zip(before, ac.ref.parameters()))
    assert metrics["ac/q_reward_data_loss"] > 0 and metrics["ac/q_cost_data_loss"] > 0
    assert 0 < metrics["ac/ref_mean"] < 1 and "ac/ref_loss" in metrics


def test_no_ref_has_no_ref_and_u_is_zero() -> None:
    config = tiny_config(algo="fosp-no-ref")
    agent = Agent(config)
    ac = agent.actor_critic
    assert ac.ref is None and "ref" not in ac.optimizers()
    metrics = agent.train_step(replay_for(config).sample())
    assert "ac/ref_loss" not in metrics and metrics["ac/ref_mean"] == 0.0
    assert torch.equal(ac.reach(torch.randn(3, agent.world_model.feat_dim)), torch.zeros(3))


def test_no_insample_trains_critics_on_imagination_only() -> None:
    config = tiny_config(algo="fosp-no-insample")
    agent = Agent(config)
    metrics = agent.train_step(replay_for(config).sample())
    assert metrics["ac/q_reward_data_loss"] == 0.0 and metrics["ac/q_cost_data_loss"] == 0.0
    assert metrics["ac/q_reward_img_loss"] > 0 and agent.actor_critic.ref is not None


def test_in_sample_and_imagined_value_targets_differ() -> None:
    # Same weights, same batch, same random draws: only the V targets (eq. 7) differ.
    losses = {}
    for algo in ("fosp", "fosp-no-insample"):
        torch.manual_seed(0)
        config = tiny_config(algo=algo)
        agent = Agent(config)
        # Non-zero critic outputs, so that Q differs between dataset and policy actions.
        for p in agent.actor_critic.slow_critics.parameters():
            p.data.normal_(0, 0.3)
        torch.manual_seed(5)
        losses[algo] = agent.train_step(replay_for(config).sample())["ac/v_reward_loss"]
    assert losses["fosp"] != pytest.approx(losses["fosp-no-insample"])


def test_augmented_and_plain_lagrangian_differ() -> None:
    grow = {"penalty_growth": 0.5, "penalty_init": 0.1}
    penalties = {}
    for algo in ("fosp", "fosp-no-auglag"):
        config = tiny_config(algo=algo, fosp=grow)
        agent = Agent(config)
        replay = replay_for(config)
        for _ in range(2):
            agent.train_step(replay.sample())
        penalties[algo] = agent.actor_critic.penalty.item()
        g = torch.tensor([-1.0, 0.5, 2.0])
        phi = agent.actor_critic.penalty_fn(g)
        lam, mu = agent.actor_critic.lagrange.item(), agent.actor_critic.penalty.item()
        if algo == "fosp":
            quadratic = lam * g + mu / 4 * g.square()
            expected = torch.where(lam + mu / 2 * g >= 0, quadratic, -torch.tensor(lam**2 / mu))
        else:
            expected = lam * g
        assert torch.allclose(phi, expected.float())
    assert penalties["fosp"] == pytest.approx(0.1 * 1.5**2)  # eq. 26: mu grows every step
    assert penalties["fosp-no-auglag"] == pytest.approx(0.1)  # plain: fixed step size


def test_lagrange_multiplier_follows_eq27() -> None:
    config = tiny_config(algo="fosp", fosp={"penalty_init": 1.0, "penalty_growth": 0.0})
    agent = Agent(config)
    ac = agent.actor_critic
    metrics = agent.train_step(replay_for(config).sample())
    g = metrics["ac/constraint_violation"]
    assert g == pytest.approx(metrics["ac/v_cost"] - config.fosp.cost_limit, abs=1e-6)
    assert ac.lagrange.item() == pytest.approx(max(0.01 + 0.5 * g, 0.0), abs=1e-7)


def test_dreamer_has_no_cost_anywhere_in_the_actor_critic() -> None:
    config = tiny_config(algo="dreamer")
    agent = Agent(config)
    ac = agent.actor_critic
    assert ac.ref is None and set(ac.critics) == {"v_reward"}
    metrics = agent.train_step(replay_for(config).sample())
    ac_keys = [k for k in metrics if k.startswith("ac/")]
    assert not [k for k in ac_keys if "cost" in k or "lagrange" in k or "ref" in k]


def test_safedreamer_uses_a_cost_value_and_a_lagrangian_but_no_ref() -> None:
    config = tiny_config(algo="safedreamer", fosp={"penalty_init": 1.0})
    agent = Agent(config)
    ac = agent.actor_critic
    assert ac.ref is None and set(ac.critics) == {"v_reward", "v_cost"}
    metrics = agent.train_step(replay_for(config).sample())
    assert "ac/v_cost_loss" in metrics and "ac/q_reward_img_loss" not in metrics
    assert ac.lagrange.item() != pytest.approx(config.fosp.lagrange_init, abs=1e-9)


def test_world_model_is_not_trained_by_the_actor_critic() -> None:
    config = tiny_config()
    agent = Agent(config)
    batch = replay_for(config).sample()
    _, _, posterior = agent.world_model.loss(batch)
    before = _params(agent.world_model)
    agent.actor_critic.update(agent.world_model, posterior, batch)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.world_model.parameters()))
    assert all(p.grad is None for p in agent.world_model.parameters())


# --------------------------------------------------------------------------------------------
# Acting.


@pytest.mark.parametrize("obs_mode", ["state", "image"])
def test_act_keeps_the_latent_and_is_deterministic(obs_mode: str) -> None:
    config = tiny_config(obs_mode=obs_mode)
    agent = Agent(config)
    traj = make_trajectory(0, steps=4)
    keys = ("state",) if obs_mode == "state" else ("image", "pose")

    def episode() -> list[np.ndarray]:
        agent.reset()
        return [agent.act({k: traj[k][t] for k in keys}) for t in range(4)]

    first, second = episode(), episode()
    for a, b in zip(first, second):
        assert a.shape == (6,) and a.dtype == np.float32
        assert np.all(np.abs(a) <= 1) and np.array_equal(a, b)
    # The latent carries over: the same observation after a different history acts differently.
    agent.reset()
    agent.act({k: traj[k][3] for k in keys})
    after_one = agent.act({k: traj[k][3] for k in keys})
    assert not np.array_equal(after_one, first[1])


def test_actor_critic_buffers_are_in_the_state_dict() -> None:
    ac = ActorCritic(tiny_config(), feat_dim=48)
    state = ac.state_dict()
    for name in ("lagrange", "penalty", "reward_low", "reward_high", "cost_low", "cost_high"):
        assert name in state
    assert state["lagrange"].dtype == torch.float64
    assert any(k.startswith("slow_critics.") for k in state)


# --------------------------------------------------------------------------------------------
# Observation normaliser: the same transform in training and acting.


def test_normalizer_standardises_and_leaves_constant_dims_unscaled() -> None:
    rows = np.stack([np.full(500, 0.6), np.random.default_rng(0).normal(0.1, 0.05, 500),
                     np.zeros(500)], 1)
    norm = VectorNormalizer("state", 3)
    norm.fit(rows)
    out = norm({"state": torch.tensor(rows, dtype=torch.float32)})["state"]
    assert torch.allclose(out[:, 0], torch.full((500,), 0.6))  # constant: as it is, no nan
    assert out[:, 1].mean().abs() < 1e-4 and (out[:, 1].std() - 1).abs() < 1e-2
    # A slot the data never used (a third obstacle) stays on the scale of its values.
    unseen = norm({"state": torch.tensor([[0.6, 0.1, 0.5]])})["state"]
    assert unseen[0, 2].item() == pytest.approx(0.5)
    assert norm({"other": torch.ones(1)}) == {"other": torch.ones(1)}


def test_act_applies_the_training_normaliser() -> None:
    config = tiny_config()
    trajectories = [make_trajectory(seed) for seed in range(3)]
    agent = Agent(config)
    agent.fit_normalizer(trajectories)
    assert agent.normalizer.mean.abs().sum() > 0 and "normalizer.std" in agent.state_dict()[
        "modules"
    ]
    # The same weights without a normaliser, fed pre-normalised observations, act identically.
    plain = Agent(config)
    plain.load_state_dict(agent.state_dict())
    plain.normalizer.mean.zero_()
    plain.normalizer.std.fill_(1.0)
    states = trajectories[0]["state"][:3]
    agent.reset()
    plain.reset()
    for state in states:
        scaled = ((torch.tensor(state) - agent.normalizer.mean) / agent.normalizer.std).numpy()
        assert np.array_equal(agent.act({"state": state}), plain.act({"state": scaled}))
