"""How well the transferred critics rank the two proposals of policy expansion (eq. 21-22).

    .venv/bin/python benchmarks/pex_ranking.py --run RUN [--task T] [--episodes 6] \
        [--data DATA [--cost-max 1,0.3,0.1]]

Acts on ``--task`` with ``PexPolicy`` freshly expanded from a pretrained run (the new actor
as ``fosp.online_actor_init`` makes it) and, at every step, records Q-tilde(offline proposal)
- Q-tilde(online proposal). It prints that difference's spread and, for a range of inverse
temperatures, the mean eq. 21 probability of the offline proposal and how often the critics
prefer it outright. If the critics prefer an untrained actor's proposal at many steps, no
temperature makes expansion safe.

With ``--data``: does Q-tilde tell a move into a violation from a safe one? Every
demonstration goes through the frozen world model as ``fosp extract`` sees it
(``dataset_terms``). At the last 10 steps before each violating demonstration's first cost,
and at every step of the safe successful ones, it compares Q-tilde of the demonstrated action
with Q-tilde of the run's actor's most likely action and prints how often the demonstrated
one is preferred, by Q-tilde with each ``--cost-max`` (c_max of eq. 22; a smaller one weighs
the cost term more) and by Q^c alone. Critics that rank well prefer the demonstrated move
less often before a violation than on the safe successes. It asserts nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fosp_core.agent.pex import normalised_value, value_upper_bound
from fosp_core.data.dataset import load_dataset
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import EPISODE_STEPS, TASKS
from fosp_core.learning.extract import dataset_terms
from fosp_core.learning.finetune import PexPolicy
from fosp_core.learning.runs import load_agent

LEAD_IN = 10  # steps before a violation's first cost that count as leading into it


@torch.no_grad()
def rank_demonstrations(run: str, data: str, cost_maxes: list[float]) -> None:
    """How often Q-tilde (and Q^c alone) prefers the demonstrated action to the actor's."""
    agent, _ = load_agent(run)
    agent.eval()
    ac, f = agent.actor_critic, agent.config.fosp
    gamma = agent.config.actor_critic.discount
    reward_bound = value_upper_bound(f.reward_max, gamma, f.pex_horizon)
    groups: dict[str, list[np.ndarray]] = {"lead-in": [], "safe success": []}
    for row in dataset_terms(agent, load_dataset(data).trajectories):
        if row["first_cost"] is not None:
            steps = slice(max(0, row["first_cost"] + 1 - LEAD_IN), row["first_cost"] + 1)
            group = "lead-in"
        elif row["success"]:
            steps, group = slice(None), "safe success"
        else:
            continue
        state = row["state"][steps]
        actor_action = ac.actor(row["actor_input"][steps]).mode
        proposals = {"data": row["action"][steps], "actor": actor_action}
        q = {}
        for name, action in proposals.items():
            pairs = torch.cat([state, action], -1)
            q[name] = (ac.critics["q_reward"](pairs).mean(), ac.critics["q_cost"](pairs).mean())
        prefers = [q["data"][1] < q["actor"][1]]  # Q^c alone
        for cost_max in cost_maxes:
            cost_bound = value_upper_bound(cost_max, gamma, f.pex_horizon)
            data_q, actor_q = (normalised_value(*q[n], reward_bound, cost_bound) for n in q)
            prefers.append(data_q > actor_q)
        groups[group].append(torch.stack(prefers, -1).float().numpy())
    header = "".join(f"  c_max {c:<5g}" for c in cost_maxes)
    print(f"{run}: how often the demonstrated action is preferred to the actor's")
    print(f"{'':28s}{'steps':>6s}  Q^c alone{header}")
    for group, parts in groups.items():
        share = np.concatenate(parts).mean(0)
        cells = "".join(f"  {x:11.2f}" for x in share[1:])
        label = f"{group}" + (f" (last {LEAD_IN})" if group == "lead-in" else "")
        print(f"{label:28s}{sum(len(p) for p in parts):6d}  {share[0]:9.2f}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="pretrained run (state or image mode)")
    parser.add_argument("--task", default="safereach-obstacle-shape", choices=TASKS)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="rank the demonstrations of this dataset instead")
    parser.add_argument("--cost-max", default="1,0.3,0.1",
                        help="c_max values of eq. 22 to rank with (with --data)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.data:
        rank_demonstrations(args.run, args.data, [float(c) for c in args.cost_max.split(",")])
        return

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
