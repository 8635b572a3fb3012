"""Span masking and negative sampling (wav2vec 2.0 §3.1, §3.2).

Everything is drawn on the CPU from an optional ``torch.Generator``, so a run that saves
its generator state resumes with the same masks, and CPU and GPU runs draw alike.
Conventions: right padding; ``lengths`` are valid frames per utterance.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "compute_span_mask",
    "compute_channel_mask",
    "sample_negatives",
    "sample_cross_negatives",
    "validate_negatives",
]


def _num_spans(
    length: int, mask_prob: float, span: int, min_masks: int, generator: torch.Generator | None
) -> int:
    """int(p·L/M + U[0,1)), at least ``min_masks``, at most L // M spans (their total length
    never exceeds the utterance, as transformers caps it)."""
    u = torch.rand((), generator=generator).item()
    n = max(int(mask_prob * length / span + u), min_masks)
    return min(n, length // span, max(length - span + 1, 0))


def compute_span_mask(
    batch: int,
    frames: int,
    mask_prob: float,
    mask_length: int,
    *,
    lengths: Tensor | None = None,
    min_masks: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random spans of ``mask_length`` frames, starts chosen without replacement (fairseq).

    Each utterance of ``L`` valid frames gets ``int(mask_prob * L / mask_length + U)`` spans
    (>= ``min_masks``, <= L // mask_length), all inside its valid frames; overlapping spans
    merge, so the masked fraction is below ``mask_prob`` (about 49 % for the paper's 0.65 / 10). An utterance
    shorter than a span gets one span covering all but its last frame (short-audio fix),
    so it is never fully masked unless it has a single frame.
    Returns (batch, frames) bool, True = masked.
    """
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    if mask_prob <= 0:
        return mask
    lens = [frames] * batch if lengths is None else [int(v) for v in lengths.tolist()]
    for b, length in enumerate(lens):
        span = min(mask_length, max(length - 1, 1))
        n = _num_spans(length, mask_prob, span, min_masks, generator)
        if n == 0:
            continue
        starts = torch.randperm(length - span + 1, generator=generator)[:n]
        idx = (starts[:, None] + torch.arange(span)[None, :]).flatten()
        mask[b, idx] = True
    return mask


def compute_channel_mask(
    batch: int, channels: int, mask_prob: float, mask_length: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Channel (feature-axis) masking, the same spans for every frame of an utterance. (B, C) bool."""
    return compute_span_mask(batch, channels, mask_prob, mask_length, generator=generator)


def sample_negatives(mask: Tensor, num_negatives: int, *, generator: torch.Generator | None = None) -> Tensor:
    """K distractors per masked frame, uniformly from the *other* masked frames of the same utterance.

    As fairseq: drawn with replacement, never the frame itself (an utterance with a single
    masked frame can only point at itself, which the loss then masks out).
    mask: (B, T) bool -> (B, T, K) long frame indices within each utterance; rows at
    unmasked positions hold the frame's own index (ignored by the loss, always valid).
    """
    batch, frames = mask.shape
    out = torch.arange(frames).expand(batch, frames)[..., None].repeat(1, 1, num_negatives)
    for b in range(batch):
        pos = mask[b].nonzero().flatten()
        n = pos.numel()
        if n < 2:
            continue
        draw = torch.randint(0, n - 1, (n, num_negatives), generator=generator)
        draw = draw + (draw >= torch.arange(n)[:, None]).long()  # skip self
        out[b, pos] = pos[draw]
    return out


def sample_cross_negatives(
    mask: Tensor, num_negatives: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Distractors from the masked frames of the whole batch (fairseq ``cross_sample_negatives``).

    mask: (B, T) bool -> (B, T, K) long *flat* indices ``b * T + t`` into the batch; never the
    frame itself; rows at unmasked positions hold the frame's own flat index.
    """
    batch, frames = mask.shape
    out = torch.arange(batch * frames).view(batch, frames)[..., None].repeat(1, 1, num_negatives)
    pos = mask.flatten().nonzero().flatten()
    n = pos.numel()
    if n < 2 or num_negatives == 0:
        return out
    draw = torch.randint(0, n - 1, (n, num_negatives), generator=generator)
    draw = draw + (draw >= torch.arange(n)[:, None]).long()
    out.view(-1, num_negatives)[pos] = pos[draw]
    return out


def validate_negatives(negatives: Tensor, mask: Tensor, lengths: Tensor) -> None:
    """Raise ``ValueError`` if a masked frame's distractor is outside its utterance's valid frames."""
    if negatives.dim() != 3 or negatives.shape[:2] != mask.shape:
        raise ValueError(
            f"negative_indices must have shape (batch, frames, K) = ({mask.shape[0]}, {mask.shape[1]}, K); "
            f"got {tuple(negatives.shape)}"
        )
    neg = negatives.to(lengths.device)
    bad = mask.to(lengths.device)[..., None] & ((neg < 0) | (neg >= lengths[:, None, None]))
    if bad.any():
        b, t, k = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"negative_indices[{b}, {t}, {k}] = {int(neg[b, t, k])} is not a valid frame of utterance {b} "
            f"(valid frames 0..{int(lengths[b]) - 1}); "
            f"distractors must come from the same, unpadded utterance"
        )
