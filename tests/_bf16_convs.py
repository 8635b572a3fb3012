"""Exact-kernel bf16 for what CPU autocast leaves float32 but a bf16 fast path stores in bf16.

:class:`rounded_bf16_convs` rounds every ``F.conv1d``'s operands and result, and the outputs of
the norms and GELU, to bf16 (stochastically with ``generator``), each kernel computing exactly in
float32; under autograd the gradients of those tensors are rounded the same way. It is what the
feature encoder's unfolded bf16 path (``low_precision_speed``) and a bf16 inference model store,
which ``_bf16.rounded_bf16`` does not reach (the plain convs run with autocast off). Stack it
inside ``rounded_bf16`` to emulate a whole bf16 model; the spread over draws is how far bf16
rounding alone moves a value (``_tolerance.bf16_rounding``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from _bf16 import round_to_bf16


class _Round(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, generator):  # type: ignore[override]
        ctx.generator = generator
        return round_to_bf16(t, generator)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return round_to_bf16(g, ctx.generator), None


class rounded_bf16_convs(TorchFunctionMode):
    """Context manager: conv operands and results, norm and GELU outputs stored in bf16 (see module doc)."""

    OPS = {F.conv1d, F.group_norm, F.layer_norm, F.gelu}

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator

    def _round(self, t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return _Round.apply(t, self.generator)
        return t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.OPS:
            return func(*args, **kwargs)
        if func is F.conv1d:
            args = tuple(self._round(a) for a in args)
        out = func(*args, **kwargs)
        return self._round(out).to(out.dtype)
