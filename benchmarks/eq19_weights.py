"""Where eq. 19 puts its weight: a trained run's advantages and weights per kind of demonstration.

    .venv/bin/python benchmarks/eq19_weights.py --run models/fosp-safereach-state --data data/real \
        [--updates 4000 --episodes 50] [--imagine ALPHA,KAPPA ...] \
        [--actor-input state|decoded] [--dist normal]

The run's world model, critics and REF are frozen. Every dataset transition goes through the
world model as at deterministic deployment (whole episodes, from their first row, the most
likely latent at each step) and gets eq. 19's terms from ``ActorCritic.offline_terms`` with
the run's config and return scales: ``fosp_core.learning.extract.dataset_terms``, what
``fosp extract``
fits its actor to. (The README's figures from before ``fosp extract`` existed were made with
sampled latents.) It prints:

1. per kind of demonstration (behaviour x reached the target): the share of rows, the share of
   eq. 19's weight, and the mean A^r, A^c, V^c and REF u;
2. at the first transition of layouts the data holds both a safe and a violating demonstration
   of (the route is chosen there), A^r and A^c of the violating and of the safe one;
3. with ``--updates N``: a fresh actor trained for N updates on the frozen features by weighted
   regression onto the dataset actions, with (a) the run's eq. 19 weights, (b) weight 1 on
   every row (behaviour cloning), (c) weight 1 on the rows of safe demonstrations that reached
   the target and 0 elsewhere (the best any reweighting of the data can do), each evaluated
   like ``fosp eval`` (deterministic, layouts 0..episodes-1 of ``safereach``);
4. with ``--imagine ALPHA,KAPPA`` (repeatable): (a) plus a policy-improvement term through the
   frozen world model, - ALPHA * R / mean|R| with R the imagined return of r - KAPPA c
   (``imagined_return``), i.e. eq. 19 as the in-sample regulariser of a Dreamer-style actor;
5. with ``--actor-input state`` or ``decoded`` (state-mode runs): the fresh actors of 3. read the
   true state, or the state the run's decoder reconstructs from the features, instead of the
   features (the weights still come from the frozen critics): whether the features lose what
   the actor needs. Both are symlog-standardised, the decoder's own target space. The
   default is what the run's actor reads (``actor_critic.actor_input``).
   ``--dist`` gives the fresh actors another distribution than the run's ``actor_dist``.

It tells whether the weighting or the imitation itself is what violates; it asserts nothing.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

from fosp_core.agent.config import ACTOR_DISTRIBUTIONS
from fosp_core.agent.math import lambda_returns
from fosp_core.agent.networks import ActorHead
from fosp_core.agent.world_model import Latent
from fosp_core.data.dataset import load_dataset
from fosp_core.envs.safereach import SafeReachEnv
from fosp_core.learning.extract import TERMS, dataset_terms, fit_actor
from fosp_core.learning.finetune import PolicyStep
from fosp_core.learning.finetune_run import evaluate_policy
from fosp_core.learning.runs import load_agent

ACTOR_INPUTS = ("features", "state", "decoded")


def kind_of(row: dict) -> str:
    return f"{row['meta']['behaviour']}, {'reached' if row['success'] else 'missed'}"


def print_kinds(rows: list[dict]) -> None:
    total_rows = sum(len(r["weights"]) for r in rows)
    total_weight = sum(float(r["weights"].sum()) for r in rows)
    by_kind = defaultdict(list)
    for r in rows:
        by_kind[kind_of(r)].append(r)
    print(f"{'demonstrations':18s} {'n':>4s} {'rows':>6s} {'weight':>7s} "
          f"{'A^r':>7s} {'A^c':>7s} {'V^c':>6s} {'u':>5s}")
    for kind, group in sorted(by_kind.items()):
        cat = {k: torch.cat([r[k] for r in group]) for k in TERMS}
        print(f"{kind:18s} {len(group):4d} {len(cat['weights']) / total_rows:6.0%} "
              f"{float(cat['weights'].sum()) / total_weight:7.0%} "
              f"{float(cat['adv_reward'].mean()):+7.3f} {float(cat['adv_cost'].mean()):+7.3f} "
              f"{float(cat['v_cost'].mean()):6.2f} {float(cat['reach'].mean()):5.2f}")


def print_route_choice(rows: list[dict]) -> None:
    by_layout = defaultdict(list)
    for r in rows:
        by_layout[repr(r["meta"]["layout"])].append(r)
    mixed = [g for g in by_layout.values() if len({r["violation"] for r in g}) == 2]
    print(f"\nfirst transition, {len(mixed)} of {len(by_layout)} layouts with both safe and "
          "violating demonstrations:")
    for violation in (True, False):
        first = [r for g in mixed for r in g if r["violation"] == violation]
        mean = {k: np.mean([float(r[k][0]) for r in first]) for k in TERMS}
        print(f"  {'violating' if violation else 'safe':9s} ({len(first):3d}): "
              f"A^r {mean['adv_reward']:+.3f}  A^c {mean['adv_cost']:+.3f}  "
              f"u {mean['reach']:.2f}  weight {mean['weights']:.3f}")


def imagined_return(agent, actor: ActorHead, start: Latent, kappa: float) -> Tensor:
    """Return of r - kappa c over the run's horizon H imagined from ``start`` under ``actor``.

    Eq. 8 with lambda = 1: the discounted sum of r - kappa c bootstrapped with V^r - kappa V^c,
    all from the frozen world model and critics; the gradient reaches the actor through its
    reparameterised actions and the dynamics (DreamerV3's estimator for continuous actions).
    """
    wm, ac = agent.world_model, agent.actor_critic
    config = agent.config.actor_critic
    states, _ = wm.imagine(lambda s: actor(ac.inputs(s)).rsample(), start, config.horizon)
    features = states.features()[1:]
    reward = wm.reward_head(features).mean() - kappa * wm.cost_head(features).mean()
    inputs = ac.inputs(states)
    value = ac.critics["v_reward"](inputs).mean() - kappa * ac.critics["v_cost"](inputs).mean()
    cont = wm.continue_head(features).mean
    return lambda_returns(reward, value, cont, config.discount, 1.0)[0]


def acting_input(agent, features: Tensor, which: str) -> Tensor:
    """What the fresh actor reads at the step ``agent.observe`` just took: the decoded state,
    or what ``agent.actor_input`` gives (the features, or the true state when the config's
    ``actor_input`` is ``observation``, which ``main`` sets for ``--actor-input state``)."""
    if which == "decoded":
        return agent.world_model.state_decoder(features)
    return agent.actor_input(features)


class InputPolicy:
    """``evaluate_policy``'s acting interface for a fresh actor reading ``acting_input``."""

    def __init__(self, agent, actor: ActorHead, which: str) -> None:
        self.agent, self.actor, self.which = agent, actor, which

    def reset(self) -> None:
        self.agent.reset()

    @torch.no_grad()
    def step(self, obs: dict, deterministic: bool = True) -> PolicyStep:
        features = self.agent.observe(obs, deterministic)
        dist = self.actor(acting_input(self.agent, features, self.which))
        action = dist.mode if deterministic else dist.sample()
        self.agent.remember_action(action)
        return PolicyStep(action[0].numpy().astype(np.float32), "online",
                          np.full(2, np.nan), np.array([0.0, 1.0]))


def imagined_loss(agent, latents: Latent, alpha: float, kappa: float):
    """``fit_actor``'s extra term: - alpha R / mean|R| with R the ``imagined_return`` from the
    rows' posterior states, i.e. eq. 19 as the in-sample regulariser of a Dreamer-style actor."""
    def loss(actor: ActorHead, rows: Tensor) -> Tensor:
        start = Latent(latents.deter[rows], latents.stoch[rows], latents.logits[rows])
        ret = imagined_return(agent, actor, start, kappa)
        return -alpha * ret.mean() / ret.abs().mean().detach().clamp(min=1e-3)
    return loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--updates", type=int, default=0, help="train and evaluate actors")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, help="the run's weights kept at this step "
                        "(pretrain --keep-every); default: its last checkpoint")
    parser.add_argument("--imagine", action="append", default=[], metavar="ALPHA,KAPPA",
                        help="also train eq. 19 plus this imagined-return term (repeatable)")
    parser.add_argument("--actor-input", choices=ACTOR_INPUTS,
                        help="what the fresh actors read (state, decoded: state-mode runs; "
                             "default: what the run's actor reads)")
    parser.add_argument("--dist", choices=ACTOR_DISTRIBUTIONS,
                        help="the fresh actors' distribution (default: the run's actor_dist)")
    args = parser.parse_args()
    try:
        imagine = [tuple(float(v) for v in pair.split(",", 1)) for pair in args.imagine]
        if any(len(pair) != 2 for pair in imagine):
            raise ValueError
    except ValueError:
        parser.error(f"--imagine takes ALPHA,KAPPA (two numbers), got {args.imagine}")
    torch.set_num_threads(1)

    agent, step = load_agent(args.run, step=args.step)
    agent.eval()
    agent.requires_grad_(False)  # frozen: only the fresh actors learn
    ac_config = agent.config.actor_critic  # actor_dist and actor_input: read by build_actor only
    if args.actor_input is None:
        args.actor_input = "state" if ac_config.actor_input == "observation" else "features"
    ac_config.actor_input = "features" if args.actor_input == "features" else "observation"
    if args.dist is not None:
        ac_config.actor_dist = args.dist
    if args.actor_input != "features" and agent.config.obs_mode != "state":
        parser.error(f"--actor-input {args.actor_input} needs a state-mode run, "
                     f"{args.run} is {agent.config.obs_mode}")
    if args.imagine and args.actor_input != "features":
        parser.error("--imagine trains actors on the features; leave --actor-input out")
    rows = dataset_terms(agent, load_dataset(args.data).trajectories)
    print(f"{args.run} (step {step}) on {args.data}: eq. 19 as the run is configured")
    print_kinds(rows)
    print_route_choice(rows)
    if args.updates <= 0:
        return

    inputs = torch.cat([r["actor_input"] for r in rows])  # features or true state
    if args.actor_input == "decoded":
        inputs = agent.world_model.state_decoder(torch.cat([r["state"] for r in rows]))
    actions = torch.cat([r["action"] for r in rows])
    eq19 = torch.cat([r["weights"] for r in rows])
    oracle = torch.cat([torch.full((len(r["weights"]),),
                                   float(r["success"] and not r["violation"])) for r in rows])
    env = SafeReachEnv("safereach", obs_mode=agent.config.obs_mode)
    print(f"\nweighted cloning, {agent.config.actor_critic.actor_dist} actor reading the "
          f"{args.actor_input}, {args.updates} updates, "
          f"{args.episodes} episodes of safereach:")
    latents = Latent(*(torch.cat([getattr(r["latent"], k) for r in rows])
                       for k in ("deter", "stoch", "logits")))
    variants = [("eq. 19 weights", eq19, None), ("behaviour cloning", torch.ones_like(eq19), None),
                ("safe, reached only", oracle, None)]
    variants += [(f"eq. 19 + imagined a={a:g} k={k:g}", eq19, imagined_loss(agent, latents, a, k))
                 for a, k in imagine]
    for name, weights, extra_loss in variants:
        actor = fit_actor(inputs, actions, weights, agent.config, args.updates, args.seed,
                          extra_loss)
        rates = evaluate_policy(env, InputPolicy(agent, actor, args.actor_input),
                                args.episodes, seed=0)
        (s_lo, s_hi), (v_lo, v_hi) = rates["success_ci"], rates["violation_ci"]
        print(f"  {name:32s} success {rates['success_rate']:4.0%} ({s_lo:.0%}-{s_hi:.0%})  "
              f"violating {rates['violation_rate']:4.0%} ({v_lo:.0%}-{v_hi:.0%})", flush=True)
    env.close()


if __name__ == "__main__":
    main()
