"""How far a rate measured on a few episodes can be trusted."""

from __future__ import annotations

import math

Z_95 = 1.959964  # two-sided 95% quantile of the standard normal


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial rate ``hits / n`` (95% by default).

    Evaluations here are 20-50 episodes: 8 violating episodes of 20 is 40%, but the interval
    is 22-61%, so two such rows 15 points apart do not differ. Unlike the normal
    approximation p +- z sqrt(p(1-p)/n), it stays inside [0, 1] and is not empty at 0 or n.
    """
    if n <= 0:
        raise ValueError(f"need at least one episode, got n={n}")
    if not 0 <= hits <= n:
        raise ValueError(f"hits must lie in [0, {n}], got {hits}")
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_text(hits: int, n: int) -> str:
    """``hits`` of ``n`` episodes as a rate with its Wilson interval: ``18/20 = 90% (95% CI
    70%-97%)``."""
    low, high = wilson_interval(hits, n)
    return f"{hits}/{n} = {hits / n:.0%} (95% CI {low:.0%}-{high:.0%})"


def difference_interval(hits_a: int, n_a: int, hits_b: int, n_b: int, z: float = Z_95
                        ) -> tuple[float, float]:
    """95% interval of the difference of two rates, ``hits_a / n_a - hits_b / n_b``.

    Newcombe's hybrid score interval (Statistics in Medicine 17, 1998, method 10), built from
    the two Wilson intervals: it stays inside [-1, 1] and behaves at 0 and n, where the normal
    approximation of a difference of a few violating episodes in 40 does not.
    """
    low_a, high_a = wilson_interval(hits_a, n_a, z)  # also refuses n = 0
    low_b, high_b = wilson_interval(hits_b, n_b, z)
    p_a, p_b = hits_a / n_a, hits_b / n_b
    d = p_a - p_b
    return (d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2),
            d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2))


def sign_test(a: int, b: int) -> float:
    """Two-sided exact sign test of ``a`` against ``b`` (McNemar's exact test).

    For paired yes / no outcomes, e.g. whether PEX and direct fine-tuning violated on the same
    layout: only the discordant pairs tell the two apart, ``a`` where the first alone said yes
    and ``b`` where the second alone did. If the two do not differ, each discordant pair falls
    either way with probability 1/2, so the p-value is twice the binomial(a + b, 1/2) tail at
    min(a, b), at most 1. 0 against 5 gives 2 / 32 = 0.0625: five to none is not yet evidence
    at the 5% level.
    """
    if a < 0 or b < 0:
        raise ValueError(f"counts must not be negative, got {a} and {b}")
    n = a + b
    tail = sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2**n
    return min(1.0, 2 * tail)
