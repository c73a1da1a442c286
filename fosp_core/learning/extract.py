"""Policy extraction: a fresh actor fitted once to a trained run's frozen critics (eq. 19-20).

During pretraining the actor chases critics that are still moving: each step's eq. 19
weights come from that step's Q, V and REF, so the actor ends up an average over the critics
of the last few thousand steps. IQL (which FOSP's in-sample value learning follows) separates
the two: value learning first, then advantage-weighted regression onto the final values. This
module does that second phase for any trained run:

1. ``dataset_terms``: every dataset transition goes through the frozen world model as at
   deterministic deployment (whole episodes from their first row, the most likely latent at
   each step, ``deployment_posterior``) and gets eq. 19's terms from
   ``ActorCritic.offline_terms`` with the run's config and return scales;
2. ``fit_actor``: a fresh actor (``build_actor``) minimises eq. 20, -mean(w log pi(a|s) +
   eta H), over random batches of those rows;
3. ``extract_policy``: writes a new run directory, the old one's weights with the fitted actor
   in place of its own. It evaluates and fine-tunes like any run; like an exported run it has
   no optimiser or sampler state, so it cannot be resumed as a pretraining run.

``weights: safe-success`` departs from the paper (``regression_weights``): the actor clones,
with equal weights, the demonstrations that reached the target without earning a cost, and
eq. 19 is not used for it (the run keeps FOSP's critics, which fine-tuning's PEX reads). In
image mode that was safer than eq. 19's weights on the same frozen features
(docs/implementation.md): the data's own outcome labels, which the operator gives on the
robot too, separate safe from unsafe demonstrations better than the learned critics do.

``benchmarks/eq19_weights.py`` uses the same functions to compare weightings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fosp_core.agent.actor_critic import build_actor
from fosp_core.agent.agent import Agent
from fosp_core.agent.math import awr_actor_loss
from fosp_core.agent.networks import ActorHead
from fosp_core.agent.world_model import Latent
from fosp_core.data.dataset import OUTCOME_KEYS
from fosp_core.util import jsonfile
from fosp_core.util.config import merge, save_yaml
from fosp_core.util.files import write_text

TERMS = ("adv_reward", "adv_cost", "v_cost", "reach", "weights")
WEIGHTINGS = ("eq19", "safe-success")  # what eq. 20 weighs each dataset transition with
EXTRACT_NAME = "extract.json"  # what a policy extraction did
ACTOR_PREFIX = "actor_critic.actor."  # the actor's keys in an Agent's state dict


def deployment_posterior(agent: Agent, obs: dict[str, Tensor], action: Tensor,
                         is_first: Tensor) -> Latent:
    """Posterior states (1, T, ...) of one episode as ``Agent.observe`` finds them when acting
    deterministically: each step's most likely latent is what the next step starts from.

    The weights then depend on the data alone (no sampled latents), and the critics judge
    each row from the state the deployed actor will be in.
    """
    rssm = agent.world_model.rssm
    embed = agent.world_model.encode(obs)
    state, states = rssm.initial(1, agent.device), []
    for t in range(embed.shape[1]):
        state, _ = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
        state = state.mode()
        states.append(state)
    return Latent.stack(states, 1)


@torch.no_grad()
def dataset_terms(agent: Agent, trajectories: list[Any]) -> list[dict[str, Any]]:
    """Per trajectory: frozen features, what the actor reads, dataset actions, eq. 19's terms.

    Each dict holds per-transition tensors ``state`` (features), ``actor_input``, ``action``,
    ``latent`` (the posterior) and the ``TERMS``, and the trajectory's ``meta``, ``success``,
    ``violation`` and ``first_cost`` (the first transition that earned a cost, or None).
    """
    ac = agent.actor_critic
    scales = ac.return_scales()
    key = agent.normalizer.key
    out = []
    for trajectory in trajectories:
        arrays = trajectory.arrays
        obs = agent.normalizer({k: torch.as_tensor(arrays[k])[None].to(agent.device)
                                for k in (key, "image") if k in arrays})
        action = torch.as_tensor(arrays["action"])[None].float().to(agent.device)
        is_first = torch.zeros(action.shape[:2], dtype=torch.bool, device=agent.device)
        is_first[0, 0] = True
        posterior = deployment_posterior(agent, obs, action, is_first)
        features = ac.inputs(posterior)[0]
        # Dreamer rows: the action out of row t is stored in row t + 1.
        data = {"state": features[:-1], "action": action[0, 1:].clamp(-1, 1)}
        terms = ac.offline_terms(data, scales)
        state = obs[key][0, :-1] if key == "state" else None
        costs = torch.as_tensor(arrays["cost"][1:])  # the cost each transition earned
        out.append({**data, **{k: terms[k] for k in TERMS},
                    "actor_input": ac.actor_input(data["state"], state),
                    "latent": posterior.map(lambda x: x[0, :-1]),
                    "meta": trajectory.meta,
                    "success": bool(arrays["reward"].sum() > 0),
                    "first_cost": int(torch.nonzero(costs > 0)[0]) if (costs > 0).any() else None,
                    "violation": bool(trajectory.meta.get("violation", arrays["cost"].sum() > 0))})
    return out


def weight_by_outcome(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """How eq. 19 weighs each kind of demonstration: per outcome, its transitions and their
    mean weight relative to the mean over all transitions (1 = as behaviour cloning would).

    ``unsafe_lead_in`` are the transitions of violating demonstrations up to and including
    the one that earned the first cost: the moves a safe actor must not copy.
    """
    total = torch.cat([r["weights"] for r in rows])
    mean = float(total.mean())
    groups: dict[str, list[Tensor]] = {name: [] for name in (*OUTCOME_KEYS, "unsafe_lead_in")}
    for r in rows:
        safety = "unsafe" if r["violation"] else "safe"
        groups[f"{safety}_{'success' if r['success'] else 'fail'}"].append(r["weights"])
        if r["first_cost"] is not None:
            groups["unsafe_lead_in"].append(r["weights"][:r["first_cost"] + 1])
    return {name: {"transitions": sum(len(w) for w in ws),
                   "relative_weight": float(torch.cat(ws).mean()) / mean}
            for name, ws in groups.items() if ws}


def regression_weights(rows: list[dict[str, Any]], weighting: str) -> Tensor:
    """The weight of every transition in eq. 20, in ``rows`` order (``dataset_terms``).

    ``eq19``: the paper's weights, as training computes them. ``safe-success``: 1 on each
    transition of a demonstration that reached the target and earned no cost, 0 elsewhere
    (filtered behaviour cloning).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weights must be one of {WEIGHTINGS}, got {weighting!r}")
    if weighting == "eq19":
        return torch.cat([r["weights"] for r in rows])
    kept = [float(r["success"] and not r["violation"]) for r in rows]
    if not any(kept):
        raise ValueError("weights 'safe-success': no demonstration reached the target "
                         "without a cost")
    return torch.cat([torch.full_like(r["weights"], k) for r, k in zip(rows, kept)])


def fit_actor(inputs: Tensor, actions: Tensor, weights: Tensor, config, updates: int,
              seed: int, extra_loss: Callable[[ActorHead, Tensor], Tensor] | None = None,
              progress: bool = False) -> ActorHead:
    """A fresh actor (``build_actor``) trained ``updates`` steps on eq. 20 with fixed weights.

    Each step draws as many rows as a pretraining step's batch holds pairs, with replacement.
    ``extra_loss(actor, rows)`` is added to the loss (benchmarks try other terms with it).
    """
    from tqdm import tqdm

    if updates < 1:
        raise ValueError(f"need at least one update, got {updates}")
    if not len(inputs) == len(actions) == len(weights):
        raise ValueError(f"inputs, actions and weights differ in length: {len(inputs)}, "
                         f"{len(actions)}, {len(weights)}")
    torch.manual_seed(seed)
    ac = config.actor_critic
    actor = build_actor(config, inputs.shape[1]).to(inputs.device)
    opt = torch.optim.Adam(actor.parameters(), lr=ac.actor_lr, eps=ac.eps)
    batch = config.batch_size * (config.batch_length - 1)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(updates), desc="extract", unit="update", disable=not progress):
        rows = torch.randint(len(inputs), (batch,), generator=generator).to(inputs.device)
        dist = actor(inputs[rows])
        loss = awr_actor_loss(dist.log_prob(actions[rows]), dist.entropy(), weights[rows],
                              ac.entropy)
        if extra_loss is not None:
            loss = loss + extra_loss(actor, rows)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(actor.parameters(), ac.grad_clip)  # as in training
        opt.step()
    return actor


def extract_policy(run_dir: str | os.PathLike, out_dir: str | os.PathLike, updates: int,
                   data: str | os.PathLike | None = None, seed: int = 0,
                   step: int | None = None, overrides: dict[str, Any] | None = None,
                   device: str = "cpu", progress: bool = True, skip_bad: bool = False,
                   weights: str = "eq19") -> dict[str, Any]:
    """Fit a fresh actor to ``run_dir``'s frozen critics and write the run to ``out_dir``.

    ``overrides`` change the config first (eq. 19's temperatures and cap, the entropy weight,
    and the new actor's ``actor_input`` / ``actor_dist``, which need no old weights);
    ``weights`` picks the regression weights (``regression_weights``). Returns what was
    done, also written to ``out_dir/extract.json``.
    """
    from fosp_core.data.dataset import load_training_data
    from fosp_core.learning.runs import (
        CHECKPOINT_NAME,
        CONFIG_NAME,
        DATASET_NAME,
        load_checkpoint,
        load_run_config,
        run_dataset,
        save_weights,
    )

    if updates < 1:
        raise ValueError(f"need at least one update, got {updates}")
    if weights not in WEIGHTINGS:
        raise ValueError(f"weights must be one of {WEIGHTINGS}, got {weights!r}")
    run, out = Path(run_dir), Path(out_dir)
    if (out / CHECKPOINT_NAME).exists():
        raise ValueError(f"{out}: already holds a checkpoint; choose another --out")
    if out.resolve() == run.resolve():
        raise ValueError("--out must differ from --run (the run's own actor is kept there)")
    config = merge(load_run_config(run), overrides or {})
    if not config.algo.startswith("fosp"):
        raise ValueError(f"{run}: algo {config.algo!r} has no eq. 19 weights to extract with; "
                         "policy extraction needs a FOSP run")
    data = run_dataset(run, data)
    checkpoint = load_checkpoint(run, step)
    agent = Agent(config, device)
    # Everything but the actor comes from the run; the fresh actor may read another input or
    # use another distribution than the run's, so its old weights are not loaded at all.
    modules = agent.state_dict()["modules"]
    modules.update({k: v for k, v in checkpoint["agent"]["modules"].items()
                    if not k.startswith(ACTOR_PREFIX)})
    agent.load_state_dict({"modules": modules, "optimizers": {}})
    agent.eval()
    agent.requires_grad_(False)

    dataset = load_training_data(data, skip_bad)
    rows = dataset_terms(agent, dataset.trajectories)
    inputs, actions = (torch.cat([r[k] for r in rows]) for k in ("actor_input", "action"))
    eq19, fitted = regression_weights(rows, "eq19"), regression_weights(rows, weights)
    actor = fit_actor(inputs, actions, fitted, config, updates, seed, progress=progress)
    agent.actor_critic.actor.load_state_dict(actor.state_dict())

    out.mkdir(parents=True, exist_ok=True)
    save_yaml(config, out / CONFIG_NAME)
    write_text(out / DATASET_NAME, str(Path(data).resolve()) + "\n")
    from_step = int(checkpoint["step"])
    save_weights(out / CHECKPOINT_NAME, from_step, agent.state_dict()["modules"])
    info = {"extracted_from": str(run.resolve()), "step": from_step, "updates": updates,
            "seed": seed, "data": str(Path(data).resolve()), "overrides": overrides or {},
            "weights": weights, "rows": len(fitted),
            "rows_weighted": int((fitted > 0).sum()),
            # eq. 19's view of the data, whichever weights the actor was fitted with
            "weight_mean": float(eq19.mean()), "weight_max": float(eq19.max()),
            "by_outcome": weight_by_outcome(rows)}
    jsonfile.write(info, out / EXTRACT_NAME)
    return info
