"""CTC decoding without a language model: greedy (with word timings) and prefix beam search.

The vocabulary conventions are in :mod:`wav2vec2_lite.asr.decode`, the public face of decoding.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from itertools import groupby

import numpy as np
import torch

from wav2vec2_lite.data.tokenizer import SPECIAL_TOKENS

__all__ = [
    "greedy_decode",
    "greedy_decode_with_timings",
    "GreedyTimings",
    "prefix_beam_search",
    "prefix_beam_search_nbest",
    "labels_to_text",
]


# ----------------------------------------------------------------------------- vocab helpers
def _pieces(vocab: Sequence[str], blank: int, word_delimiter: str, skip_tokens: Collection[str]) -> list[str]:
    """What each vocabulary entry contributes to the text: '' (dropped), ' ' or itself."""
    if not 0 <= blank < len(vocab):
        raise ValueError(f"blank index {blank} is outside the vocabulary of size {len(vocab)}")
    skip = set(skip_tokens)
    out = []
    for i, tok in enumerate(vocab):
        if i == blank or tok in skip:
            out.append("")
        elif tok == word_delimiter or tok.isspace():
            out.append(" ")
        else:
            out.append(tok)
    return out


def _normalize_spaces(text: str) -> str:
    return " ".join(text.split())


def labels_to_text(
    labels: Sequence[int],
    vocab: Sequence[str],
    *,
    blank: int = 0,
    word_delimiter: str = "|",
    skip_tokens: Collection[str] = SPECIAL_TOKENS,
) -> str:
    """Text of an already-collapsed CTC labelling (no repeat merging here)."""
    pieces = _pieces(vocab, blank, word_delimiter, skip_tokens)
    return _normalize_spaces("".join(pieces[i] for i in labels))


def to_cpu_tensor(x) -> torch.Tensor:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


# ----------------------------------------------------------------------------- greedy
def greedy_decode(
    logits_or_ids,
    output_lengths=None,
    vocab: Sequence[str] = (),
    *,
    blank: int = 0,
    word_delimiter: str = "|",
    skip_tokens: Collection[str] = SPECIAL_TOKENS,
) -> list[str]:
    """Best-path CTC decoding of a batch.

    Args:
        logits_or_ids: float logits / log-probs ``(B, T, V)`` (argmax is taken) or
            integer frame ids ``(B, T)``.
        output_lengths: ``(B,)`` valid frames per utterance; frames past it are padding
            and ignored. ``None``: all T frames.
        vocab: the V tokens.
    Returns:
        B strings: repeats collapsed, blanks and special tokens dropped, ``|`` -> space.
    """
    x = to_cpu_tensor(logits_or_ids)
    if x.is_floating_point():
        if x.dim() != 3:
            raise ValueError(f"logits must be (B, T, V), found shape {tuple(x.shape)}")
        if x.shape[-1] != len(vocab):
            raise ValueError(f"logits have V={x.shape[-1]} classes but the vocabulary has {len(vocab)}")
        ids = x.argmax(dim=-1)
    else:
        if x.dim() != 2:
            raise ValueError(f"frame ids must be (B, T), found shape {tuple(x.shape)}")
        ids = x.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(vocab)):
            raise ValueError(
                f"frame ids must lie in [0, {len(vocab)}), found range [{int(ids.min())}, {int(ids.max())}]"
            )
    B, T = ids.shape
    if output_lengths is None:
        lengths = [T] * B
    else:
        lengths = to_cpu_tensor(output_lengths).reshape(-1).tolist()
        if len(lengths) != B:
            raise ValueError(f"output_lengths has {len(lengths)} entries for a batch of {B}")
        if any(not 0 <= n <= T for n in lengths):
            raise ValueError(f"output_lengths must lie in [0, {T}], found {lengths}")
    pieces = _pieces(vocab, blank, word_delimiter, skip_tokens)
    texts = []
    for row, n in zip(ids.tolist(), lengths):
        collapsed = (k for k, _ in groupby(row[: int(n)]))
        texts.append(_normalize_spaces("".join(pieces[k] for k in collapsed)))
    return texts


def greedy_decode_with_timings(
    logits,
    vocab: Sequence[str],
    frame_stride_s: float = 0.02,
    *,
    length: int | None = None,
    blank: int = 0,
    word_delimiter: str = "|",
    skip_tokens: Collection[str] = SPECIAL_TOKENS,
) -> tuple[str, list[dict]]:
    """Greedy decoding of one utterance with word timings from the CTC frames.

    Args:
        logits: ``(T, V)`` logits or log-probs of one utterance.
        frame_stride_s: seconds per frame (320 samples at 16 kHz = 0.02).
        length: valid frames (the rest is padding); ``None``: all.
    Returns:
        ``(text, words)``; each word is ``{"word", "start_s", "end_s", "confidence"}``:
        start = first frame of its first character, end = one frame past the last
        frame of its last character, confidence = mean over the frames from start to
        end (blanks inside the word included) of the frame's top softmax probability.
        ``text == " ".join(w["word"] for w in words) == greedy_decode(...)[0]``.
    """
    x = _check_frame_logits(to_cpu_tensor(logits), len(vocab))
    if length is not None:
        if not 0 <= length <= x.shape[0]:
            raise ValueError(f"length must lie in [0, {x.shape[0]}], found {length}")
        x = x[:length]
    decoder = GreedyTimings(
        vocab, frame_stride_s, blank=blank, word_delimiter=word_delimiter, skip_tokens=skip_tokens
    )
    decoder.feed(x)
    return decoder.result()


def _check_frame_logits(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"logits must be a float (T, V) tensor, found {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] != vocab_size:
        raise ValueError(f"logits have V={x.shape[-1]} classes but the vocabulary has {vocab_size}")
    return x


class GreedyTimings:
    """:func:`greedy_decode_with_timings` of logits that arrive in consecutive pieces of frames.

        decoder = GreedyTimings(vocab, frame_stride_s=0.02)
        for piece in iter_chunked_logits(...):   # (t_i, V) each
            decoder.feed(piece)
        text, words = decoder.result()            # == greedy_decode_with_timings(cat(pieces), ...)

    The result equals the whole-tensor call exactly (same runs, same words, same confidences):
    a run of one id may span pieces. Held between pieces: the words so far, the current word's
    characters, and the top probability of each frame since the current word (or the current
    run, outside a word) began: one word's frames, not the file's.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        frame_stride_s: float = 0.02,
        *,
        blank: int = 0,
        word_delimiter: str = "|",
        skip_tokens: Collection[str] = SPECIAL_TOKENS,
    ) -> None:
        self.vocab_size = len(vocab)
        self.pieces = _pieces(vocab, blank, word_delimiter, skip_tokens)
        self.frame_stride_s = frame_stride_s
        self.words: list[dict] = []
        self._chars: list[str] = []
        self._start = self._end = 0  # frames of the current word: [start, end)
        self._t = 0  # frames fed so far
        self._run: int | None = None  # the id of the run that the last frame belongs to ...
        self._run_start = 0  # ... and its first frame
        self._probs: list[float] = []  # top softmax probability of frames [_probs_t0, _t)
        self._probs_t0 = 0

    def feed(self, logits) -> None:
        """The next ``(t, V)`` logits (or log-probs) of the utterance."""
        x = _check_frame_logits(to_cpu_tensor(logits), self.vocab_size)
        max_prob, ids = x.float().softmax(dim=-1).max(dim=-1)  # (t,), (t,)
        self._probs += max_prob.tolist()
        t = self._t
        for k, run in groupby(ids.tolist()):
            if k != self._run:  # the previous run is complete
                self._close_run(t)
                self._run, self._run_start = k, t
            t += sum(1 for _ in run)
        self._t = t
        keep = self._start if self._chars else self._run_start  # frames a word may still need
        del self._probs[: keep - self._probs_t0]
        self._probs_t0 = keep

    def result(self) -> tuple[str, list[dict]]:
        """``(text, words)`` of all frames fed, as :func:`greedy_decode_with_timings` gives them;
        call it once, after the last piece."""
        self._close_run(self._t)
        self._run = None
        self._close_word()
        return " ".join(w["word"] for w in self.words), self.words

    def _close_run(self, t: int) -> None:
        """The run of ``self._run`` over frames ``[_run_start, t)`` joins the words."""
        if self._run is None:
            return
        start, piece = self._run_start, self.pieces[self._run]
        if piece == " ":
            self._close_word()
        elif piece:
            for j, part in enumerate(piece.split(" ")):  # a token holding a space splits words
                if j:
                    self._close_word()
                if part:
                    if not self._chars:
                        self._start = start
                    self._chars.append(part)
                    self._end = t

    def _close_word(self) -> None:
        if self._chars:
            a, b = self._start - self._probs_t0, self._end - self._probs_t0
            self.words.append(
                {
                    "word": "".join(self._chars),
                    "start_s": self._start * self.frame_stride_s,
                    "end_s": self._end * self.frame_stride_s,
                    "confidence": sum(self._probs[a:b]) / (b - a),
                }
            )
            self._chars.clear()


# ----------------------------------------------------------------------------- prefix beam search
def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def prefix_beam_search_nbest(
    log_probs,
    beam_width: int = 8,
    *,
    blank: int = 0,
    length: int | None = None,
    token_min_logp: float = -30.0,
) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search without a language model (pure python).

    Keeps the ``beam_width`` most probable labellings (prefixes) per frame, each with
    the probability of all its alignments ending in a blank and in a non-blank, so
    the score of a labelling sums over its paths (unlike best-path decoding).

    Args:
        log_probs: ``(T, V)``; renormalised with ``log_softmax`` so logits work too.
        token_min_logp: tokens below this log-prob at a frame are not tried there
            (their paths weigh less than e^-30 each).
    Returns:
        Up to ``beam_width`` ``(labels, log_prob)`` pairs, best first; ``labels`` are
        collapsed label ids (blank never among them), ``log_prob`` is the log of the
        total probability of the labelling's alignments that the beam kept.
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, found {beam_width}")
    x = to_cpu_tensor(log_probs)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"log_probs must be a float (T, V) tensor, found {x.dtype} {tuple(x.shape)}")
    if not 0 <= blank < x.shape[1]:
        raise ValueError(f"blank index {blank} is outside V={x.shape[1]}")
    if length is not None:
        x = x[:length]
    neg_inf = -math.inf
    # prefix -> [log P(prefix, ends in blank), log P(prefix, ends in non-blank)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, neg_inf]}
    for row in x:  # one frame's log-probs at a time: a long file's (T, V) is not copied whole
        frame = row.double().log_softmax(dim=-1).tolist()
        cand = [(k, p) for k, p in enumerate(frame) if k != blank and p >= token_min_logp]
        p_blank = frame[blank]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def slot(prefix):
            s = nxt.get(prefix)
            if s is None:
                s = nxt[prefix] = [neg_inf, neg_inf]
            return s

        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            s = slot(prefix)
            s[0] = _logaddexp(s[0], total + p_blank)  # a blank keeps the labelling
            last = prefix[-1] if prefix else None
            for k, p in cand:
                ext = slot(prefix + (k,))
                if k == last:
                    # a repeat extends the labelling only after a blank ...
                    ext[1] = _logaddexp(ext[1], pb + p)
                    # ... otherwise it merges into the last label
                    s[1] = _logaddexp(s[1], pnb + p)
                else:
                    ext[1] = _logaddexp(ext[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
        beams = dict(ranked[:beam_width])
    out = [(prefix, _logaddexp(pb, pnb)) for prefix, (pb, pnb) in beams.items()]
    out.sort(key=lambda kv: kv[1], reverse=True)
    return out


def prefix_beam_search(
    log_probs,
    vocab: Sequence[str],
    beam_width: int = 8,
    *,
    blank: int = 0,
    word_delimiter: str = "|",
    skip_tokens: Collection[str] = SPECIAL_TOKENS,
    length: int | None = None,
) -> str:
    """Text of the most probable labelling found by :func:`prefix_beam_search_nbest`."""
    x = to_cpu_tensor(log_probs)
    if x.dim() == 2 and x.shape[-1] != len(vocab):
        raise ValueError(f"log_probs have V={x.shape[-1]} classes but the vocabulary has {len(vocab)}")
    best, _ = prefix_beam_search_nbest(x, beam_width, blank=blank, length=length)[0]
    return labels_to_text(best, vocab, blank=blank, word_delimiter=word_delimiter, skip_tokens=skip_tokens)
