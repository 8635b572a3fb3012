"""Phoneme labels for the eSpeak demo corpus: ``SPLIT.phn`` + ``dict.phn.txt`` next to its manifests.

Each utterance's text is turned into IPA phonemes by the same eSpeak NG voice that spoke it
(``voice`` of ``utterances.jsonl``), through ``espeak_TextToPhonemes`` (IPA, a space between
phonemes); stress marks (ˈ ˌ) are dropped and word boundaries are not kept (eSpeak joins
function words to their neighbours). A ``.phn`` line is the phonemes separated by spaces,
as a ``.ltr`` line holds letters, so the probes read it the same way
(``w2v2-probe MODEL --data DIR --labels phn``; the error rate is then over phonemes, PER).

    python -m wav2vec2_lite.probes.phonemes data/demo --splits train_10min valid
"""

from __future__ import annotations

import argparse
import ctypes
import json
from collections.abc import Sequence
from pathlib import Path

from wav2vec2_lite.corpus.espeak import (
    VOICE_ALIASES,  # the corpus's voice names -> eSpeak's
)
from wav2vec2_lite.data.manifest import (
    count_symbols,
    read_manifest,
    write_dictionary,
    write_labels,
)
from wav2vec2_lite.probes.protocol import ProbeError

__all__ = ["EspeakPhonemizer", "write_phoneme_labels"]

_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_IPA_SPACE_SEPARATED = 0x02 | (ord(" ") << 8)  # phonememode: IPA, ' ' between phonemes
_STRESS = str.maketrans("", "", "ˈˌ")


class EspeakPhonemizer:
    """``phonemes(text, voice)`` -> IPA phonemes (list of str) with libespeak-ng (``espeakng-loader``)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader  # optional: espeakng-loader (synth extra)
        except ImportError as e:
            raise ProbeError("phoneme labels need eSpeak NG: pip install 'wav2vec2_lite[synth]'") from e
        c = ctypes
        lib = c.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [c.c_int, c.c_int, c.c_char_p, c.c_int]
        lib.espeak_SetVoiceByName.argtypes = [c.c_char_p]
        lib.espeak_TextToPhonemes.argtypes = [c.POINTER(c.c_char_p), c.c_int, c.c_int]
        lib.espeak_TextToPhonemes.restype = c.c_char_p
        if (
            lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(espeakng_loader.get_data_path()).encode(), 0
            )
            <= 0
        ):
            raise ProbeError("espeak_Initialize failed")
        self.lib = lib
        self._voice: str | None = None

    def phonemes(self, text: str, voice: str = "en-us") -> list[str]:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(VOICE_ALIASES.get(voice, voice).encode()) != 0:
                raise ProbeError(f"eSpeak NG has no voice {voice!r}")
            self._voice = voice
        ptr = ctypes.pointer(ctypes.c_char_p(text.encode()))
        pieces = []
        while ptr.contents.value is not None:  # one clause per call
            out = self.lib.espeak_TextToPhonemes(ptr, 0, _IPA_SPACE_SEPARATED)
            if out:
                pieces.append(out.decode())
        return " ".join(pieces).translate(_STRESS).split()


def write_phoneme_labels(
    corpus_dir: str | Path, splits: Sequence[str], *, phonemizer: EspeakPhonemizer | None = None
) -> dict[str, Path]:
    """``DIR/SPLIT.phn`` for each split (one line per manifest row) and ``DIR/dict.phn.txt`` (the
    phonemes of all these splits, by count). Texts and voices come from ``DIR/utterances.jsonl``."""
    corpus_dir = Path(corpus_dir)
    index = corpus_dir / "utterances.jsonl"
    if not index.is_file():
        raise ProbeError(
            f"{index} not found: phoneme labels need the eSpeak corpus's utterance list "
            f"(wav2vec2_lite.corpus.build_corpus writes it)"
        )
    by_path = {}
    for line in index.read_text(encoding="utf-8").splitlines():
        if line.strip():
            u = json.loads(line)
            by_path[u["path"]] = (u["text"], u["voice"])
    phonemizer = phonemizer or EspeakPhonemizer()
    written: dict[str, Path] = {}
    all_lines: list[str] = []
    for split in splits:
        tsv = corpus_dir / f"{split}.tsv"
        if not tsv.is_file():
            raise ProbeError(f"split {split!r}: manifest {tsv} not found")
        lines = []
        for i, rel in enumerate(read_manifest(tsv).paths):
            if rel not in by_path:
                raise ProbeError(f"{tsv}: row {i + 1} ({rel}) is not in {index}")
            text, voice = by_path[rel]
            lines.append(" ".join(phonemizer.phonemes(text, voice)))
        written[split] = corpus_dir / f"{split}.phn"
        write_labels(written[split], lines)
        all_lines += lines
    write_dictionary(corpus_dir / "dict.phn.txt", count_symbols(all_lines))
    written["dict"] = corpus_dir / "dict.phn.txt"
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m wav2vec2_lite.probes.phonemes", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("corpus_dir")
    p.add_argument("--splits", nargs="+", default=["train_10min", "train_1h", "valid", "test"])
    args = p.parse_args(argv)
    try:
        for name, path in write_phoneme_labels(args.corpus_dir, args.splits).items():
            print(f"{name}: {path}")
    except ProbeError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
