"""Gumbel-softmax product quantizer: latent features -> discrete speech units q_t.

G codebooks of V entries each; a frame picks one entry per codebook and the picks are
concatenated (G x V combinations). Training uses the straight-through hard Gumbel-softmax
(forward: a one-hot pick; backward: the gradient of the soft sample); eval takes the argmax.
The temperature is set from outside (annealed per update by the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from wav2vec2_lite.objectives.configs import ContrastiveConfig

__all__ = ["GumbelProductQuantizer", "QuantizerOutput", "perplexity", "gumbel_temperature", "one_hot"]


def gumbel_temperature(update: int, max_temp: float, min_temp: float, decay: float) -> float:
    """fairseq's schedule: ``max(max_temp * decay**update, min_temp)``."""
    return max(max_temp * decay**update, min_temp)


def one_hot(codes: Tensor, num_vars: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(...) -> (..., num_vars)`` in ``dtype``: ``F.one_hot(codes).to(dtype)`` without its int64 copy."""
    return torch.zeros(*codes.shape, num_vars, dtype=dtype, device=codes.device).scatter_(
        -1, codes[..., None], 1.0
    )


def perplexity(probs: Tensor) -> Tensor:
    """Sum over groups of exp(entropy of the mean distribution). probs: (frames, G, V) -> scalar.

    Uses ``xlogy`` (0·log 0 = 0) like transformers; fairseq adds 1e-7 inside the log, a
    difference below 1e-5 of the perplexity.
    """
    mean = probs.float().mean(dim=0)  # (G, V)
    return torch.exp(-torch.xlogy(mean, mean).sum(-1)).sum()


@dataclass
class QuantizerOutput:
    codevectors: Tensor
    """(frames, codevector_dim) concatenated picks."""
    codes: Tensor
    """(frames, G) long, the entry picked in each codebook (noisy argmax in training)."""
    soft_probs: Tensor
    """(frames, G, V) float32 softmax of the logits without noise (for the diversity loss)."""
    hard_codes: Tensor
    """(frames, G) long argmax of the logits without noise (for the hard perplexity)."""


class GumbelProductQuantizer(nn.Module):
    """``(frames, input_dim) -> QuantizerOutput`` with codevectors of width ``codevector_dim``
    (default ``cfg.codevector_dim``): G codebooks of V entries each (``cfg``: the contrastive
    objective's settings; the input quantizer of ``quantize_input`` gives its own width)."""

    def __init__(self, cfg: ContrastiveConfig, input_dim: int, codevector_dim: int | None = None) -> None:
        super().__init__()
        self.num_groups = cfg.num_code_groups
        self.num_vars = cfg.num_codes_per_group
        self.codevector_dim = cfg.codevector_dim if codevector_dim is None else codevector_dim
        self.weight_proj = nn.Linear(input_dim, self.num_groups * self.num_vars)
        # codebook: (G, V, codevector_dim // G)
        self.codebook = nn.Parameter(
            torch.empty(self.num_groups, self.num_vars, self.codevector_dim // self.num_groups)
        )
        self.temperature = float(cfg.gumbel_temperature[0])
        nn.init.uniform_(self.codebook)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    @property
    def num_codes(self) -> int:
        return self.num_groups * self.num_vars

    def logits(self, x: Tensor) -> Tensor:
        """(frames, G·V) float32 logits of ``x`` (cast to the projection's dtype, which stays float32
        under ``inference_dtype.cast_for_inference``)."""
        return self.weight_proj(x.to(self.weight_proj.weight.dtype)).float()

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        """x: (frames, C). ``generator`` draws the Gumbel noise in training (reproducible runs)."""
        logits = rearrange(self.logits(x), "n (g v) -> n g v", g=self.num_groups)
        soft_probs = logits.softmax(-1)
        hard_codes = logits.argmax(-1)
        if self.training:
            # drawn where the generator lives (the trainer's is on the CPU, so a run draws the same
            # noise on any device), then moved: a CUDA tensor's in-place draw refuses a CPU generator
            noise_device = generator.device if generator is not None else logits.device
            u = torch.empty(logits.shape, device=noise_device).exponential_(generator=generator)
            u = u.to(logits.device)
            y_soft = ((logits - u.log()) / self.temperature).softmax(-1)  # -log(Exp(1)) ~ Gumbel(0, 1)
            codes = y_soft.argmax(-1)
            y_hard = one_hot(codes, self.num_vars, y_soft.dtype)
            picks = y_hard - y_soft.detach() + y_soft  # straight-through
            codevectors = torch.einsum("ngv,gvd->ngd", picks.to(self.codebook.dtype), self.codebook)
        else:
            codes = hard_codes
            groups = torch.arange(self.num_groups, device=x.device)
            codevectors = self.codebook[groups[None, :], codes]  # (n, G, d)
        return QuantizerOutput(
            codevectors=rearrange(codevectors, "n g d -> n (g d)"),
            codes=codes,
            soft_probs=soft_probs,
            hard_codes=hard_codes,
        )

    def codebook_usage(self, codes: Tensor) -> Tensor:
        """How often each entry was picked: codes (frames, G) -> counts (G, V)."""
        return F.one_hot(codes, self.num_vars).sum(0)
