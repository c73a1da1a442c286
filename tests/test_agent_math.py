"""fosp_core.agent.math pinned on numbers computed by hand (the comments show the arithmetic)."""

from __future__ import annotations

import math

import pytest
import torch

from fosp_core.agent.math import (
    augmented_lagrangian_penalty,
    awr_actor_loss,
    awr_weights,
    expectile_loss,
    grow_penalty,
    lambda_returns,
    online_policy_weights,
    ref_target,
    return_scale,
    symexp,
    symlog,
    symlog_bins,
    twohot,
    twohot_mean,
    update_lagrange_multiplier,
    update_return_range,
)


def close(actual: torch.Tensor, expected: list[float] | float, tol: float = 1e-5) -> None:
    expected_t = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected_t, atol=tol), (actual, expected_t)


# --- symlog / symexp ------------------------------------------------------------------------


def test_symlog_values() -> None:
    # symlog(e - 1) = ln(1 + e - 1) = 1;  symlog(-(e^2 - 1)) = -ln(e^2) = -2;  symlog(0) = 0
    x = torch.tensor([math.e - 1, -(math.e**2 - 1), 0.0])
    close(symlog(x), [1.0, -2.0, 0.0])
    # symexp(1) = e - 1;  symexp(-2) = -(e^2 - 1) = -6.389056
    close(symexp(torch.tensor([1.0, -2.0])), [math.e - 1, -6.389056])


def test_symexp_inverts_symlog() -> None:
    x = torch.tensor([-1000.0, -1.0, 0.0, 0.5, 3.7, 1e4], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-10)


# --- two-hot --------------------------------------------------------------------------------


def test_twohot_between_bins() -> None:
    bins = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    # 0.25 lies a quarter of the way from bin 0.0 to bin 1.0: weights 0.75 and 0.25,
    # and 0.75 * 0 + 0.25 * 1 = 0.25 decodes back.
    encoding = twohot(torch.tensor(0.25), bins)
    close(encoding, [0.0, 0.75, 0.25, 0.0])
    close(twohot_mean(encoding, bins), 0.25)


def test_twohot_on_and_beyond_bins() -> None:
    bins = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    x = torch.tensor([1.0, 2.0, 5.0, -3.0])
    expected = [
        [0.0, 0.0, 1.0, 0.0],  # exactly on a bin: all its weight
        [0.0, 0.0, 0.0, 1.0],  # the last bin
        [0.0, 0.0, 0.0, 1.0],  # beyond the range: clamped to the end bin
        [1.0, 0.0, 0.0, 0.0],
    ]
    close(twohot(x, bins), expected)


def test_twohot_symlog_bins_decode_exactly() -> None:
    bins = symlog_bins(255, -20.0, 20.0)
    assert bins.shape == (255,) and bins[0] == -20 and bins[-1] == 20
    values = torch.tensor([[0.0, 1.0, -3.7], [250.0, 0.01, -0.5]], dtype=torch.float64)
    encoding = twohot(symlog(values), bins.double())
    assert encoding.shape == (2, 3, 255)
    close(encoding.sum(-1), torch.ones(2, 3).double().tolist())
    assert torch.allclose(symexp(twohot_mean(encoding, bins.double())), values, rtol=1e-9)


# --- expectile (eq. 7) ----------------------------------------------------------------------


def test_expectile_loss_values_both_signs() -> None:
    # Q above V: diff = q - v = [2, -1]; weights kappa = 0.8 and 1 - kappa = 0.2;
    # losses 0.8 * 4 = 3.2 and 0.2 * 1 = 0.2.
    close(expectile_loss(torch.tensor([2.0, -1.0]), torch.zeros(2), 0.8), [3.2, 0.2])
    # The other way round: diff = [-2, 1]: 0.2 * 4 = 0.8 and 0.8 * 1 = 0.8.
    close(expectile_loss(torch.zeros(2), torch.tensor([2.0, -1.0]), 0.8), [0.8, 0.8])


def test_official_code_sign_is_the_complementary_expectile() -> None:
    # The official code weights kappa where v > q: that is our loss with 1 - kappa.
    q, v = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.0, 0.5, 0.3])
    official = torch.where(v - q > 0, 0.8, 0.2) * (v - q).square()
    close(expectile_loss(q, v, 0.2), official.tolist())


def _fit_expectile(samples: list[float], kappa: float) -> float:
    """argmin_v mean_i expectile_loss(q_i, v) by gradient descent on a scalar v."""
    q = torch.tensor(samples, dtype=torch.float64)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([v], lr=0.5)
    for _ in range(500):
        optimizer.zero_grad()
        expectile_loss(q, v, kappa).mean().backward()
        optimizer.step()
    return v.item()


def test_reward_value_converges_to_upper_expectile() -> None:
    # Q samples {0, 1}: for v in [0, 1] the loss is 0.8 (1 - v)^2 + 0.2 v^2 (x 1/2);
    # d/dv = 0  ->  -1.6 (1 - v) + 0.4 v = 0  ->  v = 1.6 / 2.0 = 0.8, above the mean 0.5.
    assert _fit_expectile([0.0, 1.0], 0.8) == pytest.approx(0.8, abs=1e-6)
    assert _fit_expectile([0.0, 1.0], 0.5) == pytest.approx(0.5, abs=1e-6)  # the mean


def test_cost_value_is_pessimistic() -> None:
    # Q^c samples {0, 0, 0, 1}: one in four sampled actions hits an obstacle, mean cost 0.25.
    # kappa = 0.8: loss 3 * 0.2 v^2 + 0.8 (1 - v)^2; 1.2 v = 1.6 (1 - v) -> v = 1.6 / 2.8.
    upper = _fit_expectile([0.0, 0.0, 0.0, 1.0], 0.8)
    assert upper == pytest.approx(1.6 / 2.8, abs=1e-6)  # 0.571 > 0.25: pessimistic
    # kappa = 0.2 (the official code's sign): 4.8 v = 0.4 (1 - v) -> v = 0.4 / 5.2.
    lower = _fit_expectile([0.0, 0.0, 0.0, 1.0], 0.2)
    assert lower == pytest.approx(0.4 / 5.2, abs=1e-6)  # 0.077 < 0.25: optimistic


# --- TD(lambda) (eq. 8) ---------------------------------------------------------------------


def test_lambda_returns_three_steps() -> None:
    reward = torch.tensor([1.0, 2.0, 3.0])
    value = torch.tensor([0.5, 1.0, 2.0, 4.0])
    # gamma = 0.9, lambda = 0.5, never terminal:
    # R3 = V3 = 4
    # R2 = 3 + 0.9 * (0.5 * 4.0 + 0.5 * 4.0)   = 3 + 3.6    = 6.6
    # R1 = 2 + 0.9 * (0.5 * 2.0 + 0.5 * 6.6)   = 2 + 3.87   = 5.87
    # R0 = 1 + 0.9 * (0.5 * 1.0 + 0.5 * 5.87)  = 1 + 3.0915 = 4.0915
    returns = lambda_returns(reward, value, torch.ones(3), 0.9, 0.5)
    close(returns, [4.0915, 5.87, 6.6])
    # s^2 terminal (continuation [1, 0, 1]): R1 = 2 + 0 = 2;
    # R0 = 1 + 0.9 * (0.5 * 1.0 + 0.5 * 2.0) = 1 + 1.35 = 2.35; R2 unchanged.
    returns = lambda_returns(reward, value, torch.tensor([1.0, 0.0, 1.0]), 0.9, 0.5)
    close(returns, [2.35, 2.0, 6.6])


def test_lambda_returns_limits_and_batch_axis() -> None:
    reward = torch.tensor([[1.0], [2.0], [3.0]])
    value = torch.tensor([[0.5], [1.0], [2.0], [4.0]])
    ones = torch.ones(3, 1)
    # lambda = 0: one-step targets r_h + 0.9 V_{h+1} = [1.9, 3.8, 6.6]
    close(lambda_returns(reward, value, ones, 0.9, 0.0), [[1.9], [3.8], [6.6]])
    # lambda = 1: discounted sums with V3 at the end:
    # R0 = 1 + 0.9 * 2 + 0.81 * 3 + 0.729 * 4 = 1 + 1.8 + 2.43 + 2.916 = 8.146
    close(lambda_returns(reward, value, ones, 0.9, 1.0)[0], [8.146])
    with pytest.raises(ValueError):
        lambda_returns(reward, value[:3], ones, 0.9, 0.5)


# --- reachability target (eq. 30) -----------------------------------------------------------


def test_ref_target_branches() -> None:
    cost = torch.tensor([1.0, 0.0, 0.3, 0.0])
    u_next = torch.tensor([0.5, 0.5, 0.2, 1.0])
    # violation -> 1;  safe -> 0.99 * 0.5 = 0.495;  any cost > 0 -> 1;  safe -> 0.99 * 1 = 0.99
    close(ref_target(cost, u_next, 0.99), [1.0, 0.495, 1.0, 0.99])
    # A terminal next state bootstraps nothing: the last entry drops to max(0, 0) = 0.
    continuation = torch.tensor([1.0, 1.0, 1.0, 0.0])
    close(ref_target(cost, u_next, 0.99, continuation), [1.0, 0.495, 1.0, 0.0])


# --- augmented Lagrangian (eq. 17, 27) ------------------------------------------------------


def test_penalty_both_branches() -> None:
    lagrange, mu = 0.5, 2.0
    g = torch.tensor([1.0, -1.0, -0.5])
    # g = 1:    lambda + mu/2 g = 1.5 >= 0  ->  0.5 * 1 + 2/4 * 1 = 1.0
    # g = -1:   lambda + mu/2 g = -0.5 < 0  ->  -lambda^2 / mu = -0.25 / 2 = -0.125
    # g = -0.5: on the boundary (0): 0.5 * -0.5 + 0.5 * 0.25 = -0.125, continuous
    close(augmented_lagrangian_penalty(g, lagrange, mu), [1.0, -0.125, -0.125])
    # The official-code form with c = mu/2 = 1: psi = lambda g + c/2 g^2 = 0.5 + 0.5 = 1.0,
    # else -lambda^2 / (2c) = -0.125: the same numbers.


def test_lagrange_multiplier_update_and_penalty_growth() -> None:
    # lambda <- max(lambda + mu/2 g, 0) with lambda = 0.5, mu = 2:
    close(update_lagrange_multiplier(0.5, 1.0, 2.0), 1.5)  # 0.5 + 1
    close(update_lagrange_multiplier(0.5, -0.2, 2.0), 0.3)  # 0.5 - 0.2
    close(update_lagrange_multiplier(0.5, -1.0, 2.0), 0.0)  # max(-0.5, 0)
    close(update_lagrange_multiplier(torch.tensor(0.5), torch.tensor(1.0), 2.0), 1.5)
    # mu <- min(mu (1 + nu), mu_max)
    assert grow_penalty(0.5, 0.5, 1.0) == pytest.approx(0.75)
    assert grow_penalty(0.9, 0.5, 1.0) == 1.0
    assert grow_penalty(1e-6, 5e-9, 1.0) == pytest.approx(1e-6 * (1 + 5e-9), rel=1e-12)


# --- actor weights and loss (eq. 19, 20, 23) ------------------------------------------------


def test_awr_weights() -> None:
    adv_r, adv_c, u = torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([0.25])
    # (1 - 0.25) exp(10 * 0.1) + 0.25 exp(-10 * 0.2) = 0.75 e + 0.25 e^-2
    #   = 2.0387114 + 0.0338338 = 2.0725452
    close(awr_weights(adv_r, adv_c, u, 10.0, 10.0, 100.0), [2.0725452])
    # exp(10 * 1) = 22026 is clipped to 100 (u = 0); likewise exp(-10 * -1) with u = 1.
    big = torch.tensor([1.0, 0.0])
    low_cost = torch.tensor([0.0, -1.0])
    close(awr_weights(big, low_cost, torch.tensor([0.0, 1.0]), 10.0, 10.0, 100.0), [100.0, 100.0])


def test_awr_weights_feasible_mask_drops_only_the_reward_term() -> None:
    adv_r, adv_c, u = torch.full((2,), 0.1), torch.full((2,), 0.2), torch.full((2,), 0.25)
    # Kept: 0.75 e + 0.25 e^-2 as above; masked: only the cost term 0.25 e^-2 = 0.0338338.
    keep = torch.tensor([1.0, 0.0])
    close(awr_weights(adv_r, adv_c, u, 10.0, 10.0, 100.0, keep), [2.0725452, 0.0338338])


def test_online_policy_weights() -> None:
    # (1 - 0.25) * 10 * 0.1 - 0.25 * 10 * 0.2 = 0.75 - 0.5 = 0.25
    weights = online_policy_weights(
        torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([0.25]), 10.0, 10.0
    )
    close(weights, [0.25])


def test_awr_actor_loss_value_and_gradient() -> None:
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    weights = torch.tensor([2.0, 0.5], requires_grad=True)
    entropy = torch.tensor([1.0, 1.0])
    # -mean(w logp + eta H) = -mean([2 * -1 + 0.1, 0.5 * -2 + 0.1]) = -mean([-1.9, -0.9]) = 1.4
    loss = awr_actor_loss(log_prob, entropy, weights, 0.1)
    close(loss, 1.4)
    loss.backward()
    close(log_prob.grad, [-1.0, -0.25])  # -w / 2
    assert weights.grad is None  # the weights are targets, not trained through


# --- return normalisation -------------------------------------------------------------------


def test_return_range_and_scale() -> None:
    returns = torch.arange(101, dtype=torch.float32)  # P5 = 5, P95 = 95
    low, high = update_return_range(returns, torch.tensor(0.0), torch.tensor(0.0), 0.99)
    # EMA from 0: 0.99 * 0 + 0.01 * 5 = 0.05 and 0.01 * 95 = 0.95
    close(low, 0.05)
    close(high, 0.95)
    close(return_scale(low, high), 1.0)  # max(1, 0.9): small ranges are never blown up
    low, high = update_return_range(returns, low, high, 0.0)
    close(return_scale(low, high), 90.0)  # 95 - 5
