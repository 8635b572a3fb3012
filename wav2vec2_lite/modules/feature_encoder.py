"""Convolutional feature encoder: raw 16 kHz wave -> latent speech representations z_t.

Seven strided 1-D convolutions (reference: 512 channels, kernels 10,3,3,3,3,2,2,
strides 5,2,2,2,2,2,2) turn a wave into one 512-d vector per 20 ms, each seeing 25 ms.
Then :class:`FeatureProjection` applies LayerNorm and a linear map to the transformer
width. Two normalisation modes, as in fairseq:

* ``group`` (BASE): GroupNorm with one group per channel after the first conv only;
* ``layer`` (LARGE / LV-60k): LayerNorm over channels after every conv.

The memory-lean backward of the stack is :mod:`~wav2vec2_lite.modules.lean_conv_stack`. Under
mixed precision the convolutions run as :mod:`~wav2vec2_lite.modules.conv_precision` says (on CPU
in float32); the bf16 speed path of a CPU with native bf16 is :mod:`wav2vec2_lite.low_precision_speed`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.conv_precision import conv_compute_dtype, conv_forward
from wav2vec2_lite.modules.layer_norm import Fp32LayerNorm
from wav2vec2_lite.modules.lean_conv_stack import LeanConvStack, NativeConvs

__all__ = ["ConvLayer", "FeatureEncoder", "FeatureProjection", "conv_output_lengths", "GradMultiply"]


def conv_output_lengths(lengths: Tensor, kernels: tuple[int, ...], strides: tuple[int, ...]) -> Tensor:
    """Frames produced from ``lengths`` samples: ``floor((L - k) / s) + 1`` per layer, >= 0."""
    for k, s in zip(kernels, strides):
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


class GradMultiply(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` (fairseq ``feature_grad_mult``)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def masked_instance_norm(x: Tensor, lengths: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """GroupNorm with one group per channel, statistics over each utterance's first ``lengths`` frames.

    x: (batch, channels, frames); lengths: (batch,). Frames past a length are normalised
    with that utterance's statistics too (their values are never used downstream).
    """
    frames = torch.arange(x.shape[-1], device=x.device)
    valid = (frames[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]  # (B, 1, T)
    count = valid.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (x * valid).sum(-1, keepdim=True) / count
    var = (((x - mean) * valid) ** 2).sum(-1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps) * weight[None, :, None] + bias[None, :, None]


class ConvLayer(nn.Module):
    """Conv1d -> [GroupNorm | LayerNorm over channels | nothing] -> GELU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        bias: bool,
        norm: str | None,
        masked_group_norm: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size=kernel, stride=stride, bias=bias)
        self.norm_kind = norm
        self.masked_group_norm = masked_group_norm
        if norm == "group":
            self.norm = nn.GroupNorm(out_ch, out_ch, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_ch, elementwise_affine=True)
        else:
            self.norm = None

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x: (batch, in_ch, samples) -> (batch, out_ch, frames); ``lengths`` = valid output frames."""
        return self._norm_and_gelu(conv_forward(self.conv, x), lengths)

    def _norm_and_gelu(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if self.norm_kind == "group":
            if self.masked_group_norm and lengths is not None:
                x = masked_instance_norm(x, lengths, self.norm.weight, self.norm.bias, self.norm.eps)
            else:
                x = self.norm(x)
        elif self.norm_kind == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    """The conv stack. ``(batch, samples) -> (batch, channels, frames)``."""

    def __init__(
        self, cfg: Wav2Vec2Config, lean_backward: bool = True, backward_chunk_elements: int = 1 << 22
    ) -> None:
        super().__init__()
        self.kernels, self.strides = tuple(cfg.conv_kernel), tuple(cfg.conv_stride)
        layers = []
        in_ch = 1
        for i, (ch, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            if cfg.feat_extract_norm == "layer":
                norm = "layer"
            else:
                norm = "group" if i == 0 else None
            layers.append(ConvLayer(in_ch, ch, k, s, cfg.conv_bias, norm, cfg.masked_group_norm))
            in_ch = ch
        self.conv_layers = nn.ModuleList(layers)
        self.grad_mult = cfg.feature_grad_mult
        self.lean_backward = lean_backward
        """Train with :class:`LeanConvStack` (same numbers, less activation memory).
        Padded batches with ``masked_group_norm`` use the module path."""
        self.backward_chunk_elements = backward_chunk_elements
        """LeanConvStack computes a conv's gradients over time chunks when its input has more
        elements than this (bounds the kernels' workspace; 0 = never)."""

    def stack_parameters(self) -> list[Tensor]:
        """The tensors :class:`LeanConvStack` computes with and differentiates: ``self.parameters()``."""
        return list(self.parameters())

    def stack_convs(self, wave: Tensor) -> tuple[torch.dtype, type[NativeConvs]]:
        """``(dtype, kernels)`` of :class:`LeanConvStack`'s convolutions over ``wave``: the dtype
        ``conv_forward`` would compute in (float32 under CPU autocast), native kernels."""
        return conv_compute_dtype(wave), NativeConvs

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Samples -> frames for this stack."""
        return conv_output_lengths(lengths, self.kernels, self.strides)

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """wave: (batch, samples); lengths: valid samples per utterance or None -> (batch, C, frames)."""
        x = wave[:, None, :]
        first_lengths = None
        if lengths is not None:
            first_lengths = conv_output_lengths(lengths, self.kernels[:1], self.strides[:1])
        grad_mult = self.grad_mult if torch.is_grad_enabled() else 1.0
        first = self.conv_layers[0]
        masked_norm = first_lengths is not None and first.masked_group_norm and first.norm_kind == "group"
        if self.lean_backward and torch.is_grad_enabled() and grad_mult > 0 and not masked_norm:
            params = self.stack_parameters()
            if wave.requires_grad or any(p.requires_grad for p in params):
                return LeanConvStack.apply(x, self, self.stack_convs(wave), grad_mult, *params)
        with torch.set_grad_enabled(torch.is_grad_enabled() and grad_mult > 0):
            for i, layer in enumerate(self.conv_layers):
                x = layer(x, first_lengths if i == 0 else None)
        if 0 < grad_mult != 1.0 and x.requires_grad:
            x = GradMultiply.apply(x, grad_mult)
        return x


class FeatureProjection(nn.Module):
    """LayerNorm over encoder channels, then Linear to the transformer width, then dropout.

    ``(batch, frames, C) -> (projected (batch, frames, D), normed (batch, frames, C))``; the
    normed features are what the quantizer sees.
    """

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.layer_norm = Fp32LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout_input)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        normed = self.layer_norm(features)  # float32 from the conv stack
        # a bf16-weights model (inference_dtype.cast_for_inference) projects in bf16
        return self.dropout(self.projection(normed.to(self.projection.weight.dtype))), normed
