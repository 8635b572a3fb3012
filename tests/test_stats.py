"""wav2vec2_lite.tools.stats: Welch's t test (scipy.stats), bootstrap CIs (fast, seeded).

Reference values: Wikipedia's "Welch's t-test" examples 1 and 3 (t, df, p quoted there to 2-3
digits), here to 1e-6 as computed once by scipy 1.17 and checked against the quoted digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wav2vec2_lite.tools.stats import bootstrap_mean_ci, bootstrap_ratio_ci, welch_t

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
    pytest.importorskip("scipy")
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
