"""Convolutional relative positional embedding (wav2vec 2.0 §2).

A wide grouped convolution over time (reference: kernel 128, 16 groups) with weight
normalisation over the kernel axis, "same" padding and GELU; its output is added to the
transformer input. ``(batch, frames, D) -> (batch, frames, D)``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.conv_precision import conv_forward

__all__ = ["ConvPositionalEmbedding"]


class ConvPositionalEmbedding(nn.Module):
    """Grouped Conv1d (weight norm, dim=2) -> drop the extra frame of an even kernel -> GELU."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        d, k = cfg.hidden_size, cfg.pos_conv_kernel
        conv = nn.Conv1d(d, d, kernel_size=k, padding=k // 2, groups=cfg.pos_conv_groups)
        # fairseq's init: normal with std sqrt(4 / (k * d)), zero bias, then weight norm
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (k * d)))
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)
        self.remove = 1 if k % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        # float32 under CPU autocast unless >= 32 channels per group (conv_precision's guard)
        y = conv_forward(self.conv, x.transpose(1, 2))
        if self.remove:
            y = y[:, :, : -self.remove]
        return F.gelu(y).transpose(1, 2)
