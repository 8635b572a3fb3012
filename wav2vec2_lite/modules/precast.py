"""Layers whose weights a mixed-precision step may hand over already cast.

Autocast casts each layer's weight and bias to bf16 at every forward, two casts per
parameter (and two more for their gradients).
:class:`~wav2vec2_lite.train.low_precision_weights.LowPrecisionWeights` instead casts the
parameters of all these layers in one op per forward and sets ``low_precision = (weight, bias)``
on each for that forward; the numbers are the same.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Linear", "Conv1d", "PRECAST_LAYERS", "weight_and_bias"]


class Linear(nn.Linear):
    """``(..., in) -> (..., out)``: ``nn.Linear``, or with ``low_precision`` set, those tensors."""

    low_precision: tuple[Tensor, Tensor | None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = weight_and_bias(self)
        return F.linear(x, weight, bias)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` with a ``low_precision`` slot; the feature encoder reads it through
    :func:`weight_and_bias` (its convolutions are unfolded matmuls or ``LeanConvStack``)."""

    low_precision: tuple[Tensor, Tensor | None] | None = None


PRECAST_LAYERS = (Linear, Conv1d)


def weight_and_bias(layer: nn.Module) -> tuple[Tensor, Tensor | None]:
    """The tensors a forward pass uses: the pre-cast pair if one is set, else the parameters."""
    pair = getattr(layer, "low_precision", None)
    return pair if pair is not None else (layer.weight, layer.bias)
