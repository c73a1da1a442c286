"""How well the transferred critics rank the two proposals of policy expansion (eq. 21-22).

    .venv/bin/python benchmarks/pex_ranking.py --run RUN [--task T] [--episodes 6]

Acts on ``--task`` with ``PexPolicy`` freshly expanded from a pretrained run (the new actor
as ``fosp.online_actor_init`` makes it) and, at every step, records Q-tilde(offline proposal)
- Q-tilde(online proposal). It prints that difference's spread and, for a range of inverse
temperatures, the mean eq. 21 probability of the offline proposal and how often the critics
prefer it outright. If the critics prefer an untrained actor's proposal at many steps, no
temperature makes expansion safe. It asserts nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fosp_core.envs.safereach import EPISODE_STEPS, TASKS, SafeReachEnv
from fosp_core.finetune import PexPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="pretrained run (state or image mode)")
    parser.add_argument("--task", default="safereach-obstacle-shape", choices=TASKS)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    policy = PexPolicy.from_run(args.run, seed=args.seed)
    env = SafeReachEnv(task=args.task, obs_mode=policy.config.obs_mode)
    diffs = []
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=1000 + args.seed + episode)
        policy.reset()
        for _ in range(EPISODE_STEPS):
            step = policy.step(obs)  # sampled, as during fine-tuning
            diffs.append(step.q_tilde[0] - step.q_tilde[1])
            obs, _, terminated, truncated, _ = env.step(step.action)
            if terminated or truncated:
                break
    d = np.array(diffs)
    p10, p50, p90 = np.percentile(d, [10, 50, 90])
    print(f"{args.run} on {args.task}: {len(d)} steps, Q-hat* {policy.reward_bound:.1f}, "
          f"C-hat* {policy.cost_bound:.1f}")
    print(f"Q-tilde(offline) - Q-tilde(online): p10 {p10:+.4f}  p50 {p50:+.4f}  p90 {p90:+.4f}")
    print(f"critics prefer the offline proposal at {np.mean(d > 0):.0%} of steps")
    for beta in (1, 10, 100, 1000):
        p_offline = 0.5 * (1 + np.tanh(0.5 * beta * d))  # eq. 21 for two candidates
        print(f"inverse temperature {beta:5d}: P(offline) mean {p_offline.mean():.2f}")


if __name__ == "__main__":
    main()
