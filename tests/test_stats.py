"""wav2vec2_lite.tools.stats: t distribution, Welch's t test, bootstrap CIs (fast, seeded).

Reference values: Wikipedia's "Welch's t-test" examples 1 and 3 (t, df, p quoted there to 2-3
digits), here to 1e-6 and beyond as scipy 1.17 computes them (scipy is not a dependency; the
numbers were copied from it once)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wav2vec2_lite.tools.stats import (
    betainc,
    bootstrap_mean_ci,
    bootstrap_ratio_ci,
    median,
    t_cdf,
    t_sf,
    welch_t,
)

# Wikipedia, Welch's t-test, example 1 (t = -2.46, df = 25.0, p = 0.021) and example 3 (-1.57, 9.9, 0.149)
EX1 = (
    [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4],
    [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4],
    -2.455356398286006,
    24.988529290231416,
    0.021378001462866992,
)
EX3 = (
    [17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8],
    [
        21.5,
        22.8,
        21.0,
        23.0,
        21.6,
        23.6,
        22.5,
        20.7,
        23.4,
        21.8,
        20.7,
        21.7,
        21.5,
        22.5,
        23.6,
        21.5,
        22.5,
        23.5,
        21.5,
        21.8,
    ],
    -1.5654335235985037,
    9.904741248650831,
    0.14884169660532817,
)


@pytest.mark.parametrize("a, b, t, df, p", [EX1, EX3])
def test_welch_t_textbook_values(a, b, t, df, p):
    r = welch_t(a, b)
    assert r.t == pytest.approx(t, abs=1e-6)
    assert r.df == pytest.approx(df, abs=1e-6)
    assert r.p == pytest.approx(p, abs=1e-6)
    swapped = welch_t(b, a)
    assert swapped.t == pytest.approx(-t, abs=1e-12) and swapped.p == pytest.approx(p, abs=1e-12)


def test_welch_t_degenerate_and_errors():
    assert math.isnan(welch_t([1.0, 1.0], [1.0, 1.0]).p)
    r = welch_t([1.0, 1.0], [2.0, 2.0])
    assert r.t == -math.inf and r.p == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        welch_t([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    "t, df, expected",
    [
        (2.0, 3, 0.9303370157205785),
        (-1.5, 7.3, 0.08778154640154305),
        (4.0, 12, 0.9991191518778025),
        (2.228, 10, 0.9749941140914443),
        (1.96, math.inf, 0.9750021048517795),
        (1.0, 1e6, 0.8413446250832108),
    ],
)
def test_t_cdf_known_values(t, df, expected):
    assert t_cdf(t, df) == pytest.approx(expected, abs=1e-9)


def test_t_cdf_closed_forms():
    """df = 1 is the Cauchy distribution, df = 2 has the closed form 1/2 + t / (2 sqrt(2 + t^2))."""
    for t in np.linspace(-30, 30, 61):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_sf(6.0, 2.5) == pytest.approx(0.0076408649427614495, abs=1e-12)


@pytest.mark.parametrize("df", [0.7, 1, 2.5, 4, 9, 30, 250, 1e5])
def test_t_cdf_symmetric_and_monotone(df):
    ts = np.linspace(-12, 12, 241)
    cdf = np.array([t_cdf(t, df) for t in ts])
    sf = np.array([t_sf(t, df) for t in ts])
    assert np.all(np.diff(cdf) >= 0)  # near 1 the cdf saturates in double precision
    assert np.all(np.diff(cdf[ts <= 0]) > 0) and np.all(np.diff(sf[ts >= 0]) < 0)  # the tails stay exact
    assert cdf[0] > 0 and sf[-1] > 0
    for t in ts:
        assert t_cdf(t, df) + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)
    assert t_cdf(0.0, df) == pytest.approx(0.5, abs=1e-15)


def test_betainc_edges_and_symmetry():
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3, abs=1e-14)  # uniform
    assert betainc(2.0, 1.0, 0.4) == pytest.approx(0.16, abs=1e-14)  # x^2
    for a, b, x in [(0.5, 3.0, 0.2), (40.0, 0.5, 0.97), (3.3, 7.1, 0.6)]:
        assert betainc(a, b, x) == pytest.approx(1.0 - betainc(b, a, 1.0 - x), abs=1e-13)
    with pytest.raises(ValueError):
        betainc(0.0, 1.0, 0.5)


def test_bootstrap_ratio_ci_covers_known_ratio():
    rng = np.random.default_rng(11)
    # pretrained: 3 pretraining seeds x 4 fine-tuning seeds around 30; scratch: 6 seeds around 50
    a = [list(30 + rng.normal(0, 1.0) + rng.normal(0, 1.5, 4)) for _ in range(3)]
    b = list(50 + rng.normal(0, 2.0, 6))
    ratio, lo, hi = bootstrap_ratio_ci(a, b, resamples=10_000, seed=0)
    assert lo < 0.6 < hi and lo < ratio < hi
    assert ratio == pytest.approx(np.mean(np.concatenate(a)) / np.mean(b))
    assert bootstrap_ratio_ci(a, b, resamples=10_000, seed=0) == (ratio, lo, hi)  # seeded


def test_two_level_ci_wider_when_pretraining_seeds_differ():
    rng = np.random.default_rng(5)
    # three pretraining seeds far apart (25 / 35 / 45), fine-tuning seeds tight within each
    a = [list(centre + rng.normal(0, 0.5, 3)) for centre in (25.0, 35.0, 45.0)]
    b = list(50 + rng.normal(0, 0.5, 9))
    _, lo2, hi2 = bootstrap_ratio_ci(a, b, seed=1, two_level=True)
    _, lo1, hi1 = bootstrap_ratio_ci(a, b, seed=1, two_level=False)
    assert hi2 - lo2 > 1.2 * (hi1 - lo1)
    m_lo2, m_hi2 = bootstrap_mean_ci(a, seed=2)
    m_lo1, m_hi1 = bootstrap_mean_ci(a, seed=2, two_level=False)
    assert m_hi2 - m_lo2 > 1.2 * (m_hi1 - m_lo1)


def test_two_level_bootstrap_of_one_group_is_one_level():
    values = [[1.0, 2.0, 4.0, 8.0]]
    assert bootstrap_mean_ci(values, seed=3) == bootstrap_mean_ci(values, seed=3, two_level=False)
    assert median([3.0, 1.0, 2.0, 10.0]) == 2.5
