"""How convolutions compute under mixed precision: the policy, and the guard that keeps them right.

oneDNN's bf16 convolutions on CPUs with real bf16 units (AVX-512 bf16 / AMX) return wrong
results for some shapes, not rounding but errors as large as the output: grouped convs with
4, 8, 12 or 14 input channels per group (every kernel 16-128 and length tried; 13, 15, 16, 20,
24, 32, 48 and 64 per group were right), ungrouped convs with 4-16 input channels and kernel
4 or 16 (docs/training.md, precision policy). Emulated bf16 on AVX2 CPUs is correct, so the same
run gave different losses on different machines. On CPU a convolution therefore goes through
oneDNN in bf16 only where that was right on every shape measured:

* the positional conv (grouped, kernel 128) runs in bf16 under CPU autocast, and in a
  bf16 inference model, only with >= ``ONEDNN_BF16_MIN_GROUP_CHANNELS`` input channels per
  group (BASE 48, LARGE 64: 4x faster than float32 there); below, in float32 (:func:`conv_forward`);
* the feature encoder's strided convs run in float32 under CPU autocast. On a CPU with native
  bf16 (AMX or ``avx512_bf16``), :mod:`wav2vec2_lite.low_precision_speed` runs them in bf16 as
  matmuls over unfolded windows (im2col): correct for every shape, with AMX much faster than
  oneDNN's convolutions, without it about as fast as oneDNN's bf16 ones (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "ONEDNN_BF16_MIN_GROUP_CHANNELS",
    "onednn_low_precision_ok",
    "conv_compute_dtype",
    "conv_forward",
]

ONEDNN_BF16_MIN_GROUP_CHANNELS = 32
"""Input channels per group from which a grouped CPU conv is trusted to oneDNN in bf16: well above
the largest wrong shape measured (14); 32, 48 and 64 (LARGE, BASE) were measured right."""


def onednn_low_precision_ok(conv: nn.Module, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether ``conv`` (a grouped ``Conv1d``) may run through oneDNN's kernels in ``dtype`` on CPU
    (bf16 only: float16 was not measured)."""
    return (
        dtype == torch.bfloat16
        and conv.groups > 1
        and conv.in_channels // conv.groups >= ONEDNN_BF16_MIN_GROUP_CHANNELS
    )


def _under_cpu_autocast(x: Tensor) -> bool:
    return x.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def conv_compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a native convolution over ``x`` runs in (the feature encoder's):
    ``x.dtype`` without autocast, float32 under CPU autocast, the autocast dtype under
    any other device's autocast."""
    if _under_cpu_autocast(x):
        return torch.float32
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def conv_forward(conv: nn.Module, x: Tensor) -> Tensor:
    """``conv(x)``; under CPU autocast in float32 with autocast off unless
    :func:`onednn_low_precision_ok`; in the conv's own dtype, and back to ``x``'s, when they
    differ (a bf16 stream into a float32 conv, as ``inference_dtype.cast_for_inference`` may
    leave it)."""
    if _under_cpu_autocast(x):
        if onednn_low_precision_ok(conv, torch.get_autocast_dtype("cpu")):
            return conv(x)  # autocast casts what is not bf16 yet
        with torch.autocast("cpu", enabled=False):
            return conv(x.float())
    weight_dtype = conv.bias.dtype if conv.bias is not None else next(conv.parameters()).dtype
    if x.dtype != weight_dtype:
        return conv(x.to(weight_dtype)).to(x.dtype)
    return conv(x)
