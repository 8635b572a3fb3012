"""CTC beam search with a word n-gram LM (KenLM through flashlight-text), the optional ``[lm]`` extra.

Kept apart from the LM-free decoders so that they never touch the optional dependency.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from pathlib import Path

from wav2vec2_lite.asr.ctc_decode import to_cpu_tensor

__all__ = ["BeamSearchDecoder", "arpa_unigrams", "LM_INSTALL_HINT"]

LM_INSTALL_HINT = "pip install 'wav2vec2_lite[lm]'"


class BeamSearchDecoder:
    """CTC beam search with a word n-gram language model (KenLM: ``.arpa`` or binary) through
    flashlight-text, the decoder torchaudio wraps.

    Optional extra ``pip install 'wav2vec2_lite[lm]'`` (flashlight-text: binary wheels with
    KenLM, beside numpy 2). Beam search without an LM is :func:`prefix_beam_search`: exact
    prefix merging, which flashlight's lexicon-free search does not do without an LM state
    (it merges hypotheses by their last token). Words are spelled from the lexicon: ``lexicon``
    (a file of ``WORD`` or ``WORD<TAB>spelling`` lines, or a list of words), by default the
    unigrams of the ``.arpa``; words with a symbol outside the vocabulary are left out of it
    (counted in ``skipped_words``). Hypotheses are then made of lexicon words only. The LM must
    use the vocabulary's casing (letter dictionaries are upper case).

    Args:
        vocab: the V tokens of the CTC head (blank at ``blank``, ``|`` the word delimiter).
        lm: path of the n-gram model.
        lm_weight: weight of the LM log-probability; word_score: bonus per word;
        unk_score: score of a word outside the lexicon (-inf: never);
        beam_size, beam_size_token, beam_threshold: flashlight's search widths.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        lm: str | Path,
        *,
        lexicon=None,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        unk_score: float = -math.inf,
        beam_size: int = 50,
        beam_size_token: int | None = None,
        beam_threshold: float = 25.0,
        blank: int = 0,
        word_delimiter: str = "|",
    ) -> None:
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
        # optional: flashlight-text (lm extra), present once _require above has passed
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
        options = dec.LexiconDecoderOptions(
            beam_size,
            token_beam,
            beam_threshold,
            lm_weight,
            word_score,
            unk_score,
            0.0,
            True,
            dec.CriterionType.CTC,
        )
        self._decoder = dec.LexiconDecoder(
            options, trie, self._lm, self.sil, blank, word_dict.get_index("<unk>"), [], False
        )

    def _lexicon(self, lm: str | Path, lexicon, delimiter: str) -> dict[str, list[int]]:
        """word -> token ids of its spelling (its letters, then the word delimiter)."""
        if lexicon is None:
            if Path(lm).suffix.lower() != ".arpa":
                raise ValueError(f"{lm}: a binary LM needs lexicon= (the words it may output)")
            words = arpa_unigrams(lm)
        elif isinstance(lexicon, (str, Path)):
            words = [
                ln.split("\t")[0].split()[0]
                for ln in Path(lexicon).read_text(encoding="utf-8").splitlines()
                if ln.strip()
            ]
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
            raise ValueError(
                f"{lexicon or lm}: no word of the lexicon is spelled with the vocabulary's symbols "
                f"(check the casing)"
            )
        return out

    def decode(self, logits, length: int | None = None) -> str:
        """Best transcript of one utterance; ``logits`` (T, V) logits or log-probs."""
        x = to_cpu_tensor(logits)
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
        x = to_cpu_tensor(logits)
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, V) logits, found {tuple(x.shape)}")
        lengths = (
            [x.shape[1]] * x.shape[0]
            if output_lengths is None
            else to_cpu_tensor(output_lengths).reshape(-1).tolist()
        )
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
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs flashlight-text, which is not installed: {LM_INSTALL_HINT}") from e
