"""wav2vec 2.0 objectives: contrastive task, codebook diversity, feature penalty, CTC.

All reductions are done in float32, whatever the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wav2vec2_lite.modules.quantizer import perplexity

__all__ = ["contrastive_logits", "contrastive_loss", "diversity_loss", "feature_penalty", "ctc_loss"]


def contrastive_logits(
    predictions: Tensor,
    targets: Tensor,
    candidate_rows: Tensor,
    candidate_is_positive: Tensor,
    utterance_of_prediction: Tensor,
    slot_of_prediction: Tensor,
    temperature: float,
    cross_targets: Tensor | None = None,
) -> Tensor:
    """Cosine similarity / κ between each masked frame's context vector and its candidates.

    Instead of materialising a ``(N, K+1, D)`` tensor of gathered targets, each utterance's
    predictions are compared with all of its quantized frames in one batched matmul
    (``(B, M, D) x (B, D, Q)``) and the K+1 candidates are gathered from that.

    predictions: (N, D) context vectors of the N masked frames, in batch order.
    targets: (B, Q, D) quantized vectors per utterance (padded slots are zero).
    candidate_rows: (N, 1 + K) slot in ``targets[b]`` of the positive then each distractor.
    candidate_is_positive: (N, 1 + K [+ Kc]) bool, distractors identical to the positive
    (same code in every group; masked to -inf as in the reference).
    utterance_of_prediction / slot_of_prediction: (N,) utterance of each masked frame and its
    rank among that utterance's masked frames.
    cross_targets: optional (N, Kc, D) distractors from other utterances.
    Returns (N, 1 + K [+ Kc]) float32 logits, the positive at index 0.
    """
    # float32 with autocast off: κ = 0.1 multiplies the cosine's error ten-fold, and CPU autocast
    # would run the bmm / einsum below in bf16 (2^-8 relative error -> ~0.04 in a logit)
    with torch.autocast(predictions.device.type, enabled=False):
        pred = F.normalize(predictions.float(), dim=-1, eps=1e-8)
        tgt = F.normalize(targets.float(), dim=-1, eps=1e-8)
        batch, max_m = tgt.shape[0], int(slot_of_prediction.max()) + 1 if pred.numel() else 0
        pred_pad = pred.new_zeros(batch, max_m, pred.shape[-1])
        pred_pad = pred_pad.index_put((utterance_of_prediction, slot_of_prediction), pred)
        sim = torch.bmm(pred_pad, tgt.transpose(1, 2))  # (B, M, Q)
        logits = sim[utterance_of_prediction[:, None], slot_of_prediction[:, None], candidate_rows]
        if cross_targets is not None:
            cross = F.normalize(cross_targets.float(), dim=-1, eps=1e-8)
            logits = torch.cat([logits, torch.einsum("nd,nkd->nk", pred, cross)], dim=1)
    logits = logits / temperature
    return logits.masked_fill(candidate_is_positive, float("-inf"))


def contrastive_loss(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy with the positive at index 0, **summed** over frames; and the number correct.

    A frame counts as correct when the positive has the highest logit and is not tied with
    every candidate (fairseq's accuracy).
    """
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits.float(), target, reduction="sum")
    with torch.no_grad():
        is_max = logits.argmax(-1) == 0
        is_min = logits.argmin(-1) == 0
        correct = (is_max & ~is_min).sum() if logits.shape[1] > 1 else is_max.sum()
    return loss, correct


def diversity_loss(soft_probs: Tensor) -> tuple[Tensor, Tensor]:
    """(G·V − soft perplexity) / (G·V) over the given frames; also returns the perplexity.

    soft_probs: (frames, G, V). 0 when every entry is used equally, → 1 on collapse.
    """
    num_codes = soft_probs.shape[1] * soft_probs.shape[2]
    ppl = perplexity(soft_probs)
    return (num_codes - ppl) / num_codes, ppl


def feature_penalty(features: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """Mean squared activation of the conv encoder output (fairseq ``features_pen``).

    features: (B, C, T) conv output; padded frames (``padding_mask`` (B, T)) are excluded.
    """
    sq = features.float().pow(2)
    if padding_mask is None:
        return sq.mean()
    valid = (~padding_mask).to(sq.dtype)[:, None, :]
    return (sq * valid).sum() / (valid.sum() * features.shape[1]).clamp(min=1.0)


def ctc_loss(
    logits: Tensor,
    output_lengths: Tensor,
    labels: Tensor,
    *,
    blank: int = 0,
    reduction: str = "sum",
    zero_infinity: bool = True,
) -> Tensor:
    """CTC over (B, T, V) logits and labels (B, L) padded with -100 (or any negative).

    ``reduction="sum"``: summed over utterances (fairseq, transformers' default);
    ``"mean"``: torch's mean (each utterance's loss / its label length, averaged).
    """
    valid = labels >= 0
    target_lengths = valid.sum(-1)
    targets = labels.masked_select(valid)
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(
            log_probs,
            targets,
            output_lengths,
            target_lengths,
            blank=blank,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )
