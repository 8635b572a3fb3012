"""bf16 autocast computed from its definition, to measure the loss's sensitivity to bf16 rounding.

Under :func:`rounded_bf16` (used together with CPU bf16 autocast), every op that autocast
runs in bf16 instead gets its floating-point operands rounded to bf16, is computed in
float32 with autocast off, and has its result rounded to bf16: what an exact bf16 kernel
with float32 accumulation returns, on any CPU. Regions the model runs with autocast off
(its float32 policy) are left alone, so the emulation follows the library's precision policy.

``stochastic=True`` rounds operands up or down at random (probability by distance), which
draws an independent bf16-sized error each call: the spread of a loss over such draws is
how much bf16 rounding alone can move it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# the ops CPU autocast runs in bf16 that the model calls
_LOW_PRECISION_OPS = {
    F.linear,
    F.conv1d,
    F.scaled_dot_product_attention,
    torch.matmul,
    torch.bmm,
    torch.mm,
    torch.addmm,
    torch.baddbmm,
    torch.einsum,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.Tensor.bmm,
    torch.Tensor.mm,
}


def round_to_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """float32 values representable in bf16: to nearest, or stochastically with ``generator``."""
    x = x.float()
    if generator is None:
        return x.bfloat16().float()
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, generator=generator, dtype=torch.int32)
    return ((bits + noise) & ~0xFFFF).view(torch.float32)  # add below the bf16 mantissa, truncate


class rounded_bf16(TorchFunctionMode):
    """Context manager: exact-kernel bf16 for the low-precision ops of CPU autocast (see module doc)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator
        self.calls = 0

    def _round(self, v):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return round_to_bf16(v, self.generator)
        if isinstance(v, (list, tuple)):
            return type(v)(self._round(u) for u in v)
        return v

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _LOW_PRECISION_OPS or not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        self.calls += 1
        args, kwargs = self._round(args), {k: self._round(v) for k, v in kwargs.items()}
        with torch.autocast("cpu", enabled=False):
            out = func(*args, **kwargs)
        return out.bfloat16()  # exact: the float32 result rounded to bf16, as the kernel stores it
