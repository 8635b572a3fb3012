"""``nn.Linear`` whose weights a mixed-precision step may hand over already cast.

Autocast casts each Linear's weight and bias to bf16 at every forward, two casts per
parameter (and two more for their gradients). :class:`~wav2vec2_lite.train.precision.LowPrecisionWeights`
instead casts all Linear parameters of the model in one op per forward and sets
``low_precision`` on each layer for that forward; the numbers are the same.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Linear"]


class Linear(nn.Linear):
    """``(..., in) -> (..., out)``: ``nn.Linear``, or with ``low_precision = (weight, bias)`` set,
    those (already cast) tensors in place of the parameters."""

    low_precision: tuple[Tensor, Tensor | None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.low_precision is not None:
            weight, bias = self.low_precision
            return F.linear(x, weight, bias)
        return F.linear(x, self.weight, self.bias)
