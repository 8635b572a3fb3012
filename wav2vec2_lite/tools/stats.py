"""Small-sample statistics for seed comparisons: Welch's t from ``scipy.stats``, and percentile
bootstrap CIs of means and ratios of means over groups of values (pretraining seeds of fine-tuning
seeds), resampled at two levels — scipy's bootstrap is one-level, hence these."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WelchResult",
    "welch_t",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "bootstrap_means",
]


@dataclass(frozen=True)
class WelchResult:
    t: float
    df: float
    p: float
    """Two-sided p-value."""


def welch_t(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's t test of mean(a) - mean(b) (sample variances, n-1), two-sided p-value.

    Needs at least 2 values per group; with both variances 0 the statistic is undefined (nan,
    or ±inf when the means differ) and so is the p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"welch_t: needs at least 2 values per group (got {a.size} and {b.size})")
    if a.var() == 0.0 and b.var() == 0.0:  # scipy warns and leaves the df undefined here
        diff = float(a.mean() - b.mean())
        return (
            WelchResult(math.copysign(math.inf, diff), math.nan, 0.0)
            if diff
            else WelchResult(*[math.nan] * 3)
        )
    from scipy import stats  # optional: scipy (the experiments extra)

    r = stats.ttest_ind(a, b, equal_var=False)
    return WelchResult(float(r.statistic), float(r.df), float(r.pvalue))


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
