"""Reference point for the offline learning figures: behaviour cloning on the true state.

    .venv/bin/python benchmarks/bc_state.py --data DIR [--safe-only] [--reached-only] \
        [--updates 3000] [--dist truncated_normal|normal]

No world model and no critics: the actor network of the agent (``ActorHead``, cpu-config
sizes) regresses onto the dataset's actions from the twin's 25-D true state, standardised by
the agent's own ``VectorNormalizer``. Rows are drawn uniformly. It prints success and
violation rates on ``safereach`` (deterministic actions). ``--dist`` is the actor's
distribution (``actor_critic.actor_dist``). It tells how far plain imitation
of a dataset gets, i.e. what FOSP's weighting has to add; it asserts nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fosp_core.agent.agent import VectorNormalizer
from fosp_core.agent.config import ACTOR_DISTRIBUTIONS
from fosp_core.agent.networks import ActorHead
from fosp_core.data.dataset import load_dataset
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.envs.tasks import EPISODE_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--safe-only", action="store_true", help="only violation-free episodes")
    parser.add_argument("--reached-only", action="store_true",
                        help="only episodes that reached the target")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dist", choices=ACTOR_DISTRIBUTIONS, default="truncated_normal",
                        help="the actor's distribution")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    trajectories = load_dataset(args.data).trajectories
    if args.safe_only:
        trajectories = [t for t in trajectories if not t.meta["violation"]]
    if args.reached_only:
        trajectories = [t for t in trajectories if t.arrays["reward"].sum() > 0]
    # Dreamer rows: the action out of row t is stored in row t + 1.
    states = np.concatenate([t.arrays["state"][:-1] for t in trajectories])
    actions = np.concatenate([t.arrays["action"][1:] for t in trajectories])
    normalizer = VectorNormalizer("state", states.shape[1])
    normalizer.fit(states)
    x = normalizer({"state": torch.as_tensor(states)})["state"]
    y = torch.as_tensor(actions).float().clamp(-1, 1)

    actor = ActorHead(x.shape[1], y.shape[1], 256, 2, 0.1, 1.0, args.dist)
    opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    for _ in range(args.updates):
        rows = torch.randint(len(x), (256,))
        loss = -actor(x[rows]).log_prob(y[rows]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    env = SafeReachEnv("safereach", obs_mode="state")
    success = violation = 0
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        reward = cost = 0.0
        for _ in range(EPISODE_STEPS):
            with torch.no_grad():
                state = normalizer({"state": torch.as_tensor(obs["state"])[None]})["state"]
                action = actor(state).mode[0].numpy()
            obs, r, _, _, info = env.step(action)
            reward, cost = reward + r, cost + info["cost"]
        success += reward > 0
        violation += cost > 0
    env.close()
    kept = [word for word, on in (("violation-free", args.safe_only),
                                  ("reaching", args.reached_only)) if on]
    which = " ".join(kept + ["episodes"]) if kept else "all episodes"
    print(f"BC on the true state, {len(trajectories)} {which} of {args.data}, "
          f"{args.updates} updates, {args.dist} actor, seed {args.seed}: "
          f"success {success / args.episodes:.0%}, "
          f"violating episodes {violation / args.episodes:.0%} ({args.episodes} episodes)")


if __name__ == "__main__":
    main()
