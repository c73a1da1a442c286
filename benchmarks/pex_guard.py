"""Does eq. 21's draw between the two sampled proposals guard the fine-tuning robot?

    .venv/bin/python benchmarks/pex_guard.py --run RUN [--round K] [--task T] \
        [--episodes 200] [--settings offline,online,10:1,1000:1,1000:0.03]

Acts by sampling, as fine-tuning does, with the policy of ``RUN``: a ``fosp finetune``
output (its final weights, or those kept after ``--round``) or a pretrained run (expanded as
fine-tuning starts). Every setting plays the same episodes (seeds 20000, 20001, ...), and in
each step both actors draw their proposals from the same random state, so the settings
differ only in which proposal is sent:

- ``offline`` / ``online``: always that proposal (the frozen policy alone, the new one alone);
- ``T:C``: eq. 21 with inverse temperature T and eq. 22 with c_max = C times the config's.

Per setting it prints success and violating episodes, the share of actions the online
proposal took, and ``choice_margin`` (mean |P(online) - P(offline)|: 0 is a coin flip).
A guard that works violates less than both ``offline`` and ``online``; a coin flip lands
between them. It also prints how far apart eq. 22 puts the two proposals (|Q-tilde gap|).
It asserts nothing.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import numpy as np
import torch

import fosp_core.learning.finetune as finetune
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import TASKS
from fosp_core.learning.finetune import PexPolicy
from fosp_core.learning.finetune_run import finetuned_policy, is_finetuned, rollout

FIRST_SEED = 20000


@contextmanager
def pinned_draw(setting: str):
    """Eq. 21's probabilities as the setting says, restoring the library's afterwards.
    Both proposals are still drawn at every step, which keeps the settings' noise paired."""
    original = finetune.expansion_probabilities
    if setting in ("offline", "online"):
        pinned = torch.tensor([1.0, 0.0] if setting == "offline" else [0.0, 1.0])
        finetune.expansion_probabilities = lambda q, temperature: pinned
    try:
        yield
    finally:
        finetune.expansion_probabilities = original


@contextmanager
def recorded_gaps(gaps: list[float], config_cost_bound: float):
    """Appends Q-tilde(online) - Q-tilde(offline) of every step to ``gaps``, with the
    config's C-hat* whatever the setting's."""
    original = finetune.normalised_value

    def recording(q_reward, q_cost, reward_bound, cost_bound):
        gap = original(q_reward, q_cost, reward_bound, config_cost_bound)
        gaps.append(float(gap[1] - gap[0]))
        return original(q_reward, q_cost, reward_bound, cost_bound)

    finetune.normalised_value = recording
    try:
        yield
    finally:
        finetune.normalised_value = original


def play(policy: PexPolicy, env: SafeReachEnv, setting: str, episodes: int,
         gaps: list[float]) -> dict[str, float]:
    temperature, cost_bound = policy.config.fosp.pex_temperature, policy.cost_bound
    if setting not in ("offline", "online"):
        t, c = setting.split(":")
        policy.config.fosp.pex_temperature, policy.cost_bound = float(t), cost_bound * float(c)
    flags = []
    try:
        with pinned_draw(setting), recorded_gaps(gaps, cost_bound):
            for k in range(episodes):
                torch.manual_seed(FIRST_SEED + k)  # the proposals' noise, the same per setting
                policy.generator.manual_seed(k)  # eq. 21's draw
                arrays, meta, chosen = rollout(env, policy, FIRST_SEED + k, deterministic=False,
                                               render=False)
                flags.append((arrays["reward"].any(), arrays["cost"].any(),
                              chosen["online"] / max(1, sum(chosen.values())),
                              meta["choice_margin"]))
    finally:
        policy.config.fosp.pex_temperature, policy.cost_bound = temperature, cost_bound
    success, violating, online, margin = np.array(flags, dtype=float).mean(0)
    return {"success": success, "violating": violating, "online": online, "margin": margin}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--round", type=int, default=None)
    parser.add_argument("--task", default="safereach-more-obstacles", choices=sorted(TASKS))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--settings", default="offline,online,10:1,1000:1,1000:0.03")
    args = parser.parse_args()
    if is_finetuned(args.run):
        policy = finetuned_policy(args.run, round_=args.round)
    else:
        policy = PexPolicy.from_run(args.run)
    if policy.offline_actor is None:
        raise SystemExit(f"{args.run}: no frozen offline policy (direct fine-tuning)")
    env = SafeReachEnv(task=args.task, obs_mode=policy.config.obs_mode)
    print(f"{args.run} on {args.task}, {args.episodes} sampled episodes per setting")
    print(f"{'setting':>12} {'success':>8} {'violating':>10} {'online':>7} {'margin':>7}")
    gaps: list[float] = []
    for setting in args.settings.split(","):
        r = play(policy, env, setting, args.episodes, gaps)
        print(f"{setting:>12} {r['success']:8.1%} {r['violating']:10.1%} {r['online']:7.0%} "
              f"{r['margin']:7.3f}")
    gap = np.abs(gaps)
    print(f"|Q-tilde gap| between the proposals (eq. 22 with the config's c_max, every "
          f"step played): median {np.median(gap):.4f}, 90th percentile "
          f"{np.quantile(gap, 0.9):.4f}, max {gap.max():.4f}")


if __name__ == "__main__":
    main()
