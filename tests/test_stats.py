"""The Wilson interval that goes with every success and violation rate, and the sign test of
paired outcomes."""

import pytest

from fosp_core.util.stats import difference_interval, rate_text, sign_test, wilson_interval


@pytest.mark.parametrize("hits, n, low, high", [
    # 8/20: p = 0.4, d = 1 + z^2/20 = 1.19208, centre = (0.4 + z^2/40) / d = 0.41611,
    # half = z sqrt(0.4*0.6/20 + z^2/1600) / d = 0.19729
    (8, 20, 0.21882, 0.61340),
    # 0/20: centre = half = (z^2/40) / d = 0.08056, so [0, 0.16113]; n/n mirrors it
    (0, 20, 0.0, 0.16113),
    (20, 20, 0.83887, 1.0),
    # 1/1: d = 1 + z^2 = 4.84146, centre = (1 + z^2/2) / d = 0.60327, half = 0.39673
    (1, 1, 0.20654, 1.0),
])
def test_wilson_interval_by_hand(hits, n, low, high):
    assert wilson_interval(hits, n) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_rate_text_gives_the_counts_the_rate_and_its_interval():
    # the intervals of 8/20 and 1/1 above, rounded to whole percent
    assert rate_text(8, 20) == "8/20 = 40% (95% CI 22%-61%)"
    assert rate_text(1, 1) == "1/1 = 100% (95% CI 21%-100%)"


def test_wilson_interval_narrows_with_more_episodes_and_refuses_nonsense():
    assert wilson_interval(20, 50)[1] - wilson_interval(20, 50)[0] < \
        wilson_interval(8, 20)[1] - wilson_interval(8, 20)[0]
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize("a, n_a, b, n_b, low, high", [
    # Newcombe (1998), Table II, method 10: 56/70 - 48/80 = 0.2000, interval 0.0524 to 0.3339
    (56, 70, 48, 80, 0.0524, 0.3339),
    # ... and 9/10 - 3/10 = 0.6, interval 0.1705 to 0.8090
    (9, 10, 3, 10, 0.1705, 0.8090),
    # 0/40 - 0/40: each Wilson half-width is 0.0876 (z^2/80 / (1 + z^2/40) * 2), so +-0.0876
    (0, 40, 0, 40, -0.0876, 0.0876),
])
def test_difference_interval_matches_newcombe(a, n_a, b, n_b, low, high):
    assert difference_interval(a, n_a, b, n_b) == pytest.approx((low, high), abs=5e-5)
    # Swapping the two rates mirrors the interval.
    assert difference_interval(b, n_b, a, n_a) == pytest.approx((-high, -low), abs=5e-5)


@pytest.mark.parametrize("a, b, p", [
    (0, 5, 2 / 32),  # 2 * C(5,0) / 2^5
    (5, 0, 2 / 32),  # symmetric
    (1, 3, 2 * (1 + 4) / 16),  # 2 * (C(4,0) + C(4,1)) / 2^4 = 0.625
    (0, 6, 2 / 64),  # 0.03125: six to none is the first clean sweep below 5%
    (1, 9, 2 * (1 + 10) / 1024),  # 0.0215
    (3, 3, 1.0),  # 2 * 42 / 64 > 1, capped
    (0, 0, 1.0),  # no discordant pair: nothing to tell the two apart
])
def test_sign_test_by_hand(a, b, p):
    assert sign_test(a, b) == pytest.approx(p)


def test_sign_test_refuses_negative_counts():
    with pytest.raises(ValueError, match="negative"):
        sign_test(-1, 2)
