"""Safe policy expansion (sec. 4.3): choosing between the frozen offline policy and the new one.

At every step both policies propose an action. Each proposal is scored by the normalised
value of eq. 22, and one is drawn from the softmax of eq. 21.

Temperature, decided deliberately. Eq. 21 divides by alpha = 10 (Table 4), but Q-tilde is
normalised to about [-1, 1]. Dividing by 10 would make the logits differ by at most 0.2, so
the choice would be close to a coin flip whatever the critics say, and the offline policy's
safety would be gambled away from the first online step. The PEX authors' code (Zhang et al.,
2023) multiplies Q by an *inverse* temperature of 10, and the official FOSP code multiplies by
5. We follow them: ``logits = inverse_temperature * Q-tilde``, with 10 as Table 4's alpha.
The test ``test_pex_temperature_is_inverse`` pins this.
"""

from __future__ import annotations

import torch
from torch import Tensor


def value_upper_bound(per_step_max: float, discount: float, horizon: int) -> float:
    """Q-hat* (or C-hat*) of eq. 22: sum_{t=0}^{T} gamma^t * r_max, the largest possible return."""
    if discount == 1.0:
        return per_step_max * (horizon + 1)
    return per_step_max * (1.0 - discount ** (horizon + 1)) / (1.0 - discount)


def normalised_value(q_reward: Tensor, q_cost: Tensor, reward_bound: float,
                     cost_bound: float) -> Tensor:
    """Q-tilde of eq. 22: Q(s, a) / Q-hat* - Q^c(s, a) / C-hat*."""
    return q_reward / reward_bound - q_cost / cost_bound


def expansion_probabilities(q_tilde: Tensor, inverse_temperature: float) -> Tensor:
    """P(omega) of eq. 21 over the last axis (one entry per candidate policy).

    ``softmax(inverse_temperature * q_tilde)``; see the module docstring for why the paper's
    alpha multiplies rather than divides.
    """
    return torch.softmax(inverse_temperature * q_tilde, dim=-1)


def choose_policy(probabilities: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Index of the chosen candidate per row, drawn from ``probabilities``."""
    flat = probabilities.reshape(-1, probabilities.shape[-1])
    choice = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
    return choice.reshape(probabilities.shape[:-1])
