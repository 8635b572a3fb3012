"""A linear CTC probe over frozen frames: train on one split, greedy-decode and score the other.

    result = train_ctc_probe(train_feats, train_labels, valid_feats, valid_labels, valid_texts,
                             vocab, protocol)
    result.valid_error, result.valid_loss, result.train_loss     # valid_error: CER (unit="char") or PER

Features are :class:`~wav2vec2_lite.probes.features.FrameFeatures` (frames of each utterance);
labels are token ids (blank = 0, the ``CharTokenizer`` layout). The recipe is
:class:`~wav2vec2_lite.probes.protocol.ProbeProtocol`'s: zero-initialised ``Linear(D, V)``,
Adam with a half-cosine learning rate, optional per-dimension standardisation estimated on the
training frames. Decoding and CER are the library's own (``asr/decode.greedy_decode``,
``asr/metrics.cer``); with ``unit="token"`` (phoneme labels) the error rate is over label tokens
(``asr/metrics.align_counts`` of the collapsed best path against the label ids, word delimiters
left out): the phoneme error rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import torch
from torch import Tensor, nn

from wav2vec2_lite.asr.decode import greedy_decode
from wav2vec2_lite.asr.metrics import ErrorCounts, align_counts, cer
from wav2vec2_lite.data.collate import pad_labels
from wav2vec2_lite.data.tokenizer import SPECIAL_TOKENS
from wav2vec2_lite.objectives.losses import ctc_loss
from wav2vec2_lite.probes.features import FrameFeatures
from wav2vec2_lite.probes.protocol import ProbeProtocol

__all__ = ["ProbeResult", "standardizer", "train_ctc_probe"]

STD_EPS = 1e-5


@dataclass
class ProbeResult:
    """One trained probe: its validation error rate (CER, or PER for ``unit="token"``) and CTC loss
    (nats per label, averaged over utterances), the mean training loss over the last 10 % of
    updates, and the hypotheses."""

    dim: int
    valid_error: float
    valid_loss: float
    train_loss: float
    hypotheses: list[str]

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "valid_error": self.valid_error,
            "valid_loss": self.valid_loss,
            "train_loss": self.train_loss,
        }


def _tokens(ids: Sequence[int], vocab: Sequence[str], word_delimiter: str = "|") -> list[int]:
    """Label tokens of a collapsed or plain id sequence: no blank, special token or word delimiter."""
    return [int(k) for k in ids if int(k) >= len(SPECIAL_TOKENS) and vocab[int(k)] != word_delimiter]


def standardizer(train: FrameFeatures) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation (D,) of the training frames (float64 sums)."""
    x = train.frames.double()
    mean = x.mean(0)
    std = (x.var(0, unbiased=False) + STD_EPS).sqrt()
    return mean.float(), std.float()


def _per_label_loss(logits: Tensor, lengths: Tensor, labels: Tensor) -> Tensor:
    """(B,) CTC loss of each utterance divided by its label length (infeasible ones: 0)."""
    per_utt = ctc_loss(logits, lengths, labels, blank=0, reduction="none", zero_infinity=True)
    return per_utt / (labels >= 0).sum(-1).clamp(min=1)


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` batches of utterance indices, epochs of a fresh permutation each."""
    order: list[int] = []
    for _ in range(steps):
        if len(order) < min(batch_size, n):
            order += torch.randperm(n, generator=generator).tolist()
        yield order[:batch_size]
        del order[:batch_size]


def train_ctc_probe(
    train: FrameFeatures,
    train_labels: Sequence[Tensor],
    valid: FrameFeatures,
    valid_labels: Sequence[Tensor],
    valid_texts: Sequence[str],
    vocab: Sequence[str],
    protocol: ProbeProtocol,
    *,
    unit: str = "char",
) -> ProbeResult:
    """Train ``Linear(D, len(vocab))`` on ``train`` with CTC and score it on ``valid``.

    ``train_labels[i]`` / ``valid_labels[i]``: (L_i,) token ids of utterance i (blank = 0 never
    among them); ``valid_texts``: the references for the CER (``ltr_to_text`` of the labels).
    ``unit``: ``"char"`` scores the CER of the decoded texts, ``"token"`` the error rate over
    label tokens (PER for phoneme labels; ``valid_texts`` only name the references then).
    """
    protocol.validate()
    if unit not in ("char", "token"):
        raise ValueError(f"unit must be 'char' or 'token', found {unit!r}")
    if len(train) != len(train_labels) or len(valid) != len(valid_labels) or len(valid) != len(valid_texts):
        raise ValueError(
            f"features and labels disagree: train {len(train)} vs {len(train_labels)}, "
            f"valid {len(valid)} vs {len(valid_labels)} labels and {len(valid_texts)} texts"
        )
    if train.dim != valid.dim:
        raise ValueError(f"train frames have {train.dim} dims, valid frames {valid.dim}")
    if protocol.standardize:
        mean, std = standardizer(train)
        train = train.map_frames(lambda x: (x - mean) / std)
        valid = valid.map_frames(lambda x: (x - mean) / std)

    probe = nn.Linear(train.dim, len(vocab))
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.Adam(probe.parameters(), lr=protocol.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / protocol.steps))
    )
    gen = torch.Generator().manual_seed(protocol.seed)
    tail = max(1, protocol.steps // 10)
    tail_losses: list[float] = []
    for step, idx in enumerate(_batches(len(train), protocol.batch_size, protocol.steps, gen)):
        x, lengths = train.batch(idx)  # (B, T, D), (B,)
        loss = _per_label_loss(probe(x), lengths, pad_labels([train_labels[i] for i in idx])[0]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= protocol.steps - tail:
            tail_losses.append(float(loss.detach()))

    hyps: list[str] = []
    token_errors = ErrorCounts()
    losses: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, len(valid), protocol.eval_batch_size):
            idx = list(range(start, min(start + protocol.eval_batch_size, len(valid))))
            x, lengths = valid.batch(idx)
            logits = probe(x)  # (B, T, V)
            losses.append(_per_label_loss(logits, lengths, pad_labels([valid_labels[i] for i in idx])[0]))
            if unit == "char":
                hyps += greedy_decode(logits, lengths, vocab)
                continue
            for b, i in enumerate(idx):
                best = [k for k, _ in groupby(logits[b, : int(lengths[b])].argmax(-1).tolist())]
                hyp, ref = _tokens(best, vocab), _tokens(valid_labels[i].tolist(), vocab)
                token_errors = token_errors + align_counts(ref, hyp)
                hyps.append(" ".join(vocab[k] for k in hyp))
    error = cer(list(valid_texts), hyps) if unit == "char" else token_errors.rate
    return ProbeResult(
        dim=train.dim,
        valid_error=float(error),
        valid_loss=float(torch.cat(losses).mean()),
        train_loss=sum(tail_losses) / len(tail_losses),
        hypotheses=hyps,
    )
