"""Foresight stop (not in the paper): halt when the world model foresees a violation.

Before an action is sent, the world model imagines where it leads: the action, then the
actor's most likely action at every imagined state (with policy expansion, the new actor's:
the frozen one cannot change), for ``horizon`` steps, from
``samples`` draws of the stochastic latent. The foreseen cost is the largest per-step cost
the cost head predicts along a rollout, averaged over the draws. At or above the threshold
(``fosp.foresight_stop``) the policy sends the zero action (hold still) instead, and keeps
holding until the episode ends: a stop that could be released would creep into the obstacle
one released step at a time (docs/implementation.md).

Why it stops rather than re-plans (``benchmarks/foresight.py`` on an image-mode fine-tuning
run of ``safereach-more-obstacles``, seed 0): along the actor's own path the foreseen cost
is 0.8-1.0 for the 1-4 steps before each early collision, against a 99th percentile of
0.41 over the steps of safe episodes before they touch the target. But at those alarmed
steps the same world model cannot tell which other move would be safe: of 27 constant moves
played in a copy of the simulator, the one it thought safest was really safe at 33 of the
75 steps where some move was (AUC 0.65 within a step). It can tell that the policy's own
next steps end in a collision, not how to get around it.

The stop trades success for safety: an episode it stops does not reach the target.

With policy expansion the stop alone lets the frozen offline policy steer into an unseen
obstacle: its proposal is foreseen as if the new actor took over after it, which it does not
at the next step when the offline policy wins again. The veto (``fosp.foresight_veto``)
foresees each proposal along its own policy's path and drops those foreseen to collide from
eq. 21's draw; the stop holds only when both are. It rarely acts: where one path is
foreseen to collide, the other mostly is too, and the stop holds (docs/results.md).
With ``fosp.foresight_veto_latch`` a proposal vetoed alone stays out until the episode
ends, for the stop's reason: re-offered at the next step, the vetoed policy mostly heads
for the same obstacle. It did not make PEX safer than direct fine-tuning (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fosp_core.agent.actor_critic import ActorCritic
from fosp_core.agent.world_model import Latent, WorldModel


def foreseen_cost(step_costs: Tensor) -> Tensor:
    """(H, K) predicted per-step costs of K imagined rollouts -> mean over K of max over H."""
    return step_costs.max(0).values.mean()


@torch.no_grad()
def imagined_step_costs(world_model: WorldModel, actor_critic: ActorCritic, latent: Latent,
                        action: Tensor, horizon: int, samples: int,
                        actor: Callable[[Tensor], Any] | None = None) -> Tensor:
    """Predicted costs (horizon, samples) of the states after ``action`` (1, A) is taken in
    ``latent`` (fields (1, ...)) and the most likely actions of ``actor`` (an actor head,
    by default ``actor_critic.actor``) follow."""
    actor = actor_critic.actor if actor is None else actor
    start = latent.map(lambda x: x.expand(samples, *x.shape[1:]))
    first = action.expand(samples, -1)
    taken = [False]

    def policy(state: Latent) -> Tensor:
        if not taken[0]:
            taken[0] = True
            return first
        return actor(actor_critic.imagined_actor_input(world_model, state)).mode

    states, _ = world_model.imagine(policy, start, horizon)
    return world_model.cost_head(states.features()[1:]).mean()


def veto(probabilities: Tensor, foreseen: Tensor, threshold: float) -> Tensor:
    """Eq. 21's ``probabilities`` over candidates with those whose ``foreseen`` cost reaches
    ``threshold`` set to zero and the rest renormalised. Unchanged when every candidate
    reaches it: whichever is drawn, the stop then holds."""
    keep = foreseen < threshold
    if not bool(keep.any()):
        return probabilities
    kept = probabilities * keep
    if float(kept.sum()) <= 0.0:  # the softmax underflowed on every kept candidate
        kept = keep.to(probabilities.dtype)
    return kept / kept.sum()
