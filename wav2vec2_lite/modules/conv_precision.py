"""The dtype convolutions compute in under autocast: float32 on CPU, the autocast dtype elsewhere.

oneDNN's bf16 convolutions on CPUs with real bf16 units (AVX-512 bf16 / AMX) return wrong
results for some shapes, not rounding but errors as large as the output: a grouped conv with
4–12 channels per group and kernel >= 16 (the positional conv of a 64-wide model with 16
groups), ungrouped convs with 4–16 input channels and kernel 4 or 16 (docs/training.md,
precision policy). Emulated bf16 on AVX2 CPUs is correct, so the same run gave different
losses on different machines. On CPU the convolutions therefore stay float32 under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["conv_compute_dtype", "conv_forward"]


def _under_cpu_autocast(x: Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def conv_compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a convolution over ``x`` runs in: ``x.dtype`` without autocast, float32
    under CPU autocast, the autocast dtype under any other device's autocast."""
    if _under_cpu_autocast(x):
        return torch.float32
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def conv_forward(conv: nn.Module, x: Tensor) -> Tensor:
    """``conv(x)``, in float32 with autocast off when CPU autocast is on; in the conv's own
    dtype, and back to ``x``'s, when they differ (a bf16 stream into a float32 conv, as
    ``inference_dtype.cast_for_inference`` leaves it); unchanged otherwise."""
    if _under_cpu_autocast(x):
        with torch.autocast("cpu", enabled=False):
            return conv(x.float())
    weight_dtype = conv.bias.dtype if conv.bias is not None else next(conv.parameters()).dtype
    if x.dtype != weight_dtype:
        return conv(x.to(weight_dtype)).to(x.dtype)
    return conv(x)
