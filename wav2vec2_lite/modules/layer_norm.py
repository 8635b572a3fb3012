"""LayerNorm that normalises in float32 under mixed precision.

CUDA autocast runs ``layer_norm`` in float32 and returns float32; CPU autocast runs it in the
input's dtype, so a bf16 activation would be normalised, and the post-LN residual stream
carried, in bf16. ``Fp32LayerNorm`` gives both devices CUDA's behaviour: under autocast the
statistics and the output are float32. Without autocast it is ``nn.LayerNorm`` exactly (a
float32 input goes through the very same kernel; any other dtype comes back in that dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Fp32LayerNorm"]


class Fp32LayerNorm(nn.LayerNorm):
    """``(..., D) -> (..., D)``; float32 out under autocast, the input's dtype otherwise."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast(x.device.type, enabled=False):
            out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out if torch.is_autocast_enabled(x.device.type) else out.to(x.dtype)
