"""Online fine-tuning with safe policy expansion (sec. 4.3, Algorithm 1 lines 12-24).

Two APIs, used unchanged by the ROS nodes:

- ``Learner``: holds the agent and the one replay buffer (offline dataset + every new
  trajectory; no separate balanced sampling). ``add_trajectory`` then ``train(G)`` after each
  trajectory; ``snapshot()`` hands out acting weights while training goes on (a lock is held
  per gradient step only); ``save``/``load`` keep everything a restart needs.
- ``PexPolicy``: the acting side. ``reset()`` at an episode start, ``step(obs)`` per control
  step. With expansion it asks both the frozen offline actor and the new one for an action,
  scores them with the transferred critics (eq. 22) and draws one (eq. 21); it reports which
  policy was chosen and the values used.

``expand_policy`` is Algorithm 1 line 12: freeze the offline actor, give the agent a new one,
and keep the world model, critics, values, REF and multipliers. Ablation (ii), direct
fine-tuning, skips the expansion and fine-tunes the offline actor itself with the same online
loss: eq. 23, or eq. 19 on the replay with ``fosp.online_actor_loss: in_sample``, or (not in
the paper) cloning of the replay's safe successes with ``safe_success``, optionally with
"hold still after the touch" relabelled in every trajectory (``fosp.online_hold_weight``).
"""

from __future__ import annotations

import copy
import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fosp_core.agent.actor_critic import FOSP_ALGOS, build_actor
from fosp_core.agent.agent import Agent
from fosp_core.agent.config import AgentConfig
from fosp_core.agent.foresight import foreseen_cost, imagined_step_costs, veto
from fosp_core.agent.networks import ActorHead
from fosp_core.agent.pex import (
    choose_policy,
    expansion_probabilities,
    normalised_value,
    value_upper_bound,
)
from fosp_core.agent.replay import SequenceReplay
from fosp_core.util.config import from_dict, to_dict
from fosp_core.util.files import load_tensors, save_tensors

POLICIES = ("offline", "online")  # index 0 and 1 of every PEX choice

# The training statistics a round reports in short (the ROS service's answer, fosp finetune's
# log); TensorBoard gets all of them.
ROUND_SUMMARY = ("model/loss", "ac/critic_loss", "ac/actor_loss", "ac/lagrange", "ac/ref_mean",
                 "ac/v_cost", "ac/awr_weight")


def expand_policy(agent: Agent) -> ActorHead:
    """Algorithm 1 line 12: returns the frozen offline actor; the agent gets a new one.

    ``fosp.online_actor_init`` says how the new actor starts: 'fresh' (from scratch, as in
    PEX: the frozen policy is to cover the start of fine-tuning, and the new one is free to
    leave the offline policy's conservative choices) or a 'copy' of the offline actor.
    """
    ac = agent.actor_critic
    offline = copy.deepcopy(ac.actor).requires_grad_(False).eval()
    if agent.config.fosp.online_actor_init == "copy":
        ac.actor = copy.deepcopy(offline).requires_grad_(True).train()
    else:
        ac.actor = build_actor(agent.config, agent.world_model.feat_dim).to(agent.device)
    ac.actor_opt = torch.optim.Adam(ac.actor.parameters(), lr=agent.config.fosp.online_actor_lr,
                                    eps=agent.config.actor_critic.eps)
    ac.online = True
    return offline


# Modules acting never runs: left out of the weights sent to a policy (a third of the size).
NOT_FOR_ACTING = ("actor_critic.slow_critics.", "world_model.image_decoder.",
                  "world_model.pose_decoder.", "world_model.state_decoder.")


def acting_weights(agent: Agent, offline_actor: ActorHead | None) -> dict[str, Any]:
    """What a policy process needs, copied: module weights minus ``NOT_FOR_ACTING``."""
    weights = {"agent": {k: v.detach().clone() for k, v in nn.Module.state_dict(agent).items()
                         if not k.startswith(NOT_FOR_ACTING)}}
    if offline_actor is not None:
        weights["offline_actor"] = {k: v.detach().clone()
                                    for k, v in offline_actor.state_dict().items()}
    return weights


def saved_acting_weights(learner_file: str | os.PathLike) -> dict[str, Any]:
    """The acting weights of a ``Learner.save`` checkpoint (what the policy would load)."""
    state = load_tensors(learner_file)
    weights = {"agent": {k: v for k, v in state["agent"]["modules"].items()
                         if not k.startswith(NOT_FOR_ACTING)}}
    if "offline_actor" in state:
        weights["offline_actor"] = state["offline_actor"]
    return weights


def weights_to_bytes(weights: dict[str, Any]) -> bytes:
    """Acting weights as bytes for a ROS message (tensors and plain containers only)."""
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return buffer.getvalue()


def weights_from_bytes(data: bytes) -> dict[str, Any]:
    """Inverse of ``weights_to_bytes``; ``weights_only`` refuses any pickled code."""
    return load_tensors(io.BytesIO(data), label="the weights message")


def _check_expandable(config: AgentConfig) -> None:
    if config.algo not in FOSP_ALGOS:
        raise ValueError(f"policy expansion needs Q critics; algo {config.algo!r} has none "
                         "(fine-tune it directly: `fosp finetune --no-pex`, or the learner "
                         "node's pex:=false)")


class Learner:
    """Fine-tunes an agent after each trajectory (Algorithm 1 lines 13-24)."""

    def __init__(self, agent: Agent, replay: SequenceReplay, pex: bool = True):
        if pex:
            _check_expandable(agent.config)
        self.agent, self.replay, self.pex = agent, replay, pex
        self.offline_actor = expand_policy(agent) if pex else None
        agent.actor_critic.online = agent.config.algo in FOSP_ALGOS
        if not pex:  # the offline actor goes on with its own optimizer, at the online rate
            for group in agent.actor_critic.actor_opt.param_groups:
                group["lr"] = agent.config.fosp.online_actor_lr
        self.steps = 0
        self.trajectories = 0
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, data_dir: str | os.PathLike | None,
                 pex: bool = True, device: str = "cpu", seed: int = 0,
                 overrides: dict[str, Any] | None = None, skip_bad: bool = False) -> Learner:
        """The pretrained agent of ``run_dir`` with ``data_dir`` as the replay's start (None:
        an empty replay, filled by the online trajectories alone); ``overrides`` change its
        config (see ``load_agent``); ``skip_bad``: see ``load_training_data``."""
        from fosp_core.data.dataset import load_training_data
        from fosp_core.learning.runs import load_agent

        agent, _ = load_agent(run_dir, device, overrides)
        trajectories = load_training_data(data_dir, skip_bad).trajectories if data_dir else []
        c = agent.config
        replay = SequenceReplay(trajectories, c.batch_size, c.batch_length, c.obs_mode,
                                seed=seed, hold_weight=c.fosp.online_hold_weight)
        torch.manual_seed(seed)  # the new actor's init: PexPolicy.from_run makes the same one
        return cls(agent, replay, pex=pex)

    def add_trajectory(self, arrays: dict[str, np.ndarray]) -> None:
        """Algorithm 1 line 15: D = D u tau (see ``fosp.online_success_weight`` and
        ``fosp.online_hold_weight``)."""
        f = self.agent.config.fosp
        with self._lock:
            self.replay.add([arrays], f.online_success_weight, f.online_hold_weight)
            self.trajectories += 1

    def train(self, steps: int, stop: threading.Event | None = None) -> dict[str, float]:
        """``steps`` gradient steps (lines 16-24); mean metrics plus steps and duration_s.

        ``stop`` ends the round early (between steps), e.g. when the process shuts down.
        """
        start = time.perf_counter()
        totals: dict[str, float] = {}
        done = 0
        for _ in range(steps):
            if stop is not None and stop.is_set():
                break
            # One step per lock: a snapshot waits at most one step, never a whole round.
            with self._lock:
                metrics = self.agent.train_step(self.replay.sample())
                self.steps += 1
            # Python locks are not fair: without yielding, this loop would take the lock back
            # at once and a waiting snapshot() could starve for the whole round.
            time.sleep(0.0005)
            done += 1
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
        stats = {key: value / max(done, 1) for key, value in totals.items()}
        stats.update(steps=float(done), duration_s=time.perf_counter() - start)
        return stats

    def snapshot(self) -> dict[str, Any]:
        """Acting weights for ``PexPolicy.load_weights``, consistent (taken between steps)."""
        with self._lock:
            weights = acting_weights(self.agent, self.offline_actor)
            weights["step"] = self.steps
        # The config travels along, so a policy on another machine can build the networks.
        weights["config"] = to_dict(self.agent.config)
        return weights

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            state = {
                "agent": self.agent.state_dict(),
                "replay": self.replay.state_dict(),
                "steps": self.steps,
                "trajectories": self.trajectories,
                "rng": torch.get_rng_state(),
            }
            if self.offline_actor is not None:
                state["offline_actor"] = self.offline_actor.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved learner; its replay must already hold the same trajectories."""
        with self._lock:
            self.agent.load_state_dict(state["agent"])
            self.replay.load_state_dict(state["replay"])
            self.steps, self.trajectories = int(state["steps"]), int(state["trajectories"])
            torch.set_rng_state(state["rng"])
            if self.offline_actor is not None:
                self.offline_actor.load_state_dict(state["offline_actor"])

    def restore(self, state: dict[str, Any], stored: list[dict[str, np.ndarray]]) -> int:
        """Resume from a saved ``state`` after a restart; returns how many of ``stored`` it used.

        ``stored`` are the trajectories kept on disk, in the order they were added. The first
        ``state["trajectories"]`` of them rejoin the replay, then the saved state is loaded
        over it. Any after those were stored after the save (a stop between storing a
        trajectory and the next checkpoint): what to do with them is the caller's choice.
        """
        known = int(state["trajectories"])
        if len(stored) < known:
            raise ValueError(f"the saved learner had {known} trajectories, only {len(stored)} "
                             "are stored: not this learner's trajectories")
        for arrays in stored[:known]:
            self.add_trajectory(arrays)
        self.load_state_dict(state)  # also resets the counters the additions moved
        return known

    def save(self, path: str | os.PathLike, **extra: Any) -> None:
        """Atomic checkpoint; loads with ``torch.load(..., weights_only=True)``. ``extra``
        entries (tensors, plain containers, strings) are saved beside the learner's state."""
        save_tensors({**self.state_dict(), **extra}, Path(path))

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_tensors(path))


def round_summary(stats: dict[str, float]) -> dict[str, float]:
    """The ``ROUND_SUMMARY`` entries of a round's statistics, by their short names."""
    return {key.split("/")[-1]: stats[key] for key in ROUND_SUMMARY if key in stats}


class RoundLog:
    """TensorBoard scalars of every fine-tuning round in ``directory/tb``.

    The x axis is the learner's total gradient steps, so a restarted learner continues its
    curves. ``step`` is where the learner starts: events that a killed process wrote after
    that (its rounds after the last checkpoint) are hidden from TensorBoard.
    Training statistics go under ``finetune/``, a rollout's outcome under ``trajectory/``.
    """

    def __init__(self, directory: str | os.PathLike, step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(directory) / "tb"), purge_step=step + 1)

    def add(self, step: int, stats: dict[str, float],
            outcome: dict[str, Any] | None = None) -> None:
        for key, value in stats.items():
            self.writer.add_scalar(f"finetune/{key}", value, step)
        for key, value in (outcome or {}).items():
            if isinstance(value, (bool, int, float)):
                self.writer.add_scalar(f"trajectory/{key}", float(value), step)
        self.writer.flush()  # a round is minutes apart: show it now, lose nothing on a kill

    def close(self) -> None:
        self.writer.close()


@dataclass
class PolicyStep:
    action: np.ndarray  # (6,) float32 in [-1, 1]
    chosen: str  # "offline" or "online" ("online" without expansion)
    q_tilde: np.ndarray  # eq. 22 for [offline, online] (NaN without expansion)
    probabilities: np.ndarray  # eq. 21 for [offline, online]
    # The foresight stop (``fosp.foresight_stop``): the cost foreseen for the chosen action
    # (NaN when off or already stopped; infinite for a proposal ``fosp.foresight_veto_latch``
    # left out), and whether the zero action was sent instead.
    foreseen_cost: float = float("nan")
    stopped: bool = False
    # ``fosp.foresight_veto``: the cost foreseen for [offline, online], each along its own
    # policy's path (NaN without the veto).
    foreseen_costs: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    vetoed: str = ""  # the proposal the veto left out of the draw ("" when none or both)
    # ``fosp.hold_on_success``: the target was touched this episode; the zero action was sent.
    done: bool = False


@dataclass
class EpisodeLog:
    """What one episode's ``PolicyStep``s say about it, kept for the trajectory's meta by the
    twin rollout and the ROS policy node alike."""

    chosen: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POLICIES, 0))
    policy: list[int] = field(default_factory=list)  # per action: 0 offline, 1 online
    vetoed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POLICIES, 0))
    stopped_at: int | None = None  # the action the foresight stop began at
    held_at: int | None = None  # the action ``fosp.hold_on_success`` began at
    # Per action, |P(online) - P(offline)| of eq. 21 as drawn from: 0 is a coin flip, 1 a
    # certain choice. Acting by sampling, the two proposals' Q-tilde differ by ~0.002 (eq. 22
    # divides by the largest return), so the draw is close to a coin flip (docs/results.md).
    margin: list[float] = field(default_factory=list)

    def add(self, decision: PolicyStep) -> None:
        t = len(self.policy)
        if decision.stopped and self.stopped_at is None:
            self.stopped_at = t
        if decision.done and self.held_at is None:
            self.held_at = t
        self.chosen[decision.chosen] += 1
        if decision.vetoed:
            self.vetoed[decision.vetoed] += 1
        self.policy.append(POLICIES.index(decision.chosen))
        self.margin.append(float(abs(decision.probabilities[1] - decision.probabilities[0])))

    def meta(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "policy": self.policy, "stopped_at": self.stopped_at,
                "vetoed": self.vetoed, "held_at": self.held_at,
                "choice_margin": float(np.mean(self.margin)) if self.margin else None}


class PexPolicy:
    """Acting with safe policy expansion; weights come from ``Learner.snapshot``."""

    def __init__(self, config: AgentConfig, weights: dict[str, Any] | None = None,
                 device: str = "cpu", seed: int = 0):
        self.config = config
        self.agent = Agent(config, device)
        self.offline_actor: ActorHead | None = None
        self.generator = torch.Generator().manual_seed(seed)
        d, f = config.actor_critic.discount, config.fosp
        self.reward_bound = value_upper_bound(f.reward_max, d, f.pex_horizon)
        self.cost_bound = value_upper_bound(f.cost_max, d, f.pex_horizon)
        self.stopped = False  # the foresight stop holds until ``reset``
        self.done = False  # so does ``fosp.hold_on_success`` once the target is touched
        self.latched_out: int | None = None  # ``fosp.foresight_veto_latch``: until ``reset``
        if weights is not None:
            self.load_weights(weights)

    @classmethod
    def from_weights(cls, weights: dict[str, Any], device: str = "cpu", seed: int = 0
                     ) -> PexPolicy:
        """A policy built from a ``Learner.snapshot`` alone (it carries the config)."""
        return cls(from_dict(AgentConfig, weights["config"]), weights, device, seed)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, pex: bool | None = True, device: str = "cpu",
                 seed: int = 0, overrides: dict[str, Any] | None = None) -> PexPolicy:
        """Acting weights straight from a pretrained run, expanded as ``Learner.from_run`` does,
        with the fine-tuning config ``overrides`` (acting settings such as the foresight stop).

        ``pex=None`` expands when the run has Q critics (a FOSP run) and acts directly when not.
        """
        from fosp_core.learning.runs import load_agent

        agent, _ = load_agent(run_dir, device, overrides)
        if pex is None:
            pex = agent.config.algo in FOSP_ALGOS
        elif pex:
            _check_expandable(agent.config)
        torch.manual_seed(seed)
        offline = expand_policy(agent) if pex else None
        return cls(agent.config, acting_weights(agent, offline), device, seed)

    def load_weights(self, weights: dict[str, Any]) -> None:
        """Swap in new weights (call between episodes: the latent state is kept)."""
        missing, unexpected = nn.Module.load_state_dict(self.agent, weights["agent"], strict=False)
        missing = [k for k in missing if not k.startswith(NOT_FOR_ACTING)]
        if missing or unexpected:
            raise ValueError(f"acting weights do not fit this config: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        if "offline_actor" in weights:
            if self.offline_actor is None:
                self.offline_actor = build_actor(self.config, self.agent.world_model.feat_dim)
                self.offline_actor.to(self.agent.device).requires_grad_(False).eval()
            self.offline_actor.load_state_dict(weights["offline_actor"])
        else:
            self.offline_actor = None

    def reset(self) -> None:
        self.agent.reset()
        self.stopped = self.done = False
        self.latched_out = None

    @torch.no_grad()
    def step(self, obs: dict[str, np.ndarray], deterministic: bool = False,
             touching_target: bool = False) -> PolicyStep:
        """One observation (image 64x64 uint8 + pose, or state) -> the action to send.

        ``touching_target``: the reward label of this observation (the labeler's, or the
        twin's); with ``fosp.hold_on_success`` the arm holds still from the first touch."""
        if touching_target and self.config.fosp.hold_on_success:
            self.done = True
        features = self.agent.observe(obs, deterministic)
        actor_input = self.agent.actor_input(features)
        online = self.agent.actor_critic.policy(actor_input, deterministic)
        foreseen_costs, vetoed = np.full(2, np.nan), ""
        counted = foreseen_costs  # the costs the veto and the stop go by (``_counted``)
        if self.offline_actor is None:
            action, chosen = online, "online"
            q_tilde, probabilities = np.full(2, np.nan), np.array([0.0, 1.0])
        else:
            offline_dist = self.offline_actor(actor_input)
            offline = offline_dist.mode if deterministic else offline_dist.sample()
            candidates = torch.cat([offline, online])  # (2, A)
            critics = self.agent.actor_critic.critics
            pairs = torch.cat([features.expand(2, -1), candidates], -1)
            q = normalised_value(critics["q_reward"](pairs).mean(),
                                 critics["q_cost"](pairs).mean(),
                                 self.reward_bound, self.cost_bound)
            p = expansion_probabilities(q, self.config.fosp.pex_temperature)
            if self.config.fosp.foresight_veto and not self._foresight_off():
                foreseen_costs = self._foresee_candidates(candidates)
                counted = self._counted(foreseen_costs)
                p, vetoed = self._veto(p, counted)
            index = int(p.argmax()) if deterministic else int(choose_policy(p, self.generator))
            action, chosen = candidates[index : index + 1], POLICIES[index]
            q_tilde, probabilities = q.cpu().numpy(), p.cpu().numpy()
        foreseen = self._foresee(action, counted[POLICIES.index(chosen)])
        if self.stopped or self.done:
            action = torch.zeros_like(action)
        self.agent.remember_action(action)
        return PolicyStep(action[0].cpu().numpy().astype(np.float32), chosen, q_tilde,
                          probabilities, foreseen, self.stopped, foreseen_costs, vetoed,
                          self.done)

    def _counted(self, foreseen_costs: np.ndarray) -> np.ndarray:
        """The foreseen costs the veto and the stop go by: a latched-out proposal counts as
        foreseen to collide (infinite), so it is never drawn while the other is not."""
        if self.latched_out is None:
            return foreseen_costs
        counted = foreseen_costs.copy()
        counted[self.latched_out] = np.inf
        return counted

    def _veto(self, p: Tensor, counted: np.ndarray) -> tuple[Tensor, str]:
        """``fosp.foresight_veto`` (and its latch) applied to eq. 21's probabilities ``p``
        with the ``_counted`` foreseen costs; also returns the proposal left out of the draw
        ("" when none or both)."""
        p = veto(p, torch.from_numpy(counted), self.config.fosp.foresight_stop)
        dropped = counted >= self.config.fosp.foresight_stop
        if dropped.sum() != 1:
            return p, ""
        if self.config.fosp.foresight_veto_latch:
            self.latched_out = int(dropped.argmax())
        return p, POLICIES[int(dropped.argmax())]

    def _foresight_off(self) -> bool:
        return self.config.fosp.foresight_stop <= 0 or self.stopped or self.done

    def _imagined_cost(self, action: Tensor, actor: nn.Module | None = None) -> float:
        f = self.config.fosp
        step_costs = imagined_step_costs(self.agent.world_model, self.agent.actor_critic,
                                         self.agent.latent, action, f.foresight_horizon,
                                         f.foresight_samples, actor)
        return float(foreseen_cost(step_costs))

    def _foresee(self, action: Tensor, foreseen: float = float("nan")) -> float:
        """The foresight stop (``fosp_core.agent.foresight``): the cost foreseen for
        ``action`` (imagined with the new actor continuing unless the veto already
        foresaw it); sets ``stopped`` from the first step where it reaches
        ``fosp.foresight_stop`` until ``reset``. NaN when off or already stopped."""
        if self._foresight_off():
            return float("nan")
        if np.isnan(foreseen):
            foreseen = self._imagined_cost(action)
        self.stopped = bool(foreseen >= self.config.fosp.foresight_stop)
        return float(foreseen)

    def _foresee_candidates(self, candidates: Tensor) -> np.ndarray:
        """``fosp.foresight_veto``: the cost foreseen for [offline, online] proposals, each
        continued by the policy that proposed it."""
        actors = [self.offline_actor, self.agent.actor_critic.actor]
        return np.array([self._imagined_cost(candidates[i : i + 1], actor)
                         for i, actor in enumerate(actors)])
