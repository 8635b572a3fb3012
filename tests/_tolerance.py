"""Tolerances derived from the computation, for comparing two kernels' results of one value.

Two float32 computations of the same value that differ only in their kernels (summation order,
fusion, SIMD width, thread count, shapes) each carry a rounding error whose size depends on the
CPU. A constant that held on one machine fails on the next, so the bound is measured where the
test runs: the same computation in float64 is (to float32's eyes) exact, and the float32
reference's distance from it is this computation's rounding error on this CPU. Another float32
kernel may differ from the reference by a few times that; anything larger is a real difference.

For bf16 the same role is played by :mod:`_bf16`: the spread of exact-kernel bf16 results over
random roundings is how far bf16 rounding alone moves the value (:func:`bf16_rounding`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from _bf16 import rounded_bf16

EPS32 = torch.finfo(torch.float32).eps
FACTOR = 8.0  # another kernel's error vs the reference's own, measured against float64


def float32_bound(ref: torch.Tensor, exact: torch.Tensor, factor: float = FACTOR) -> float:
    """Largest ``|other - ref|`` allowed for another float32 kernel computing what ``ref`` computes;
    ``exact`` is the float64 result of the same computation. Floored at one float32 ulp of the
    magnitude, so an exactly representable result still allows the last-bit differences."""
    err = float((ref.double() - exact.double()).abs().max())
    return factor * max(err, EPS32 * float(exact.abs().max()))


def float32_excess(
    got: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, factor: float = FACTOR
) -> float:
    """``|got - ref|`` over its :func:`float32_bound`: ≤ 1 means equal up to float32 rounding."""
    return float((got.double() - ref.double()).abs().max()) / float32_bound(ref, exact, factor)


def assert_float32_close(
    got: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, what: str = "", factor: float = FACTOR
) -> None:
    """``got`` equals ``ref`` up to float32 rounding of this computation on this CPU."""
    assert got.shape == ref.shape == exact.shape, (what, got.shape, ref.shape, exact.shape)
    worst, bound = float((got.double() - ref.double()).abs().max()), float32_bound(ref, exact, factor)
    assert worst <= bound, (
        f"{what}: max |got - ref| = {worst:.3g} > {bound:.3g} "
        f"({factor:g} x this computation's float32 rounding error vs float64)"
    )


def assert_all_float32_close(
    got: list[torch.Tensor],
    ref: list[torch.Tensor],
    exact: list[torch.Tensor],
    names: list[str] | None = None,
) -> None:
    """:func:`assert_float32_close` for each tensor of matching lists (e.g. every gradient)."""
    assert len(got) == len(ref) == len(exact) > 0
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert_float32_close(g, r, e, names[i] if names else f"tensor {i}")


def worst_float32_excess(
    got: list[torch.Tensor], ref: list[torch.Tensor], exact: list[torch.Tensor]
) -> float:
    """The largest :func:`float32_excess` over matching lists: the margin an injected error must break."""
    return max(float32_excess(g, r, e) for g, r, e in zip(got, ref, exact))


def nudged(model: torch.nn.Module, name: str, rel: float = 1e-3) -> torch.nn.Module:
    """A copy of ``model`` whose parameter ``name`` has its largest element off by ``rel``
    (relative): an error each derived bound must still catch, to show it is tight."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        weight = twin.get_parameter(name)
        weight.view(-1)[weight.abs().argmax()] *= 1 + rel
    return twin


def bf16_rounding(fn: Callable[[], torch.Tensor], ref: torch.Tensor, draws: int = 4) -> float:
    """How far bf16 rounding alone moves ``fn()`` (run under CPU bf16 autocast by the caller or
    inside ``fn``) from the float32 ``ref``: the largest relative norm error over ``draws``
    exact-kernel evaluations with random rounding (tests/_bf16.py), on any CPU."""
    errors = []
    for seed in range(draws):
        with rounded_bf16(torch.Generator().manual_seed(seed)):
            errors.append(relative_error(fn(), ref))
    return max(errors)


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """``‖got - ref‖ / ‖ref‖`` in float64."""
    got, ref = got.detach().double(), ref.detach().double()
    return float((got - ref).norm() / ref.norm())
