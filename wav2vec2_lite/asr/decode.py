"""CTC decoding: greedy (with word timings), prefix beam search, and an optional LM beam search.

Vocabulary conventions (transformers' ``Wav2Vec2CTCTokenizer`` layout, see
``data/tokenizer.py``): index 0 ``<pad>`` is the CTC blank, then ``<s>``, ``</s>``,
``<unk>``, then the characters, with ``|`` as the word delimiter. Decoding drops the
blank and the special tokens and turns ``|`` into a space; runs of spaces collapse
and the ends are stripped.

    texts = greedy_decode(out.logits, out.output_lengths, tok.vocab)          # (B, T, V) -> B strings
    text, words = greedy_decode_with_timings(out.logits[0], tok.vocab)        # words: start_s/end_s/confidence
    text = prefix_beam_search(out.logits[0].log_softmax(-1), tok.vocab, beam_width=8)
    lm = BeamSearchDecoder(tok.vocab, "4gram.arpa", lm_weight=0.5, word_score=1.0)  # wav2vec2_lite[lm]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

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
    "DecodingConfig",
    "arpa_unigrams",
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


# ----------------------------------------------------------------------------- beam search + n-gram LM
class BeamSearchDecoder:
    """CTC beam search with a word n-gram language model (KenLM: ``.arpa`` or binary) through
    flashlight-text, the decoder torchaudio wraps.

    Optional extra ``pip install 'wav2vec2_lite[lm]'`` (flashlight-text: binary wheels with
    KenLM, beside numpy 2). Beam search without an LM is :func:`prefix_beam_search`: exact
    prefix merging, which flashlight's lexicon-free search does not do without an LM state
    (it merges hypotheses by their last token). Words are spelled from the lexicon: ``lexicon`` (a file of ``WORD`` or ``WORD<TAB>spelling`` lines, or a
    list of words), by default the unigrams of the ``.arpa``; words with a symbol outside the
    vocabulary are left out of it (counted in ``skipped_words``). Hypotheses are then made of
    lexicon words only. The LM must use the vocabulary's casing (letter dictionaries are upper
    case).

    Args:
        vocab: the V tokens of the CTC head (blank at ``blank``, ``|`` the word delimiter).
        lm: path of the n-gram model.
        lm_weight: weight of the LM log-probability; word_score: bonus per word;
        unk_score: score of a word outside the lexicon (-inf: never);
        beam_size, beam_size_token, beam_threshold: flashlight's search widths.
    """

    def __init__(self, vocab: Sequence[str], lm: str | Path, *, lexicon=None, lm_weight: float = 0.5,
                 word_score: float = 0.0, unk_score: float = -math.inf, beam_size: int = 50,
                 beam_size_token: int | None = None, beam_threshold: float = 25.0, blank: int = 0,
                 word_delimiter: str = "|") -> None:
        dec = _require("flashlight.lib.text.decoder", "BeamSearchDecoder")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, found {beam_size}")
        if word_delimiter not in vocab:
            raise ValueError(f"the word delimiter {word_delimiter!r} is not in the vocabulary")
        if not 0 <= blank < len(vocab):
            raise ValueError(f"blank index {blank} is outside the vocabulary of size {len(vocab)}")
        self.vocab = list(vocab)
        self.blank, self.sil = blank, self.vocab.index(word_delimiter)
        self.lm_path = str(lm)
        self.skipped_words = 0
        token_beam = beam_size_token if beam_size_token is not None else len(vocab)
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        if not Path(lm).is_file():
            raise FileNotFoundError(f"{lm}: language model not found")
        spellings = self._lexicon(lm, lexicon, word_delimiter)
        self.words = sorted(spellings)
        word_dict = Dictionary(self.words + ["<unk>"])
        try:
            self._lm = KenLM(str(lm), word_dict)
        except Exception as e:  # noqa: BLE001 - KenLM reports a bad file as a generic error
            raise ValueError(f"{lm}: not a readable KenLM model (.arpa or binary): {e}") from None
        trie = dec.Trie(len(vocab), self.sil)
        start = self._lm.start(False)
        for idx, word in enumerate(self.words):
            _, score = self._lm.score(start, idx)
            trie.insert(spellings[word], idx, score)
        trie.smear(dec.SmearingMode.MAX)
        options = dec.LexiconDecoderOptions(beam_size, token_beam, beam_threshold, lm_weight, word_score, unk_score,
                                            0.0, True, dec.CriterionType.CTC)
        self._decoder = dec.LexiconDecoder(options, trie, self._lm, self.sil, blank, word_dict.get_index("<unk>"),
                                           [], False)

    def _lexicon(self, lm: str | Path, lexicon, delimiter: str) -> dict[str, list[int]]:
        """word -> token ids of its spelling (its letters, then the word delimiter)."""
        if lexicon is None:
            if Path(lm).suffix.lower() != ".arpa":
                raise ValueError(f"{lm}: a binary LM needs lexicon= (the words it may output)")
            words = arpa_unigrams(lm)
        elif isinstance(lexicon, (str, Path)):
            words = [ln.split("\t")[0].split()[0] for ln in Path(lexicon).read_text(encoding="utf-8").splitlines()
                     if ln.strip()]
        else:
            words = list(lexicon)
        index = {tok: i for i, tok in enumerate(self.vocab)}
        out = {}
        for w in words:
            if w.startswith("<") and w.endswith(">"):  # <s>, </s>, <unk>
                continue
            if all(c in index for c in w):
                out[w] = [index[c] for c in w] + [index[delimiter]]
            else:
                self.skipped_words += 1
        if not out:
            raise ValueError(f"{lexicon or lm}: no word of the lexicon is spelled with the vocabulary's symbols "
                             f"(check the casing)")
        return out

    def decode(self, logits, length: int | None = None) -> str:
        """Best transcript of one utterance; ``logits`` (T, V) logits or log-probs."""
        x = _as_tensor(logits)
        if x.dim() != 2 or x.shape[-1] != len(self.vocab):
            raise ValueError(f"expected (T, {len(self.vocab)}) logits, found {tuple(x.shape)}")
        if length is not None:
            x = x[:length]
        emissions = x.float().log_softmax(dim=-1).contiguous()
        if emissions.shape[0] == 0:
            return ""
        best = self._decoder.decode(emissions.data_ptr(), emissions.shape[0], emissions.shape[1])[0]
        return " ".join(self.words[i] for i in best.words if 0 <= i < len(self.words))

    def decode_batch(self, logits, output_lengths=None) -> list[str]:
        """``(B, T, V)`` logits (+ ``(B,)`` valid frames) -> B transcripts."""
        x = _as_tensor(logits)
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, V) logits, found {tuple(x.shape)}")
        lengths = ([x.shape[1]] * x.shape[0] if output_lengths is None
                   else _as_tensor(output_lengths).reshape(-1).tolist())
        return [self.decode(x[b], int(n)) for b, n in enumerate(lengths)]


def arpa_unigrams(path: str | Path) -> list[str]:
    """The words of the ``\\1-grams:`` section of an ARPA file."""
    words, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                inside = line == "\\1-grams:"
                continue
            if inside and line:
                parts = line.split()
                if len(parts) >= 2:
                    words.append(parts[1])
    if not words:
        raise ValueError(f"{path}: no \\1-grams: section (not an ARPA file?)")
    return words


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs flashlight-text, which is not installed: {LM_INSTALL_HINT}") from e


# ----------------------------------------------------------------------------- decoding settings
@dataclass(kw_only=True)
class DecodingConfig:
    """How logits become text, shared by transcription and evaluation.

    ``greedy``: best path, with word timings. ``beam``: :func:`prefix_beam_search` over
    ``beam_size`` prefixes; with ``lm`` (an n-gram ``.arpa`` or KenLM binary), the
    :class:`BeamSearchDecoder` over the words of ``lexicon`` (default: the ARPA's unigrams).
    """

    decoder: str = "greedy"
    beam_size: int = 16
    lm: str | None = None
    lexicon: str | None = None
    lm_weight: float = 0.5
    word_score: float = 0.0

    def validate(self) -> "DecodingConfig":
        if self.decoder not in ("greedy", "beam"):
            raise ValueError(f"decoder must be 'greedy' or 'beam', found {self.decoder!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam size must be >= 1, found {self.beam_size}")
        if (self.lm or self.lexicon) and self.decoder != "beam":
            raise ValueError("a language model or lexicon needs the beam decoder, not greedy decoding")
        if self.lexicon and not self.lm:
            raise ValueError("a lexicon is used with a language model only: give the LM too")
        return self

    def build(self, vocab: Sequence[str]) -> Callable[[torch.Tensor], str] | None:
        """``logits (T, V) -> text``, or None for greedy decoding (the caller keeps the timings)."""
        self.validate()
        if self.decoder == "greedy":
            return None
        if self.lm:
            lm = BeamSearchDecoder(vocab, self.lm, lexicon=self.lexicon, lm_weight=self.lm_weight,
                                   word_score=self.word_score, beam_size=self.beam_size)
            return lm.decode
        return lambda logits: prefix_beam_search(logits, vocab, beam_width=self.beam_size)

    def to_dict(self) -> dict:
        if self.decoder == "greedy":
            return {"decoder": "greedy"}
        out = {"decoder": "beam", "beam_size": self.beam_size}
        if self.lm:
            out.update(lm=self.lm, lexicon=self.lexicon or "the LM's unigrams", lm_weight=self.lm_weight,
                       word_score=self.word_score)
        return out
