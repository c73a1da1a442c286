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
