"""Offline actor-critic of FOSP (sec. 4.1-4.2, Algorithm 1 lines 6-11) and its baselines.

Everything here works on world-model features s = [h, z] that are already detached: the world
model is trained by its own loss (eq. 1) only.

FOSP, one update (``ActorCritic.update``), top to bottom:

1. Imagine H = 15 steps from every posterior state of the batch with the current policy
   (eq. 6); predicted rewards, costs and continue flags come from the world-model heads.
2. TD(lambda) targets R^r, R^c along the imagined rollouts (eq. 8), bootstrapped with the
   slow (EMA) value networks.
3. V^r, V^c: expectile regression towards Q on the *dataset* actions at the posterior states
   (eq. 7, in-sample as IQL), so V never queries Q at an action the data never tried.
4. Q^r, Q^c: eq. 11 = eq. 9 (imagined state-actions -> lambda-returns) + eq. 10 (dataset
   state-actions -> one-step targets with the *real* reward / cost).
5. Actor: advantage-weighted regression on dataset actions (eq. 19-20); the REF u picks
   between the reward advantage (feasible states) and the cost advantage (infeasible ones).
6. REF u: trained towards max(1[violation], gamma_u * u') on the imagined rollouts (eq. 30)
   with its own, faster optimiser (App. B).
7. Augmented Lagrangian: multiplier step (eq. 27) and penalty growth (eq. 26) on the batch
   mean of V^c; both persist as buffers.

Decisions where the paper is ambiguous or, read literally, unsound (each one tested):

- Eq. 9 and 10 print a leading minus sign; minimising -(Q - R)^2 would push Q *away* from R,
  so the sign is a typo and the squared errors are minimised. The critics are symlog two-hot
  heads (official code), so "(Q - R)^2" becomes the two-hot cross-entropy -ln p_Q(R), whose
  minimiser is also the mean target.
- Eq. 10 is read as written: a one-step target r_t + gamma * V(s_{t+1}) with the dataset's
  action, reward and cost and the *next posterior* state, no lambda-return; eq. 11 adds it to
  eq. 9 with weight 1, each averaged over its own pairs. Dreamer rows put a_{t+1}, r_{t+1} in
  row t+1, so the pair (s_t, a_t, r_t, s_{t+1}) of the paper is rows (t, t+1, t+1, t+1) here.
- Eq. 7 prints hatted (imagined) states and actions. The in-sample principle of sec. 4.1 (and
  IQL, which it follows) needs Q at actions from the data, so V regresses towards Q at the
  posterior states with dataset actions. 'fosp-no-insample' is the literal, imagined version.
- The expectile of eq. 7 is taken in symlog space (the space the two-hot heads predict in):
  symlog is monotone, so V is still an upper expectile of Q, and the loss scale does not blow
  up with the size of the returns.
- Bootstraps (eq. 8, eq. 10) and the expectile's Q target use slow EMA copies of the critics
  (DreamerV3; IQL's target Q); the fraction is ``slow_critic_fraction``.
- Eq. 20's Phi(V^c) term does not depend on the action, so inside AWR it would change nothing.
  The Lagrangian penalty enters the feasible part through the action instead: the reward
  advantage becomes A^r - (Phi(Q^c - d) - Phi(V^c - d)), the advantage of the penalised
  objective A^r - Phi of eq. 16 when the constraint is evaluated after taking the action.
  With the paper's lambda_p = 0.01 this is ~0.01 * A^c: a gentle push away from costly
  actions even where u says the state is feasible.
- Eq. 19 as printed weights raw advantages, exp(beta * A). The official code divides them
  by DreamerV3's return range first; on SafeReach that range (~50 reward, ~20 cost) flattens
  every weight to ~1, so the actor clones the whole mix, violating demonstrations included.
  ``awr_normalise`` picks; both presets keep the official code's division, because eq. 19
  as printed (with the batch mean subtracted, ``awr_center``, so that exp() does not
  saturate the clip) has not yet done better in full training (docs/implementation.md).
- The feasible part of eq. 19 can be restricted to actions with Q^c <= V^c
  (``feasible_mask``), the role of the official code's 1[Q^c <= 0]: in a feasible state,
  the reward advantage alone rewards a quick, costly route as much as a safe one.
- ``cost_expectile`` 0.2 (an option; the presets keep 0.8) makes V^c a *lower* expectile of
  Q^c, the in-sample minimum over the data's actions (FISOR's feasible value): "is there a
  safe action the data has tried here", which is what A^c and the mask above compare against.
- Eq. 27's multiplier step uses g = mean_s V^c(s) - d over the batch's posterior states with
  d = ``cost_limit`` (0: the feasible set V^c = 0 of eq. 13). The remark "only update when
  pi satisfies the constraints" would freeze lambda exactly when it is needed; we update
  every step, as LAMBDA / SafeDreamer do.
- ``actor_input: observation`` (state mode) lets the actor read the state instead of the
  model state's features: the real state at dataset rows (eq. 19) and when acting, the world
  model's reconstruction of it in imagination, where no observation exists. Sec. 3 has the
  actor read the latent; on SafeReach the latent blurs the 1-2 cm by which the
  demonstrations clear the obstacles, and clones through it violate several times as often
  as clones on the state with the same weights (docs/implementation.md). Critics and REF
  keep the latent.
  ``actor_input: obstacle_set`` reads the same state as the gripper sees it: target and
  obstacles relative to the gripper, the obstacles as a set (``obstacle_set_input``,
  ``networks.ObstacleSetEncoder``). Per-slot inputs tie what the actor learned about an
  obstacle to the slot it stood in, and a slot the data never filled (a third obstacle)
  disturbed its avoidance of the other two; extracted from the same critics, the set actor
  met the offline goal where the per-slot one did not (docs/results.md).
- The REF's "violation" indicator needs a threshold on the *predicted* cost, which is never
  exactly 0: a state counts as violating when its predicted cost exceeds 0.5 (costs are 0/1).

Variants on the same code path (``config.algo``):

- 'fosp': all of the above.
- 'fosp-no-insample' (ablation i): V regresses towards Q at imagined policy actions and Q is
  trained on eq. 9 alone; no dataset pair enters the critics.
- 'fosp-no-ref' (iii): no REF network; u = 0, so the actor follows the (penalised) reward
  advantage everywhere and safety comes from the Lagrangian alone.
- 'fosp-no-auglag' (iv): a plain Lagrangian, Phi = lambda * g and lambda <- max(lambda +
  mu^0/2 * g, 0) with the same step size but no quadratic term and no penalty growth.
- 'dreamer': DreamerV3's actor-critic, no cost anywhere: V^r on lambda-returns, actor by
  REINFORCE on the normalised advantage plus entropy.
- 'safedreamer': BSRP-Lag: V^r and V^c on imagined lambda-returns, REINFORCE on
  A^r - Psi'(C^lambda) * A^c with the augmented Lagrangian on the imagined cost return C^lambda
  against ``cost_limit`` (App. F); no in-sample critics, no REF.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fosp_core.agent.config import AgentConfig
from fosp_core.agent.math import (
    augmented_lagrangian_penalty,
    awr_actor_loss,
    awr_weights,
    expectile_loss,
    grow_penalty,
    lambda_returns,
    online_policy_weights,
    ref_target,
    return_scale,
    symexp,
    symlog,
    update_lagrange_multiplier,
    update_return_range,
)
from fosp_core.agent.networks import MLP, ActorHead, ObstacleSetEncoder, TwoHotDist, TwoHotHead
from fosp_core.agent.precision import Precision
from fosp_core.agent.world_model import Latent, WorldModel
from fosp_core.envs.state_layout import MAX_OBSTACLES, POSE_DIM, split_state

FOSP_ALGOS = ("fosp", "fosp-no-insample", "fosp-no-ref", "fosp-no-auglag")
# Predicted costs are continuous; a state counts as violating above this (costs are 0/1).
VIOLATION_THRESHOLD = 0.5


def dataset_pairs(features: Tensor, batch: dict[str, Tensor],
                  actor_input: Tensor | None = None) -> dict[str, Tensor]:
    """Real transitions (s_t, a_t, r_t, c_t, s_{t+1}) of a (B, T) batch, flattened to (M, ...).

    Dreamer rows hold the action that led *to* a row, so the transition out of row t is
    (features[t], action[t+1], reward[t+1], cost[t+1], features[t+1]). Pairs whose next row
    starts an episode (``is_first``) span a reset and are dropped. ``actor_input`` is what the
    actor reads at each row when that is not the features (``ActorCritic.actor_input``).
    """
    valid = ~batch["is_first"][:, 1:].bool()
    state = features[:, :-1][valid]
    pairs = {
        "state": state,
        "actor_input": state if actor_input is None else actor_input[:, :-1][valid],
        "action": batch["action"][:, 1:][valid].float().clamp(-1, 1),
        "reward": batch["reward"][:, 1:][valid].float(),
        "cost": batch["cost"][:, 1:][valid].float(),
        "next_state": features[:, 1:][valid],
    }
    for key in ("safe_success", "hold"):  # the replay's per-row cloning weights
        if key in batch:
            pairs[key] = batch[key][:, 1:][valid].float()
    return pairs


def safe_success_targets(action: Tensor, safe_success: Tensor, hold: Tensor
                         ) -> tuple[Tensor, Tensor]:
    """Cloning targets and weights of ``fosp.online_actor_loss: safe_success``.

    Not in the paper. A row with a ``hold`` weight (an action taken after the target was
    first touched, ``fosp.online_hold_weight``) is cloned towards the zero action, "stay
    where you are", with that weight, whatever its trajectory did next; every other row
    towards its own action with its ``safe_success`` weight.
    """
    held = hold > 0
    target = torch.where(held.unsqueeze(-1), torch.zeros_like(action), action)
    return target, torch.where(held, hold, safe_success)


def one_step_targets(reward: Tensor, next_value: Tensor, discount: float) -> Tensor:
    """Target of eq. 10: r_t + gamma * V(s_{t+1}) with the dataset's reward or cost."""
    return reward + discount * next_value


def offline_advantages(
    q_r: Tensor,
    v_r: Tensor,
    q_c: Tensor,
    v_c: Tensor,
    penalty: Tensor,
    scales: tuple[Tensor, Tensor] | None,
    center: bool,
) -> tuple[Tensor, Tensor]:
    """A^r and A^c of eq. 19 at dataset state-actions.

    A^r = Q^r - V^r - penalty (the penalised objective, see the module docstring) and
    A^c = Q^c - V^c, each divided by its return scale when ``scales`` is given, and with the
    batch mean subtracted when ``center`` is set.
    """
    adv_r, adv_c = q_r - v_r - penalty, q_c - v_c
    if scales is not None:
        adv_r, adv_c = adv_r / scales[0], adv_c / scales[1]
    if center:
        adv_r, adv_c = adv_r - adv_r.mean(), adv_c - adv_c.mean()
    return adv_r, adv_c


# What ``actor_input: obstacle_set`` reads: the ego part (symlog of the standardised pose, the
# target relative to the gripper), then per obstacle slot the obstacle relative to the gripper
# and to the target, and the slot's present flag.
SET_EGO_DIM, SET_ITEM_DIM = POSE_DIM + 3, 6
SET_SCALE = 10.0  # metres -> decimetres: the 25 cm workspace spans a few units


def obstacle_set_input(standardised: Tensor, raw: Tensor) -> Tensor:
    """The state (standardised, and in metres) -> ``obstacle_set`` actor input (..., 37).

    Relative positions in a shared frame make the slots interchangeable, which the
    per-dimension standardisation is not (each slot has its own mean and scale, and a slot
    the data never filled has none).
    """
    pose, target, obstacles, present = split_state(raw)
    gripper = pose[..., :3]
    ego = torch.cat([symlog(standardised[..., :POSE_DIM]), SET_SCALE * (target - gripper)], -1)
    items = torch.cat([SET_SCALE * (obstacles - gripper[..., None, :]),
                       SET_SCALE * (obstacles - target[..., None, :]), present[..., None]], -1)
    return torch.cat([ego, items.flatten(-2)], -1)


def build_actor(config: AgentConfig, feat_dim: int) -> ActorHead:
    """The actor the config describes (offline actor, PEX's new actor, benchmarks alike).

    It reads ``feat_dim`` features, the ``state_dim`` state with ``actor_input: observation``,
    or ``obstacle_set_input`` through an ``ObstacleSetEncoder``.
    """
    ac, m = config.actor_critic, config.model
    encoder = None
    if ac.actor_input == "obstacle_set":
        encoder = ObstacleSetEncoder(SET_EGO_DIM, SET_ITEM_DIM, MAX_OBSTACLES, m.hidden,
                                     m.mlp_layers)
        in_dim = encoder.in_dim
    else:
        in_dim = config.state_dim if ac.actor_input == "observation" else feat_dim
    return ActorHead(in_dim, config.action_dim, m.hidden, m.mlp_layers, ac.actor_min_std,
                     ac.actor_max_std, ac.actor_dist, encoder)


def critic_nll(dist: TwoHotDist, target: Tensor) -> Tensor:
    """Mean two-hot cross-entropy -ln p(target): the squared error of eq. 9 / 10 for a
    symlog two-hot head (see the module docstring)."""
    return -dist.log_prob(target.detach()).mean()


def symlog_expectile_loss(q: Tensor, v_dist: TwoHotDist, kappa: float) -> Tensor:
    """Eq. 7 on two-hot values: expectile regression of V towards Q in symlog space."""
    v_symlog = (v_dist.logits.softmax(-1) * v_dist.bins).sum(-1)
    return expectile_loss(symlog(q.detach()), v_symlog, kappa).mean()


class ActorCritic(nn.Module):
    """Actor, critics, slow critics, REF and Lagrange multipliers, with their optimisers.

    ``update(world_model, posterior, batch)`` does one step of Algorithm 1 lines 6-11 for the
    algorithm in ``config.algo``. Multipliers and return-normalisation ranges are buffers, so
    ``state_dict`` carries them; ``optimizers`` names the optimisers for checkpointing.
    """

    def __init__(self, config: AgentConfig, feat_dim: int,
                 unnormalize: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        # Standardised state -> metres (the agent's normaliser), for ``obstacle_set``.
        self.unnormalize = unnormalize
        self.algo = config.algo
        ac, m = config.actor_critic, config.model
        self.fosp = self.algo in FOSP_ALGOS
        self.in_sample = self.algo in ("fosp", "fosp-no-ref", "fosp-no-auglag")
        self.uses_ref = self.algo in ("fosp", "fosp-no-insample", "fosp-no-auglag")
        self.uses_cost = self.algo != "dreamer"
        self.augmented = self.algo != "fosp-no-auglag"
        # Online fine-tuning (sec. 4.3) trains the actor with eq. 23 instead of eq. 19-20
        # (unless fosp.online_actor_loss keeps eq. 19 online).
        self.online = False
        # Data-parallel training averages gradients over ranks here
        # (fosp_core.learning.distributed).
        self.grad_sync = None
        # Autocast and optimiser steps; the Agent replaces it with its device's.
        self.precision = Precision(torch.device("cpu"))

        self.actor = build_actor(config, feat_dim)
        two_hot = {"bins": m.bins, "low": m.bin_low, "high": m.bin_high}
        critics: dict[str, nn.Module] = {
            "v_reward": TwoHotHead(feat_dim, m.hidden, m.mlp_layers, **two_hot)
        }
        if self.uses_cost:
            critics["v_cost"] = TwoHotHead(feat_dim, m.hidden, m.mlp_layers, **two_hot)
        if self.fosp:
            q_in = feat_dim + config.action_dim
            critics["q_reward"] = TwoHotHead(q_in, m.hidden, m.mlp_layers, **two_hot)
            critics["q_cost"] = TwoHotHead(q_in, m.hidden, m.mlp_layers, **two_hot)
        self.critics = nn.ModuleDict(critics)
        self.slow_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.ref = MLP(feat_dim, 1, m.hidden, m.mlp_layers) if self.uses_ref else None

        f = config.fosp
        # float64: mu grows by a factor (1 + 5e-9) per step, below float32's resolution.
        self.register_buffer("lagrange", torch.tensor(f.lagrange_init, dtype=torch.float64))
        self.register_buffer("penalty", torch.tensor(f.penalty_init, dtype=torch.float64))
        for name in ("reward", "cost"):
            self.register_buffer(f"{name}_low", torch.tensor(0.0))
            self.register_buffer(f"{name}_high", torch.tensor(0.0))

        adam = {"eps": ac.eps}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=ac.actor_lr, **adam)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=ac.critic_lr, **adam)
        self.ref_opt = (
            torch.optim.Adam(self.ref.parameters(), lr=ac.ref_lr, **adam) if self.ref else None
        )

    # ---------------------------------------------------------------------------------------
    # Small helpers.

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"actor": self.actor_opt, "critic": self.critic_opt}
        if self.ref_opt is not None:
            opts["ref"] = self.ref_opt
        return opts

    def reach(self, features: Tensor) -> Tensor:
        """u(s) in [0, 1]: the REF's estimate that a violation will be reached (eq. 5)."""
        if self.ref is None:
            return torch.zeros(features.shape[:-1], device=features.device)
        return torch.sigmoid(self.ref(features).squeeze(-1))

    def inputs(self, latent: Latent) -> Tensor:
        """What the actor, critics and REF read of a model state (``latent_input``)."""
        if self.config.actor_critic.latent_input == "mode":
            return latent.mode_features()
        return latent.features()

    def actor_input(self, features: Tensor, state: Tensor | None) -> Tensor:
        """What the actor reads where there is an observation (dataset rows, acting).

        The features, or with ``actor_input: observation`` the standardised state in symlog
        space, the space the world model's state decoder predicts in (``imagined_actor_input``),
        or with ``obstacle_set`` the ``obstacle_set_input`` of the state.
        """
        kind = self.config.actor_critic.actor_input
        if kind == "observation":
            return symlog(state.float())
        if kind == "obstacle_set":
            if self.unnormalize is None:
                raise ValueError("actor_input 'obstacle_set' needs the state normaliser "
                                 "(ActorCritic(..., unnormalize=...), as Agent passes it)")
            return obstacle_set_input(state.float(), self.unnormalize(state.float()))
        return features

    def imagined_actor_input(self, world_model: WorldModel, latent: Latent) -> Tensor:
        """What the actor reads in imagination: the features, or the decoded state."""
        kind = self.config.actor_critic.actor_input
        if kind == "observation":
            return world_model.state_decoder(latent.features())
        if kind == "obstacle_set":
            return self.actor_input(None, symexp(world_model.state_decoder(latent.features())))
        return self.inputs(latent)

    def policy(self, actor_input: Tensor, deterministic: bool = False) -> Tensor:
        dist = self.actor(actor_input)
        return dist.mode if deterministic else dist.sample()

    def penalty_fn(self, violation: Tensor) -> Tensor:
        """Phi of eq. 17 (augmented) or lambda * g (plain Lagrangian, ablation iv)."""
        if self.augmented:
            return augmented_lagrangian_penalty(violation, self.lagrange, self.penalty)
        return self.lagrange * violation

    def _step(self, opt: torch.optim.Optimizer, loss: Tensor, module: nn.Module) -> float:
        sync = None if self.grad_sync is None else (lambda: self.grad_sync(module))
        return self.precision.step(opt, loss, module.parameters(),
                                   self.config.actor_critic.grad_clip, sync).item()

    @torch.no_grad()
    def _update_slow_critics(self) -> None:
        mix = self.config.actor_critic.slow_critic_fraction
        for slow, fast in zip(self.slow_critics.parameters(), self.critics.parameters()):
            slow.lerp_(fast, mix)

    @torch.no_grad()
    def _normalise(self, name: str, returns: Tensor) -> Tensor:
        """Update the EMA percentile range of ``returns`` and return the scale S (DreamerV3)."""
        ac = self.config.actor_critic
        low, high = getattr(self, f"{name}_low"), getattr(self, f"{name}_high")
        new_low, new_high = update_return_range(
            returns, low, high, ac.retnorm_decay, (ac.retnorm_low, ac.retnorm_high)
        )
        low.copy_(new_low)
        high.copy_(new_high)
        return return_scale(low, high, ac.retnorm_limit)

    @torch.no_grad()
    def _imagine(self, world_model: WorldModel, start: Latent) -> dict[str, Tensor]:
        """Eq. 6: H-step rollouts under the current policy, time-major (H + 1, N, ...)."""
        states, actions = world_model.imagine(
            lambda s: self.policy(self.imagined_actor_input(world_model, s)),
            start,
            self.config.actor_critic.horizon,
        )
        features = states.features()  # what the world model's heads were trained on
        inputs = self.inputs(states)  # (H + 1, N, F), s^0 ... s^H, for actor-critic
        observed = self.config.actor_reads_state
        rollout = {
            "features": inputs,
            "actor_input": self.imagined_actor_input(world_model, states) if observed else inputs,
            "actions": actions,  # (H, N, A), a^h taken in s^h
            # Dreamer rows: what arriving at s^{h+1} earned is predicted from s^{h+1}.
            "reward": world_model.reward_head(features[1:]).mean(),
            "continue": world_model.continue_head(features[1:]).mean,
        }
        if self.uses_cost:
            rollout["state_cost"] = world_model.cost_head(features).mean()  # cost of s^0..s^H
            rollout["cost"] = rollout["state_cost"][1:]
        return rollout

    @torch.no_grad()
    def _lambda_returns(self, rollout: dict[str, Tensor], name: str, lam: float) -> Tensor:
        """Eq. 8 along the rollout, bootstrapped with the slow value network."""
        value = self.slow_critics[f"v_{name}"](rollout["features"]).mean()
        discount = self.config.actor_critic.discount
        return lambda_returns(rollout[name], value, rollout["continue"], discount, lam)

    # ---------------------------------------------------------------------------------------
    # The update.

    def update(
        self, world_model: WorldModel, posterior: Latent, batch: dict[str, Tensor]
    ) -> dict[str, float]:
        """One actor-critic step from a batch's posterior states (Algorithm 1 lines 6-11)."""
        posterior = posterior.detach()
        start = posterior.map(lambda x: x.flatten(0, 1))
        rollout = self._imagine(world_model, start)
        if self.fosp:
            features = self.inputs(posterior)
            actor_input = None  # the features, unless the actor reads the state
            if self.config.actor_reads_state:
                actor_input = self.actor_input(features, batch["state"])
            return self._update_fosp(rollout, dataset_pairs(features, batch, actor_input))
        return self._update_dreamer(rollout)

    def _update_fosp(self, rollout: dict[str, Tensor], data: dict[str, Tensor]) -> dict[str, float]:
        ac, f = self.config.actor_critic, self.config.fosp
        metrics: dict[str, float] = {}
        img_states = rollout["features"][:-1]  # s^0 .. s^{H-1}
        img_pairs = torch.cat([img_states, rollout["actions"]], -1)
        data_pairs = torch.cat([data["state"], data["action"]], -1)

        # -- Critics: V by eq. 7, Q by eq. 11 = eq. 9 + eq. 10, for reward and for cost. ----
        critic_loss = img_states.new_zeros(())
        returns: dict[str, Tensor] = {}
        for name, lam, kappa in (
            ("reward", ac.lambda_reward, ac.expectile),
            ("cost", ac.lambda_cost, ac.cost_expectile),
        ):
            q_head, v_head = self.critics[f"q_{name}"], self.critics[f"v_{name}"]
            slow_q, slow_v = self.slow_critics[f"q_{name}"], self.slow_critics[f"v_{name}"]
            returns[name] = self._lambda_returns(rollout, name, lam)  # eq. 8, (H, N)

            # Eq. 7: V towards the kappa-expectile of Q; in-sample = at dataset actions.
            with torch.no_grad():
                if self.in_sample:
                    q_target, v_states = slow_q(data_pairs).mean(), data["state"]
                else:
                    q_target, v_states = slow_q(img_pairs).mean(), img_states
            v_loss = symlog_expectile_loss(q_target, v_head(v_states), kappa)

            # Eq. 9: Q at imagined state-actions towards the lambda-returns.
            q_img_loss = critic_nll(q_head(img_pairs), returns[name])
            # Eq. 10: Q at dataset state-actions towards the real one-step target.
            q_data_loss = img_states.new_zeros(())
            if self.in_sample:
                with torch.no_grad():
                    next_value = slow_v(data["next_state"]).mean()
                    target = one_step_targets(data[name], next_value, ac.discount)
                q_data_loss = critic_nll(q_head(data_pairs), target)
            critic_loss = critic_loss + v_loss + q_img_loss + q_data_loss

            metrics[f"v_{name}_loss"] = v_loss.item()
            metrics[f"q_{name}_img_loss"] = q_img_loss.item()
            metrics[f"q_{name}_data_loss"] = q_data_loss.item()
            metrics[f"return_{name}"] = returns[name].mean().item()
        metrics["critic_grad_norm"] = self._step(self.critic_opt, critic_loss, self.critics)
        self._update_slow_critics()
        metrics["critic_loss"] = critic_loss.item()

        # -- Actor: advantage-weighted regression on dataset actions (eq. 19, 20). ---------
        scale_r = self._normalise("reward", returns["reward"])
        scale_c = self._normalise("cost", returns["cost"])
        terms = self.offline_terms(data, (scale_r, scale_c))
        weights = terms["weights"]
        if self.online and f.online_actor_loss == "eq23":
            actor_loss, log_prob, entropy, weights = self._online_actor_loss(
                rollout, scale_r, scale_c
            )
        else:
            if self.online and f.online_actor_loss == "safe_success":
                # Filtered behaviour cloning on the replay (not in the paper, see config).
                if "safe_success" not in data or "hold" not in data:
                    raise KeyError("fosp.online_actor_loss 'safe_success' needs batches from "
                                   "SequenceReplay, which carry the safe_success and hold "
                                   "weights")
                target, weights = safe_success_targets(
                    data["action"], data["safe_success"], data["hold"])
            else:
                target = data["action"]
            dist = self.actor(data["actor_input"])
            log_prob, entropy = dist.log_prob(target), dist.entropy()
            actor_loss = awr_actor_loss(log_prob, entropy, weights, ac.entropy)
        metrics["actor_grad_norm"] = self._step(self.actor_opt, actor_loss, self.actor)
        metrics.update(
            actor_loss=actor_loss.item(),
            actor_entropy=entropy.mean().item(),
            actor_log_prob=log_prob.mean().item(),
            awr_weight=weights.mean().item(),
            adv_reward=terms["adv_reward"].mean().item(),
            adv_cost=terms["adv_cost"].mean().item(),
            q_reward=terms["q_reward"].mean().item(),
            v_reward=terms["v_reward"].mean().item(),
            q_cost=terms["q_cost"].mean().item(),
            v_cost=terms["v_cost"].mean().item(),
            reward_scale=scale_r.item(),
            cost_scale=scale_c.item(),
            ref_mean=terms["reach"].mean().item(),
        )

        # -- REF (eq. 30) on the imagined rollouts, with its own faster optimiser. -----------
        if self.ref is not None:
            with torch.no_grad():
                violated = (rollout["state_cost"] > VIOLATION_THRESHOLD).float()
                u_next = self.reach(rollout["features"][1:])
                target = ref_target(violated[:-1], u_next, ac.ref_discount, rollout["continue"])
            logits = self.ref(img_states).squeeze(-1)
            ref_loss = F.binary_cross_entropy_with_logits(logits, target)
            metrics["ref_grad_norm"] = self._step(self.ref_opt, ref_loss, self.ref)
            metrics["ref_loss"] = ref_loss.item()
            metrics["ref_target"] = target.mean().item()

        # -- Lagrange multiplier (eq. 27) and penalty (eq. 26) on g = mean V^c - d. ---------
        metrics.update(self._update_multipliers(terms["v_cost"].mean() - f.cost_limit))
        return metrics

    @torch.no_grad()
    def offline_terms(self, data: dict[str, Tensor], scales: tuple[Tensor, Tensor]
                      ) -> dict[str, Tensor]:
        """Eq. 19 at dataset state-actions: Q, V, advantages, the REF's u and the weights.

        ``scales`` are the reward and cost return scales (used when ``awr_normalise``).
        ``benchmarks/eq19_weights.py`` reads the same terms off a trained run.
        """
        ac, f = self.config.actor_critic, self.config.fosp
        pairs = torch.cat([data["state"], data["action"]], -1)
        q_r = self.critics["q_reward"](pairs).mean()
        v_r = self.critics["v_reward"](data["state"]).mean()
        q_c = self.critics["q_cost"](pairs).mean()
        v_c = self.critics["v_cost"](data["state"]).mean()
        # Penalised reward advantage of the feasible part (eq. 16, see module docstring).
        penalty = self.penalty_fn(q_c - f.cost_limit) - self.penalty_fn(v_c - f.cost_limit)
        adv_r, adv_c = offline_advantages(
            q_r, v_r, q_c, v_c, penalty, scales if ac.awr_normalise else None, ac.awr_center
        )
        reach = self.reach(data["state"])  # u = 0 without the REF (ablation iii)
        keep = (q_c <= v_c).float() if f.feasible_mask else None
        weights = awr_weights(
            adv_r, adv_c, reach, ac.awr_beta_reward, ac.awr_beta_cost, ac.awr_max_weight, keep
        )
        return {"q_reward": q_r, "v_reward": v_r, "q_cost": q_c, "v_cost": v_c,
                "adv_reward": adv_r, "adv_cost": adv_c, "reach": reach, "weights": weights}

    def return_scales(self) -> tuple[Tensor, Tensor]:
        """The reward and cost return scales as they stand (no update)."""
        limit = self.config.actor_critic.retnorm_limit
        return (return_scale(self.reward_low, self.reward_high, limit),
                return_scale(self.cost_low, self.cost_high, limit))

    def _online_actor_loss(
        self, rollout: dict[str, Tensor], scale_r: Tensor, scale_c: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Online actor loss with the weights of eq. 23 (sec. 4.3).

        w = (1 - u) beta_1 A^r - u beta_2 A^c with no behaviour-policy constraint, so the
        actor is no longer tied to the dataset's actions: it is a policy gradient on the new
        policy's own imagined actions, -E[w log pi(a|s)] - eta H, with A^r and A^c from the
        transferred critics (A^r penalised as offline) and u from the REF.
        """
        ac, f = self.config.actor_critic, self.config.fosp
        states, actions = rollout["features"][:-1], rollout["actions"]
        with torch.no_grad():
            pairs = torch.cat([states, actions], -1)
            q_r = self.critics["q_reward"](pairs).mean()
            v_r = self.critics["v_reward"](states).mean()
            q_c = self.critics["q_cost"](pairs).mean()
            v_c = self.critics["v_cost"](states).mean()
            penalty = self.penalty_fn(q_c - f.cost_limit) - self.penalty_fn(v_c - f.cost_limit)
            adv_r = (q_r - v_r - penalty) / scale_r
            adv_c = (q_c - v_c) / scale_c
            weights = online_policy_weights(
                adv_r, adv_c, self.reach(states), ac.awr_beta_reward, ac.awr_beta_cost
            )
        dist = self.actor(rollout["actor_input"][:-1])
        log_prob, entropy = dist.log_prob(actions), dist.entropy()
        return awr_actor_loss(log_prob, entropy, weights, ac.entropy), log_prob, entropy, weights

    def _update_dreamer(self, rollout: dict[str, Tensor]) -> dict[str, float]:
        """DreamerV3's actor-critic ('dreamer') and SafeDreamer's BSRP-Lag ('safedreamer')."""
        ac, f = self.config.actor_critic, self.config.fosp
        metrics: dict[str, float] = {}
        states, actions = rollout["features"][:-1], rollout["actions"]
        names = [("reward", ac.lambda_reward)]
        if self.uses_cost:
            names.append(("cost", ac.lambda_cost))

        # -- Critics: V on the imagined lambda-returns (DreamerV3). -------------------------
        returns, advantages = {}, {}
        critic_loss = states.new_zeros(())
        for name, lam in names:
            returns[name] = self._lambda_returns(rollout, name, lam)
            v_dist = self.critics[f"v_{name}"](states)
            loss = critic_nll(v_dist, returns[name])
            critic_loss = critic_loss + loss
            with torch.no_grad():
                scale = self._normalise(name, returns[name])
                advantages[name] = (returns[name] - v_dist.mean()) / scale
            metrics[f"v_{name}_loss"] = loss.item()
            metrics[f"return_{name}"] = returns[name].mean().item()
            metrics[f"v_{name}"] = v_dist.mean().mean().item()
            metrics[f"{name}_scale"] = scale.item()
        metrics["critic_grad_norm"] = self._step(self.critic_opt, critic_loss, self.critics)
        self._update_slow_critics()
        metrics["critic_loss"] = critic_loss.item()

        # -- Actor: REINFORCE on the (penalised) advantage plus entropy. ----------------------
        advantage = advantages["reward"]
        if self.uses_cost:
            # d Psi / d C^lambda of the augmented Lagrangian, per imagined state (App. F).
            violation = returns["cost"] - f.cost_limit
            slope = (self.lagrange + self.penalty / 2 * violation).clamp(min=0.0)
            advantage = advantage - slope * advantages["cost"]
        dist = self.actor(rollout["actor_input"][:-1])
        log_prob, entropy = dist.log_prob(actions), dist.entropy()
        actor_loss = -(advantage.detach() * log_prob + ac.entropy * entropy).mean()
        metrics["actor_grad_norm"] = self._step(self.actor_opt, actor_loss, self.actor)
        metrics.update(
            actor_loss=actor_loss.item(),
            actor_entropy=entropy.mean().item(),
            adv_reward=advantages["reward"].mean().item(),
        )
        if self.uses_cost:
            # g = imagined cost return of the start states minus the budget.
            metrics.update(self._update_multipliers(returns["cost"][0].mean() - f.cost_limit))
        return metrics

    @torch.no_grad()
    def _update_multipliers(self, violation: Tensor) -> dict[str, float]:
        """Eq. 27 for lambda_p; eq. 26's non-decreasing mu (augmented only)."""
        f = self.config.fosp
        violation = violation.double()
        self.lagrange.copy_(update_lagrange_multiplier(self.lagrange, violation, self.penalty))
        if self.augmented:
            self.penalty.fill_(grow_penalty(self.penalty.item(), f.penalty_growth, f.penalty_max))
        return {
            "lagrange": self.lagrange.item(),
            "penalty": self.penalty.item(),
            "constraint_violation": violation.item(),
        }
