"""Word and character error rates (WER / CER) with an error breakdown.

Everything here is corpus-level: errors are summed over all utterances and divided
by the total reference length, which is what papers report (an average of
per-utterance rates would weight short utterances too much).

    counts = word_errors(refs, hyps)         # ErrorCounts(substitutions=.., ..., ref_len=..)
    total = counts_a + counts_b              # accumulate across batches
    total = total.all_reduce()               # ... and across DDP ranks
    total.rate                               # = wer(refs, hyps)

Text is compared as given apart from whitespace: words are ``str.split()`` tokens,
and for CER runs of whitespace collapse to one space and the ends are stripped.
Casing and punctuation are the caller's business (normalise both sides alike).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "ErrorCounts",
    "edit_distance",
    "align_counts",
    "word_errors",
    "char_errors",
    "wer",
    "cer",
]


@dataclass
class ErrorCounts:
    """Edit operations against a reference, summable across utterances, batches and ranks.

    ``errors = substitutions + insertions + deletions``; ``rate = errors / ref_len``.
    """

    substitutions: int = 0
    insertions: int = 0
    deletions: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.insertions + self.deletions

    @property
    def rate(self) -> float:
        """errors / ref_len; raises ValueError when no reference tokens were counted."""
        if self.ref_len == 0:
            raise ValueError(
                f"error rate is undefined: the references are empty (0 tokens), "
                f"with {self.errors} errors counted against them"
            )
        return self.errors / self.ref_len

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        if not isinstance(other, ErrorCounts):
            return NotImplemented
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.insertions + other.insertions,
            self.deletions + other.deletions,
            self.ref_len + other.ref_len,
        )

    def as_tensor(self, device=None):
        """LongTensor ``[substitutions, insertions, deletions, ref_len]`` (for all_reduce)."""
        return torch.tensor(
            [self.substitutions, self.insertions, self.deletions, self.ref_len],
            dtype=torch.long,
            device=device,
        )

    @classmethod
    def from_tensor(cls, t) -> ErrorCounts:
        values = [int(v) for v in t.tolist()]
        if len(values) != 4:
            raise ValueError(f"expected 4 values [S, I, D, ref_len], got {len(values)}")
        return cls(*values)

    def all_reduce(self, group=None, device=None) -> ErrorCounts:
        """Sum over the ranks of ``torch.distributed`` (a no-op when it is not initialised).

        Collective: every rank of ``group`` must call it. With the NCCL backend pass
        ``device`` (the rank's CUDA device).
        """
        if not (dist.is_available() and dist.is_initialized()):
            return ErrorCounts(self.substitutions, self.insertions, self.deletions, self.ref_len)
        t = self.as_tensor(device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        return ErrorCounts.from_tensor(t.cpu())


def _encode_pair(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Map the tokens of both sequences to shared int ids."""
    ids: dict[Hashable, int] = {}
    r = np.fromiter((ids.setdefault(x, len(ids)) for x in ref), dtype=np.int64, count=len(ref))
    h = np.fromiter((ids.setdefault(x, len(ids)) for x in hyp), dtype=np.int64, count=len(hyp))
    return r, h


def align_counts(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> ErrorCounts:
    """Levenshtein alignment of ``hyp`` against ``ref`` with its S/I/D breakdown.

    Among the alignments of minimum cost it picks the one with the fewest deletions
    (hence the fewest insertions and the most substitutions). O(len(ref)·len(hyp))
    time, O(len(hyp)) memory: each DP row is a handful of numpy operations (no Python
    loop over cells).

    How: every cell holds ``K·cost + deletions`` with ``K > len(ref)``, a single
    additive edge weight whose minimum is the lexicographic minimum of (cost,
    deletions). Given cost E and deletions D of the best path, ``I - D = len(hyp) -
    len(ref)`` fixes I, and S = E - I - D. Insertions move along the row; the
    sequential min ``cur[j] = min(cur[j], cur[j-1] + K)`` is a running minimum of
    ``cur[j] - K·j``.
    """
    n, m = len(ref), len(hyp)
    # Common prefix / suffix cost nothing and change no counts.
    lo = 0
    while lo < min(n, m) and ref[lo] == hyp[lo]:
        lo += 1
    hi = 0
    while hi < min(n, m) - lo and ref[n - 1 - hi] == hyp[m - 1 - hi]:
        hi += 1
    r, h = _encode_pair(ref[lo : n - hi], hyp[lo : m - hi])
    n, m = len(r), len(h)
    if n == 0 or m == 0:
        return ErrorCounts(insertions=m, deletions=n, ref_len=len(ref))

    K = n + 1  # > any deletion count, so cost dominates
    steps = np.arange(m + 1, dtype=np.int64) * K
    prev = steps.copy()  # row 0: j insertions
    for i in range(n):
        cur = np.empty(m + 1, dtype=np.int64)
        cur[0] = (i + 1) * (K + 1)  # i+1 deletions
        # substitution / match from the diagonal, deletion from above
        np.minimum(prev[:-1] + K * (h != r[i]), prev[1:] + (K + 1), out=cur[1:])
        # insertions from the left: running min of cur[j] - K*j
        cur -= steps
        np.minimum.accumulate(cur, out=cur)
        cur += steps
        prev = cur
    cost, dels = divmod(int(prev[-1]), K)
    ins = dels + (m - n)
    return ErrorCounts(substitutions=cost - ins - dels, insertions=ins, deletions=dels, ref_len=len(ref))


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit-cost substitutions, insertions, deletions)."""
    return align_counts(ref, hyp).errors


def _pairs(refs, hyps) -> list[tuple[str, str]]:
    if isinstance(refs, str):
        refs = [refs]
    if isinstance(hyps, str):
        hyps = [hyps]
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    for k, (r, h) in enumerate(zip(refs, hyps)):
        if not isinstance(r, str) or not isinstance(h, str):
            raise TypeError(
                f"pair {k}: expected str reference and hypothesis, got "
                f"{type(r).__name__} and {type(h).__name__}"
            )
    return list(zip(refs, hyps))


def word_errors(refs: Sequence[str] | str, hyps: Sequence[str] | str) -> ErrorCounts:
    """Summed word-level ErrorCounts over utterance pairs (words = ``str.split()``)."""
    total = ErrorCounts()
    for r, h in _pairs(refs, hyps):
        total = total + align_counts(r.split(), h.split())
    return total


def _squash(s: str) -> str:
    return " ".join(s.split())


def char_errors(refs: Sequence[str] | str, hyps: Sequence[str] | str) -> ErrorCounts:
    """Summed character-level ErrorCounts; spaces count, after whitespace is collapsed."""
    total = ErrorCounts()
    for r, h in _pairs(refs, hyps):
        total = total + align_counts(_squash(r), _squash(h))
    return total


def wer(refs: Sequence[str] | str, hyps: Sequence[str] | str) -> float:
    """Corpus word error rate: total word errors / total reference words.

    Raises ValueError when the references hold no words at all.
    """
    return word_errors(refs, hyps).rate


def cer(refs: Sequence[str] | str, hyps: Sequence[str] | str) -> float:
    """Corpus character error rate: total char errors / total reference chars (spaces included)."""
    return char_errors(refs, hyps).rate
