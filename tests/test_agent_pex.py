"""Safe policy expansion, eq. 21-22, on hand-computed numbers."""

import math

import pytest
import torch

from fosp_core.agent.pex import (
    choose_policy,
    expansion_probabilities,
    normalised_value,
    value_upper_bound,
)


def test_value_upper_bound():
    # sum_{t=0}^{2} 0.5^t * 2 = 2 + 1 + 0.5 = 3.5
    assert value_upper_bound(2.0, 0.5, 2) == pytest.approx(3.5)
    assert value_upper_bound(1.0, 1.0, 79) == 80
    # gamma = 0.99, T = 80: (1 - 0.99^81) / 0.01
    assert value_upper_bound(1.0, 0.99, 80) == pytest.approx((1 - 0.99**81) / 0.01)


def test_normalised_value_eq22():
    # Q = 30 of Q-hat* 60 -> 0.5; Q^c = 2 of C-hat* 8 -> 0.25; Q-tilde = 0.25
    q = normalised_value(torch.tensor(30.0), torch.tensor(2.0), 60.0, 8.0)
    assert q.item() == pytest.approx(0.25)


def test_expansion_probabilities_eq21():
    # Q-tilde offline 0.3, online 0.1, inverse temperature 10:
    # p_offline = e^3 / (e^3 + e^1) = 1 / (1 + e^-2) = 0.880797
    p = expansion_probabilities(torch.tensor([0.3, 0.1]), 10.0)
    assert p[0].item() == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-6)
    assert p.sum().item() == pytest.approx(1.0)


def test_pex_temperature_is_inverse():
    # Normalised values differ by 0.4 (an unsafe online action). With the paper's division by
    # 10 the safer action would win only 52% of the time; the inverse temperature gives 98%.
    q = torch.tensor([0.2, -0.2])
    safer = expansion_probabilities(q, 10.0)[0].item()
    assert safer == pytest.approx(1 / (1 + math.exp(-4)), rel=1e-6)
    assert safer > 0.98
    assert torch.softmax(q / 10.0, -1)[0].item() < 0.53  # what dividing would give


def test_choose_policy_follows_probabilities():
    generator = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.9, 0.1]]).expand(4000, 2)
    picks = choose_policy(probs, generator)
    assert picks.shape == (4000,)
    assert abs((picks == 0).float().mean().item() - 0.9) < 0.02
    assert choose_policy(torch.tensor([1.0, 0.0])).item() == 0
