"""How convolutions compute under mixed precision.

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
* the feature encoder's strided convs run in bf16 as matmuls over unfolded windows
  (:func:`unfolded_conv1d`, im2col), correct for every shape and faster than oneDNN's bf16
  or float32 convolutions there (docs/benchmarks.md); :func:`encoder_conv_plan` says when.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "ONEDNN_BF16_MIN_GROUP_CHANNELS",
    "onednn_low_precision_ok",
    "conv_compute_dtype",
    "conv_forward",
    "encoder_conv_plan",
    "unfold_windows",
    "unfolded_conv1d",
]

_LOW = (torch.bfloat16, torch.float16)
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
    """The dtype a native convolution over ``x`` runs in (the feature encoder's, when it is not
    unfolded): ``x.dtype`` without autocast, float32 under CPU autocast, the autocast dtype under
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


def encoder_conv_plan(x: Tensor, weight: Tensor) -> tuple[torch.dtype, bool]:
    """``(dtype, unfolded)`` for a feature-encoder conv over ``x``: on CPU under autocast, or with
    low-precision weights (``inference_dtype``), the low-precision dtype as an unfolded matmul;
    otherwise :func:`conv_compute_dtype` and the native convolution."""
    device = x.device.type
    if _under_cpu_autocast(x) and torch.get_autocast_dtype("cpu") in _LOW:
        return torch.get_autocast_dtype("cpu"), True
    if weight.dtype in _LOW and not torch.is_autocast_enabled(device):
        return weight.dtype, device == "cpu"
    return conv_compute_dtype(x), False


def unfold_windows(x: Tensor, k: int, stride: int) -> Tensor:
    """``(B, C, S) -> (B, C k, T)``: each output frame's receptive window, channel-major (the
    order of ``weight.reshape(C_out, C k)``); the im2col both directions of the matmul conv read."""
    windows = x.unfold(2, k, stride)  # (B, C, T, k), a view
    b, c, t, _ = windows.shape
    return windows.permute(0, 1, 3, 2).reshape(b, c * k, t)


def unfolded_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """``F.conv1d`` (no padding) as one matmul over the unfolded windows (im2col).

    ``x (B, C_in, S), weight (C_out, C_in, k) -> (B, C_out, T)``, channels-first throughout
    (no transposes: the norms and the next layer read it as it is): the convolution's
    numbers up to rounding, in any dtype.
    """
    c_out, c_in, k = weight.shape
    windows = unfold_windows(x, k, stride)  # (B, C_in k, T)
    batch = windows.shape[0]
    # bmm on the broadcast weight: torch.matmul would fold the batch into a matrix by transposing
    y = torch.bmm(weight.reshape(c_out, c_in * k).expand(batch, c_out, c_in * k), windows)  # (B, C_out, T)
    return y if bias is None else y + bias[:, None]
