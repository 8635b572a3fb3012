"""CTC decoding: greedy (with word timings), prefix beam search, and an optional LM beam search.

Vocabulary conventions (transformers' ``Wav2Vec2CTCTokenizer`` layout, see
``data/tokenizer.py``): index 0 ``<pad>`` is the CTC blank, then ``<s>``, ``</s>``,
``<unk>``, then the characters, with ``|`` as the word delimiter. Decoding drops the
blank and the special tokens and turns ``|`` into a space; runs of spaces collapse
and the ends are stripped.

    texts = greedy_decode(out.logits, out.output_lengths, tok.vocab)          # (B, T, V) -> B strings
    text, words = greedy_decode_with_timings(out.logits[0], tok.vocab)        # words: start_s/end_s/confidence
    text = prefix_beam_search(out.logits[0].log_softmax(-1), tok.vocab, beam_width=8)
    lm = BeamSearchDecoder(tok.vocab, "4gram.arpa", alpha=0.5, beta=1.0)      # needs wav2vec2_lite[lm]
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from itertools import groupby

import numpy as np
import torch

from wav2vec2_lite.data.tokenizer import SPECIAL_TOKENS

__all__ = [
    "SPECIAL_TOKENS",
    "greedy_decode",
    "greedy_decode_with_timings",
    "prefix_beam_search",
    "prefix_beam_search_nbest",
    "labels_to_text",
    "BeamSearchDecoder",
]

LM_INSTALL_HINT = "pip install 'wav2vec2_lite[lm]'"


# ----------------------------------------------------------------------------- vocab helpers
def _pieces(vocab: Sequence[str], blank: int, word_delimiter: str,
            skip_tokens: Collection[str]) -> list[str]:
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


def labels_to_text(labels: Sequence[int], vocab: Sequence[str], *, blank: int = 0,
                   word_delimiter: str = "|", skip_tokens: Collection[str] = SPECIAL_TOKENS) -> str:
    """Text of an already-collapsed CTC labelling (no repeat merging here)."""
    pieces = _pieces(vocab, blank, word_delimiter, skip_tokens)
    return _normalize_spaces("".join(pieces[i] for i in labels))


def _as_tensor(x) -> torch.Tensor:
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
    x = _as_tensor(logits_or_ids)
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
                f"frame ids must lie in [0, {len(vocab)}), found range "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )
    B, T = ids.shape
    if output_lengths is None:
        lengths = [T] * B
    else:
        lengths = _as_tensor(output_lengths).reshape(-1).tolist()
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
    x = _as_tensor(logits)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"logits must be a float (T, V) tensor, found {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] != len(vocab):
        raise ValueError(f"logits have V={x.shape[-1]} classes but the vocabulary has {len(vocab)}")
    if length is not None:
        if not 0 <= length <= x.shape[0]:
            raise ValueError(f"length must lie in [0, {x.shape[0]}], found {length}")
        x = x[:length]
    max_prob, ids = x.float().softmax(dim=-1).max(dim=-1)  # (T,), (T,)
    max_prob = max_prob.tolist()
    pieces = _pieces(vocab, blank, word_delimiter, skip_tokens)

    words: list[dict] = []
    chars: list[str] = []
    start = end = 0  # frames of the current word: [start, end)

    def close_word() -> None:
        if chars:
            conf = sum(max_prob[start:end]) / (end - start)
            words.append({"word": "".join(chars), "start_s": start * frame_stride_s,
                          "end_s": end * frame_stride_s, "confidence": conf})
            chars.clear()

    t = 0
    for k, run in groupby(ids.tolist()):
        n = sum(1 for _ in run)
        piece = pieces[k]
        if piece == " ":
            close_word()
        elif piece:
            for j, part in enumerate(piece.split(" ")):  # a token holding a space splits words
                if j:
                    close_word()
                if part:
                    if not chars:
                        start = t
                    chars.append(part)
                    end = t + n
        t += n
    close_word()
    return " ".join(w["word"] for w in words), words


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
    x = _as_tensor(log_probs)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"log_probs must be a float (T, V) tensor, found {x.dtype} {tuple(x.shape)}")
    if not 0 <= blank < x.shape[1]:
        raise ValueError(f"blank index {blank} is outside V={x.shape[1]}")
    if length is not None:
        x = x[:length]
    lp = x.double().log_softmax(dim=-1)
    neg_inf = -math.inf
    # prefix -> [log P(prefix, ends in blank), log P(prefix, ends in non-blank)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, neg_inf]}
    for frame in lp.tolist():
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
    x = _as_tensor(log_probs)
    if x.dim() == 2 and x.shape[-1] != len(vocab):
        raise ValueError(f"log_probs have V={x.shape[-1]} classes but the vocabulary has {len(vocab)}")
    best, _ = prefix_beam_search_nbest(x, beam_width, blank=blank, length=length)[0]
    return labels_to_text(best, vocab, blank=blank, word_delimiter=word_delimiter,
                          skip_tokens=skip_tokens)


# ----------------------------------------------------------------------------- pyctcdecode (optional)
def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the optional package '{module}', which is not installed. "
            f"Install the LM extra: {LM_INSTALL_HINT}  (pyctcdecode pins numpy<2; "
            f"consider a separate environment)"
        ) from e


class BeamSearchDecoder:
    """Beam search with an optional KenLM n-gram model, through pyctcdecode.

    Optional extra: ``pip install 'wav2vec2_lite[lm]'`` (pyctcdecode + kenlm). The
    special tokens other than the blank are removed from the search (their columns
    are dropped), ``|`` becomes pyctcdecode's space. The n-gram model must use the
    same casing as the vocabulary (fairseq letter vocabularies are upper case).

    Args:
        vocab: the V tokens of the CTC head.
        kenlm_model_path: ``.arpa`` or KenLM ``.bin``; ``None``: beam search without LM.
        unigrams: known words (read from an ``.arpa`` automatically).
        alpha: LM weight; beta: word insertion bonus.
        beam_width: beams kept per frame.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        kenlm_model_path: str | None = None,
        *,
        unigrams: Sequence[str] | None = None,
        alpha: float = 0.5,
        beta: float = 1.0,
        beam_width: int = 100,
        blank: int = 0,
        word_delimiter: str = "|",
        skip_tokens: Collection[str] = SPECIAL_TOKENS,
    ) -> None:
        pyctcdecode = _require("pyctcdecode", "BeamSearchDecoder")
        if kenlm_model_path is not None:
            _require("kenlm", "BeamSearchDecoder with a KenLM model")
        pieces = _pieces(vocab, blank, word_delimiter, skip_tokens)
        # keep the blank and every column that produces text
        self.columns = [i for i, p in enumerate(pieces) if i == blank or p]
        self.labels = [pieces[i] for i in self.columns]  # blank -> "" (pyctcdecode's blank)
        self.vocab_size = len(vocab)
        self.beam_width = beam_width
        self._decoder = pyctcdecode.build_ctcdecoder(
            self.labels,
            kenlm_model_path=None if kenlm_model_path is None else str(kenlm_model_path),
            unigrams=None if unigrams is None else list(unigrams),
            alpha=alpha,
            beta=beta,
        )

    def _log_probs(self, logits) -> np.ndarray:
        x = _as_tensor(logits)
        if x.dim() != 2 or x.shape[-1] != self.vocab_size:
            raise ValueError(f"expected (T, {self.vocab_size}) logits, found {tuple(x.shape)}")
        lp = x.float().log_softmax(dim=-1)[:, self.columns]
        return lp.numpy().astype(np.float32)

    def decode(self, logits, length: int | None = None) -> str:
        """Best transcript of one utterance; ``logits`` (T, V) logits or log-probs."""
        x = _as_tensor(logits)
        if length is not None:
            x = x[:length]
        text = self._decoder.decode(self._log_probs(x), beam_width=self.beam_width)
        return _normalize_spaces(text)

    def decode_batch(self, logits, output_lengths=None) -> list[str]:
        """``(B, T, V)`` logits (+ ``(B,)`` valid frames) -> B transcripts."""
        x = _as_tensor(logits)
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, V) logits, found {tuple(x.shape)}")
        lengths = ([x.shape[1]] * x.shape[0] if output_lengths is None
                   else _as_tensor(output_lengths).reshape(-1).tolist())
        return [self.decode(x[b], int(n)) for b, n in enumerate(lengths)]
