"""The equations of FOSP as pure functions on torch tensors.

Each function names the equation it implements: "eq. N" is the FOSP paper's numbering;
pieces FOSP inherits from DreamerV3 (Hafner et al., 2023) without numbering them say so.
Nothing here holds state or parameters; the networks and the training step call these.

Shapes are the caller's: every function works elementwise or over the last axis unless its
docstring says otherwise (``lambda_returns`` runs along the first, time, axis).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# --------------------------------------------------------------------------------------------
# Symlog and two-hot (DreamerV3): how rewards, costs and returns of any scale are regressed.


def symlog(x: Tensor) -> Tensor:
    """symlog(x) = sign(x) * ln(1 + |x|) (DreamerV3): squashes large magnitudes, ~x near 0."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """symexp(x) = sign(x) * (exp(|x|) - 1), the inverse of ``symlog`` (DreamerV3)."""
    return torch.sign(x) * torch.expm1(x.abs())


def symlog_bins(num_bins: int = 255, low: float = -20.0, high: float = 20.0) -> Tensor:
    """Evenly spaced bin centres in symlog space for two-hot heads (DreamerV3: 255, +-20)."""
    return torch.linspace(low, high, num_bins)


def twohot(x: Tensor, bins: Tensor) -> Tensor:
    """Two-hot encoding of ``x`` over sorted ``bins`` (DreamerV3), shape ``x.shape + (K,)``.

    The two bins around x share weight by distance so that sum(weights * bins) == x exactly;
    values outside the bins go wholly to the end bin. ``x`` lives in the same space as ``bins``
    (callers pass ``symlog(target)``).
    """
    x = x.clamp(bins[0], bins[-1])
    below = torch.searchsorted(bins, x.contiguous(), right=True) - 1
    below = below.clamp(0, len(bins) - 2)
    above = below + 1
    low, high = bins[below], bins[above]
    weight_above = (x - low) / (high - low)
    encoding = torch.zeros(*x.shape, len(bins), dtype=x.dtype, device=x.device)
    encoding.scatter_(-1, below.unsqueeze(-1), (1 - weight_above).unsqueeze(-1))
    encoding.scatter_add_(-1, above.unsqueeze(-1), weight_above.unsqueeze(-1))
    return encoding


def twohot_mean(probs: Tensor, bins: Tensor) -> Tensor:
    """Decode a distribution over ``bins`` to its expected value (DreamerV3), in bin space."""
    return (probs * bins).sum(-1)


# --------------------------------------------------------------------------------------------
# Critics (sec. 4.1).


def expectile_loss(q: Tensor, v: Tensor, kappa: float) -> Tensor:
    """Expectile regression of V towards Q, eq. 7: |kappa - 1{Q - V < 0}| * (Q - V)^2.

    Elementwise; the caller averages. Minimising it over v makes V the kappa-expectile of the
    Q samples: kappa > 0.5 puts V in the upper part of the distribution.

    Sign convention, decided deliberately. The weight kappa goes where Q > V (under-estimates
    are penalised more), the convention of IQL and of eq. 7 as printed. The official FOSP code
    puts kappa where V > Q instead, which with kappa = 0.8 gives the *lower* 0.2-expectile;
    ``expectile_loss(q, v, 1 - kappa)`` reproduces it. We keep eq. 7 because:

    - reward: V^r should approach max over in-sample actions of Q^r (IQL's in-sample max), the
      upper expectile. The lower one would make V^r a pessimistic average and the advantage
      A^r = Q^r - V^r mostly positive, blunting the AWR weights of eq. 19.
    - cost: V^c is also fitted as the upper kappa-expectile of Q^c, i.e. V^c over-estimates
      the cost expected over the policy's own action noise. That is pessimistic about cost:
      the feasible set {V^c = 0} (eq. 13) shrinks to states where nearly every sampled action
      is safe, and the penalty Phi(V^c) (eq. 17) errs towards caution. On a real robot a
      missed violation costs more than a lost reward. The alternative (FISOR-style lower
      expectile, an optimistic "best in-sample action" cost) is one config value away:
      ``ActorCriticConfig.cost_expectile = 0.2``.
    """
    diff = q - v
    weight = torch.where(diff > 0, kappa, 1.0 - kappa)
    return weight * diff.square()


def lambda_returns(
    reward: Tensor, value: Tensor, continuation: Tensor, discount: float, lam: float
) -> Tensor:
    """TD(lambda) returns, eq. 8, along the first (time) axis.

    R^H = V(s^H),  R^h = r^h + gamma * c^h * ((1 - lambda) * V(s^{h+1}) + lambda * R^{h+1}).

    Eq. 8 prints V(s^h) inside the bracket; the bootstrap must be the *next* state's value
    (as in DreamerV3), otherwise lambda = 0 would not give the one-step TD target.

    Args:
        reward: (H, ...) reward of the transition s^h -> s^{h+1}.
        value: (H + 1, ...) V(s^0) ... V(s^H).
        continuation: (H, ...) probability that s^{h+1} is not terminal (1 if it never ends);
            a terminal step cuts the bootstrap.
    Returns:
        (H, ...) R^0 ... R^{H-1}.
    """
    horizon = reward.shape[0]
    if value.shape[0] != horizon + 1 or continuation.shape[0] != horizon:
        raise ValueError("lambda_returns wants reward (H,..), value (H+1,..), continuation (H,..)")
    returns = [value[horizon]]
    for h in reversed(range(horizon)):
        bootstrap = (1 - lam) * value[h + 1] + lam * returns[-1]
        returns.append(reward[h] + discount * continuation[h] * bootstrap)
    return torch.stack(returns[:0:-1])


# --------------------------------------------------------------------------------------------
# Safety (sec. 4.2, App. A-B).


def ref_target(
    cost: Tensor, u_next: Tensor, gamma_u: float, continuation: Tensor | None = None
) -> Tensor:
    """Target of the reachability estimation function, eq. 30: max(1[c > 0], gamma_u * u').

    Eq. 30 prints 1{s in S_f}; the REF (eq. 5) counts *violating* states, so the indicator is
    1{s in S_v} = 1[cost > 0], as in the official code. ``continuation`` (optional) zeroes the
    bootstrap past a terminal state. gamma_u < 1 makes the fixed point unique (App. B).
    """
    violated = (cost > 0).to(u_next.dtype)
    bootstrap = gamma_u * u_next
    if continuation is not None:
        bootstrap = bootstrap * continuation
    return torch.maximum(violated, bootstrap)


def augmented_lagrangian_penalty(
    violation: Tensor, lagrange: float | Tensor, penalty: float | Tensor
) -> Tensor:
    """Phi of eq. 17 (= eq. 29), elementwise in the constraint violation g = V^c - limit.

    Phi = lambda * g + mu/4 * g^2   if lambda + mu/2 * g >= 0,
          -lambda^2 / mu            otherwise.

    With c = mu/2 this is LAMBDA / SafeDreamer's psi = lambda*g + c/2*g^2, else -lambda^2/(2c);
    the two branches meet continuously at lambda + c*g = 0.
    """
    g = violation
    lagrange = torch.as_tensor(lagrange, dtype=g.dtype, device=g.device)
    penalty = torch.as_tensor(penalty, dtype=g.dtype, device=g.device)
    active = lagrange + penalty / 2 * g >= 0
    quadratic = lagrange * g + penalty / 4 * g.square()
    floor = -lagrange.square() / penalty
    return torch.where(active, quadratic, floor)


def update_lagrange_multiplier(
    lagrange: float | Tensor, violation: float | Tensor, penalty: float | Tensor
) -> Tensor:
    """Multiplier step of eq. 27: lambda <- max(lambda + mu/2 * g, 0).

    ``violation`` is the batch-mean g = V^c - limit; with c = mu/2 this is the official
    code's lambda <- max(lambda + c*g, 0).
    """
    g = torch.as_tensor(violation)
    lagrange = torch.as_tensor(lagrange, dtype=g.dtype, device=g.device)
    return torch.clamp(lagrange + penalty / 2 * g, min=0.0)


def grow_penalty(penalty: float, growth: float, max_penalty: float) -> float:
    """Non-decreasing penalty mu^k of eq. 26: mu <- min(mu * (1 + nu), mu_max) (LAMBDA)."""
    return min(penalty * (1.0 + growth), max_penalty)


# --------------------------------------------------------------------------------------------
# Actor (eq. 19, 20, 23).


def awr_weights(
    adv_reward: Tensor,
    adv_cost: Tensor,
    reach: Tensor,
    beta_reward: float,
    beta_cost: float,
    max_weight: float,
    feasible_keep: Tensor | None = None,
) -> Tensor:
    """Offline policy weights, eq. 19: w = (1 - u) exp(beta_1 A^r) + u exp(-beta_2 A^c).

    ``reach`` is the REF's u in [0, 1]: where a violation is unavoidable the actor follows the
    cost advantage, elsewhere the reward advantage. Each exponential is clipped at
    ``max_weight`` (as in IQL's AWR) so one lucky sample cannot dominate the batch. The
    weights carry no gradient.
    """
    cap = math.log(max_weight)
    reward_term = torch.exp(torch.clamp(beta_reward * adv_reward, max=cap))
    if feasible_keep is not None:
        reward_term = reward_term * feasible_keep
    cost_term = torch.exp(torch.clamp(-beta_cost * adv_cost, max=cap))
    return ((1 - reach) * reward_term + reach * cost_term).detach()


def online_policy_weights(
    adv_reward: Tensor, adv_cost: Tensor, reach: Tensor, beta_reward: float, beta_cost: float
) -> Tensor:
    """Online policy weights, eq. 23: w = (1 - u) beta_1 A^r - u beta_2 A^c (no KL to pi_b)."""
    return ((1 - reach) * beta_reward * adv_reward - reach * beta_cost * adv_cost).detach()


def awr_actor_loss(log_prob: Tensor, entropy: Tensor, weights: Tensor, eta: float) -> Tensor:
    """Actor loss of eq. 20: -mean(w * log pi(a|s) + eta * H[pi(.|s)]).

    Eq. 20's last term, Phi(V^c) * (1 - u), does not depend on the actor's parameters (V^c,
    u and the multipliers are other networks or constants), so it changes the loss value but
    never its gradient and is left out.
    """
    return -(weights.detach() * log_prob + eta * entropy).mean()


# --------------------------------------------------------------------------------------------
# Return normalisation (DreamerV3; App. F writes the advantage as (R - V) / max(1, S)).


def update_return_range(
    returns: Tensor,
    low: Tensor,
    high: Tensor,
    decay: float = 0.99,
    percentiles: tuple[float, float] = (5.0, 95.0),
) -> tuple[Tensor, Tensor]:
    """EMA of the 5th and 95th percentile of a batch of returns (DreamerV3's S)."""
    flat = returns.detach().flatten().float()
    batch_low = torch.quantile(flat, percentiles[0] / 100)
    batch_high = torch.quantile(flat, percentiles[1] / 100)
    return decay * low + (1 - decay) * batch_low, decay * high + (1 - decay) * batch_high


def return_scale(low: Tensor, high: Tensor, limit: float = 1.0) -> Tensor:
    """S = max(limit, high - low): advantages are divided by it (never scaled up when small)."""
    return torch.clamp(high - low, min=limit)
