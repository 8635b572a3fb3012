"""Small-sample statistics for seed comparisons, without scipy.

* :func:`betainc` — the regularized incomplete beta function I_x(a, b), by the continued
  fraction of Numerical Recipes (modified Lentz), on the side of x where it converges fast.
* :func:`t_cdf` / :func:`t_sf` — Student's t distribution from it:
  P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2); the normal distribution when ``df`` is infinite.
* :func:`welch_t` — Welch's unequal-variance t test (Welch–Satterthwaite degrees of freedom),
  two-sided p-value.
* :func:`bootstrap_ratio_ci` — percentile bootstrap CI of mean(a) / mean(b) where each arm is a
  list of groups (e.g. pretraining seeds) of values (fine-tuning seeds): ``two_level=True``
  resamples groups with replacement, then values within each drawn group; ``False`` pools the
  values and resamples them (one level). An arm with one group is resampled at one level
  either way (the scratch arm of a label curve has no pretraining seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "betainc",
    "t_cdf",
    "t_sf",
    "WelchResult",
    "welch_t",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "bootstrap_means",
    "median",
]

_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float, max_iter: int = 1000) -> float:
    """Continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"betainc({a}, {b}, {x}): continued fraction did not converge in {max_iter} terms")


def _stirling_tail(x: float) -> float:
    """log Γ(x) - [(x - 1/2) ln x - x + ln(2π)/2] for x >= 50 (error < 1e-16)."""
    x2 = x * x
    return 1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2) + 1.0 / (1260.0 * x * x2 * x2)


def _lbeta(a: float, b: float) -> float:
    """ln B(a, b). With one argument large, lgamma(a + b) - lgamma(a) cancels most of its digits
    (df = 1e6 lost ~7), so that difference is taken from Stirling's series term by term."""
    big, small = max(a, b), min(a, b)
    if big < 50.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    s = big + small
    # lgamma(s) - lgamma(big) = (big - 1/2) ln(s / big) + small ln s - small + tails
    diff = (
        (big - 0.5) * math.log1p(small / big)
        + small * math.log(s)
        - small
        + _stirling_tail(s)
        - _stirling_tail(big)
    )
    return math.lgamma(small) - diff


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc: a and b must be > 0 (got {a}, {b})")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x must be in [0, 1] (got {x})")
    if x == 0.0 or x == 1.0:
        return x
    log_front = a * math.log(x) + b * math.log1p(-x) - _lbeta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` > 0 degrees of freedom (``math.inf``: the normal)."""
    if not df > 0:
        raise ValueError(f"t distribution: df must be > 0 (got {df})")
    if math.isnan(t):
        return math.nan
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    # tail = P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2); written with t^2/df to keep precision for huge df
    x = 1.0 / (1.0 + t * t / df)
    tail = betainc(df / 2.0, 0.5, x)
    return 0.5 * tail if t > 0 else 1.0 - 0.5 * tail


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    return t_sf(-t, df)


@dataclass(frozen=True)
class WelchResult:
    t: float
    df: float
    p: float
    """Two-sided p-value."""
    mean_a: float
    mean_b: float


def welch_t(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's t test of mean(a) - mean(b) (sample variances, n-1), two-sided p-value.

    Needs at least 2 values per group; with both variances 0 the statistic is undefined (nan,
    or ±inf when the means differ) and so is the p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_t: needs at least 2 values per group (got {a.size} and {b.size})")
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    se2 = va + vb
    if se2 == 0.0:
        if ma == mb:
            return WelchResult(math.nan, math.nan, math.nan, ma, mb)
        return WelchResult(math.copysign(math.inf, ma - mb), math.nan, 0.0, ma, mb)
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    p = min(1.0, 2.0 * t_sf(abs(t), df))
    return WelchResult(t, df, p, ma, mb)


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float))) if len(values) else math.nan


def _as_groups(arm: Sequence[Sequence[float]] | Sequence[float]) -> list[np.ndarray]:
    groups = [np.atleast_1d(np.asarray(g, dtype=float)) for g in arm]
    groups = [g for g in groups if g.size]
    if not groups:
        raise ValueError("bootstrap: an arm without values")
    return groups


def bootstrap_means(
    arm: Sequence[Sequence[float]] | Sequence[float],
    resamples: int,
    rng: np.random.Generator,
    two_level: bool = True,
) -> np.ndarray:
    """``resamples`` bootstrap means of an arm given as groups of values (a flat list = one value
    per group). Two-level: draw as many groups as there are, with replacement, then within each
    drawn group as many values as it has, with replacement; the mean is over all drawn values.
    One-level (or a single group): the pooled values resampled."""
    groups = _as_groups(arm)
    if not two_level or len(groups) == 1:
        pooled = np.concatenate(groups)
        idx = rng.integers(0, pooled.size, size=(resamples, pooled.size))
        return pooled[idx].mean(axis=1)
    sizes = np.array([g.size for g in groups])
    table = np.full((len(groups), sizes.max()), np.nan)
    for i, g in enumerate(groups):
        table[i, : g.size] = g
    chosen = rng.integers(0, len(groups), size=(resamples, len(groups)))  # (B, G) groups drawn
    n = sizes[chosen]  # (B, G) their sizes
    u = rng.random((resamples, len(groups), sizes.max()))
    inner = np.floor(u * n[..., None]).astype(int)  # index < n of each group
    valid = np.arange(sizes.max())[None, None, :] < n[..., None]  # first n draws count
    values = table[chosen[..., None], inner]
    return np.where(valid, values, 0.0).sum(axis=(1, 2)) / valid.sum(axis=(1, 2))


def _percentile_ci(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    arm, resamples: int = 10_000, seed: int = 0, level: float = 0.95, two_level: bool = True
) -> tuple[float, float]:
    """Percentile bootstrap CI of an arm's mean (groups of values, see :func:`bootstrap_means`)."""
    return _percentile_ci(bootstrap_means(arm, resamples, np.random.default_rng(seed), two_level), level)


def bootstrap_ratio_ci(
    a, b, resamples: int = 10_000, seed: int = 0, level: float = 0.95, two_level: bool = True
) -> tuple[float, float, float]:
    """(ratio of the means, CI low, CI high) of mean(a) / mean(b), each arm resampled on its own
    (groups of values, see :func:`bootstrap_means`), ``seed`` seeding one generator for both."""
    rng = np.random.default_rng(seed)
    ga, gb = _as_groups(a), _as_groups(b)
    ma, mb = bootstrap_means(ga, resamples, rng, two_level), bootstrap_means(gb, resamples, rng, two_level)
    mean_b = float(np.concatenate(gb).mean())
    ratio = float(np.concatenate(ga).mean()) / mean_b if mean_b != 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = _percentile_ci(ma / mb, level)
    return ratio, lo, hi
