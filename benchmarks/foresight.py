"""Does the world model foresee the violations? The numbers behind ``fosp.foresight_stop``.

    .venv/bin/python benchmarks/foresight.py --finetuned OUT [--episodes 20] [--horizon 10] \
        [--samples 8] [--thresholds 0.3,0.5,0.8] [--alternatives] [--seed 0]

Loads a ``fosp finetune`` output (``OUT/config.yaml``, ``OUT/learner.pt``, ``OUT/report.json``)
and acts on its evaluation layouts with the stop off, as the report's 'after' row did. At
every step it records the cost foreseen for the action sent (``fosp_core.agent.foresight``).
It prints, for each violating episode, the foreseen cost over the steps up to its first cost;
the spread over the steps of the safe episodes before they first touch the target; and, for
each threshold, how many violating episodes the stop would have ended before their first
cost and how many safe successes before their touch (false alarms).

With ``--alternatives``, at each step whose foreseen cost reaches the lowest threshold it
also imagines holding each of 27 constant moves (x, y, z in -1, 0, 1) for the horizon,
plays the same moves in a copy of the simulator, and prints the AUC of the imagined cost
against whether the move really led to a cost: could the world model pick a safe detour?
It asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from fosp_core.agent.config import AgentConfig
from fosp_core.agent.foresight import foreseen_cost, imagined_step_costs
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.learning.finetune import PexPolicy, saved_acting_weights
from fosp_core.learning.finetune_run import EVAL_SEED_OFFSET, rollout
from fosp_core.util.config import load_yaml


def constant_moves(action_dim: int) -> torch.Tensor:
    """27 actions: every x, y, z in {-1, 0, 1} (unit length at most), no rotation."""
    moves = torch.tensor(list(itertools.product([-1.0, 0.0, 1.0], repeat=3)))
    moves = moves / moves.norm(dim=1, keepdim=True).clamp(min=1.0)
    out = torch.zeros(len(moves), action_dim)
    out[:, :3] = moves
    return out


@torch.no_grad()
def alternatives(policy: PexPolicy, env: SafeReachEnv, twin: SafeReachEnv, horizon: int,
                 samples: int) -> list[tuple[float, bool]]:
    """(imagined cost, really violated) for each constant move held from the current step."""
    wm, latent = policy.agent.world_model, policy.agent.latent
    moves = constant_moves(policy.config.action_dim)
    rows = []
    for move in moves:
        start = latent.map(lambda x: x.expand(samples, *x.shape[1:]))
        states, _ = wm.imagine(lambda s, m=move: m.expand(samples, -1), start, horizon)
        imagined = float(foreseen_cost(wm.cost_head(states.features()[1:]).mean()))
        twin.copy_state_from(env)
        hit = False
        for _ in range(horizon):
            hit |= twin.step(move.numpy())[4]["cost"] > 0
        rows.append((imagined, hit))
    return rows


def auc(scores_positive: np.ndarray, scores_negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half."""
    if len(scores_positive) == 0 or len(scores_negative) == 0:
        return float("nan")
    diff = scores_positive[:, None] - scores_negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finetuned", required=True, help="a fosp finetune --out folder")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--thresholds", default="0.3,0.5,0.8")
    parser.add_argument("--alternatives", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="seeds the latent draws")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    thresholds = [float(t) for t in args.thresholds.split(",")]

    out = Path(args.finetuned)
    report = json.loads((out / "report.json").read_text())
    config = load_yaml(AgentConfig, out / "config.yaml")
    config.fosp.foresight_stop = 0.0  # act as the report did; only measure
    policy = PexPolicy(config, saved_acting_weights(out / "learner.pt"), seed=report["seed"])
    env = SafeReachEnv(task=report["task"], obs_mode=config.obs_mode)
    twin = SafeReachEnv(task=report["task"], obs_mode="state") if args.alternatives else None

    foreseen: list[float] = []
    detours: list[list[tuple[float, bool]]] = []  # per alarmed step, one row per move
    step = policy.step

    def measured_step(obs, deterministic=False, touching_target=False):
        decision = step(obs, deterministic, touching_target)
        action = torch.as_tensor(decision.action)[None]
        costs = imagined_step_costs(policy.agent.world_model, policy.agent.actor_critic,
                                    policy.agent.latent, action, args.horizon, args.samples)
        foreseen.append(float(foreseen_cost(costs)))
        if twin is not None and foreseen[-1] >= min(thresholds):
            detours.append(alternatives(policy, env, twin, args.horizon, args.samples))
        return decision

    policy.step = measured_step
    episodes = []
    for k in range(args.episodes):
        seed = EVAL_SEED_OFFSET + report["seed"] + k
        foreseen.clear()
        if twin is not None:
            twin.reset(seed=seed)
        arrays, _, _ = rollout(env, policy, seed, deterministic=True, render=False)
        # Row t + 1 holds the result of the action foreseen at step t.
        reward, cost = arrays["reward"][1:], arrays["cost"][1:]
        episodes.append({"touch": int(np.argmax(reward > 0)) if reward.any() else None,
                         "first_cost": int(np.argmax(cost > 0)) if cost.any() else None,
                         "foreseen": np.array(foreseen)})
    env.close()

    print(f"{out}: {report['task']}, {args.episodes} evaluation episodes, horizon "
          f"{args.horizon}, {args.samples} draws")
    violating = [e for e in episodes if e["first_cost"] is not None]
    safe = [e for e in episodes if e["first_cost"] is None]
    for e in violating:
        lead = e["foreseen"][max(0, e["first_cost"] - 5):e["first_cost"] + 1]
        print(f"  violating: touch {e['touch']}, first cost after action {e['first_cost']}, "
              f"foreseen over the last {len(lead)} actions: {np.round(lead, 2).tolist()}")
    before_touch = [e["foreseen"][:e["touch"]] if e["touch"] is not None else e["foreseen"]
                    for e in safe]
    pooled = np.concatenate(before_touch) if before_touch else np.zeros(0)
    if len(pooled):
        q = np.quantile(pooled, [0.5, 0.9, 0.99, 1.0])
        print(f"  safe episodes, {len(pooled)} steps before the touch: foreseen cost median "
              f"{q[0]:.3f}, 90% {q[1]:.3f}, 99% {q[2]:.3f}, max {q[3]:.3f}")
    for threshold in thresholds:
        caught = sum(bool((e["foreseen"][:e["first_cost"] + 1] >= threshold).any())
                     for e in violating)
        alarms = sum(bool((f >= threshold).any()) for f, e in zip(before_touch, safe)
                     if e["touch"] is not None)
        successes = sum(e["touch"] is not None for e in safe)
        print(f"  threshold {threshold}: stops {caught} of {len(violating)} violating episodes "
              f"before their first cost, and {alarms} of {successes} safe successes before "
              f"their touch")
    if twin is not None:
        twin.close()
        rows = np.array([row for step in detours for row in step]).reshape(-1, 2)
        scores, hits = rows[:, 0], rows[:, 1].astype(bool)
        print(f"  detours: {len(rows)} constant moves from {len(detours)} alarmed steps, "
              f"{hits.mean():.0%} really led to a cost; AUC of the imagined cost against "
              f"that, pooled: {auc(scores[hits], scores[~hits]):.3f}")
        # What a re-planner would do: take the move the model thinks safest, at each step.
        some_safe = [step for step in detours if not all(hit for _, hit in step)]
        picked_safe = sum(not min(step)[1] for step in some_safe)
        within = [auc(np.array([c for c, h in step if h]), np.array([c for c, h in step if not h]))
                  for step in some_safe]
        within = [w for w in within if not np.isnan(w)]
        print(f"  at {len(some_safe)} of {len(detours)} alarmed steps some move was really "
              f"safe; the move the model thought safest was at {picked_safe}; AUC within "
              f"a step, mean {np.mean(within) if within else float('nan'):.3f}")


if __name__ == "__main__":
    main()
