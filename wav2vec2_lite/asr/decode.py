"""CTC decoding: greedy (with word timings), prefix beam search, and an optional LM beam search.

The public face of decoding: the decoders live in ``ctc_decode`` and ``lm_beam_search``;
``DecodingConfig`` chooses between them.

Vocabulary conventions (transformers' ``Wav2Vec2CTCTokenizer`` layout, see
``data/tokenizer.py``): index 0 ``<pad>`` is the CTC blank, then ``<s>``, ``</s>``,
``<unk>``, then the characters, with ``|`` as the word delimiter. Decoding drops the
blank and the special tokens and turns ``|`` into a space; runs of spaces collapse
and the ends are stripped.

    texts = greedy_decode(out.logits, out.output_lengths, tok.vocab)    # (B, T, V) -> B strings
    text, words = greedy_decode_with_timings(out.logits[0], tok.vocab)  # words: start_s/end_s/confidence
    g = GreedyTimings(tok.vocab); [g.feed(p) for p in pieces]; text, words = g.result()  # the same, streamed
    text = prefix_beam_search(out.logits[0].log_softmax(-1), tok.vocab, beam_width=8)
    lm = BeamSearchDecoder(tok.vocab, "4gram.arpa", lm_weight=0.5, word_score=1.0)  # wav2vec2_lite[lm]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from wav2vec2_lite.asr.ctc_decode import (
    GreedyTimings,
    greedy_decode,
    greedy_decode_with_timings,
    labels_to_text,
    prefix_beam_search,
    prefix_beam_search_nbest,
)
from wav2vec2_lite.asr.lm_beam_search import BeamSearchDecoder, arpa_unigrams
from wav2vec2_lite.data.tokenizer import SPECIAL_TOKENS

__all__ = [
    "SPECIAL_TOKENS",
    "greedy_decode",
    "greedy_decode_with_timings",
    "GreedyTimings",
    "prefix_beam_search",
    "prefix_beam_search_nbest",
    "labels_to_text",
    "BeamSearchDecoder",
    "DecodingConfig",
    "arpa_unigrams",
]


# ----------------------------------------------------------------------------- decoding settings
@dataclass(kw_only=True)
class DecodingConfig:
    """How logits become text, shared by transcription and evaluation.

    ``greedy``: best path, with word timings. ``beam``: :func:`prefix_beam_search` over
    ``beam_size`` prefixes; with ``lm`` (an n-gram ``.arpa`` or KenLM binary), the
    :class:`BeamSearchDecoder` over the words of ``lexicon`` (default: the ARPA's unigrams).

    Memory on a long file: greedy decoding consumes the logits window by window
    (:class:`GreedyTimings`), so it holds one window's. The beam decoders take the whole
    utterance's logits ``(T, V)`` at once, 4 * V bytes per 20 ms frame (V = 32: 23 MB an hour);
    the LM decoder (flashlight) also keeps its beam's hypotheses for every frame, to trace the
    best one back at the end, so its memory grows with the file too.
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
            lm = BeamSearchDecoder(
                vocab,
                self.lm,
                lexicon=self.lexicon,
                lm_weight=self.lm_weight,
                word_score=self.word_score,
                beam_size=self.beam_size,
            )
            return lm.decode
        return lambda logits: prefix_beam_search(logits, vocab, beam_width=self.beam_size)

    def to_dict(self) -> dict:
        if self.decoder == "greedy":
            return {"decoder": "greedy"}
        out = {"decoder": "beam", "beam_size": self.beam_size}
        if self.lm:
            out.update(
                lm=self.lm,
                lexicon=self.lexicon or "the LM's unigrams",
                lm_weight=self.lm_weight,
                word_score=self.word_score,
            )
        return out
