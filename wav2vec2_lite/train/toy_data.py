"""A tiny synthetic "phone" corpus for smoke-testing training on a CPU.

Speech-like but fully controlled: each utterance is a sequence of words, each word a
sequence of 2-4 "phones" drawn from a small inventory. Voiced phones are harmonic
series on a per-speaker pitch shaped by two formant resonances; unvoiced ones are
band-limited noise. Phones last 80-200 ms (``phone_s``) with smooth onsets, words are separated by
short pauses. Phone ``i`` is written as letter ``PHONE_LETTERS[i]``, so the same corpus
serves contrastive pretraining (the structure is learnable) and CTC fine-tuning
(transcripts are exact). Everything is drawn from ``numpy.random.default_rng(seed)``.

    python -m wav2vec2_lite.train.toy_data OUT_DIR --train 200 --valid 20
    # OUT_DIR/{train,valid}.tsv, .ltr, .wrd, dict.ltr.txt, wav/*.wav
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from wav2vec2_lite.data.manifest import (
    count_symbols,
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)

__all__ = ["PHONE_LETTERS", "synth_utterance", "make_toy_corpus"]

SR = 16000
PHONE_LETTERS = "AEIOUSFH"
# voiced: (f1, f2) formants in Hz; unvoiced: (low, high) noise band in Hz
_PHONES = [
    ("v", 750, 1200),
    ("v", 500, 1900),
    ("v", 300, 2300),
    ("v", 450, 900),
    ("v", 320, 800),
    ("n", 4000, 7000),
    ("n", 1500, 3500),
    ("n", 300, 1500),
]


def _fade(n: int, ms: float = 10.0) -> np.ndarray:
    k = min(int(SR * ms / 1000), n // 2)
    env = np.ones(n)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        env[:k], env[-k:] = ramp, ramp[::-1]
    return env


def _phone(kind: str, a: float, b: float, f0: float, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "v":
        wave = np.zeros(n)
        for h in range(1, int(4000 // f0) + 1):
            f = h * f0
            gain = np.exp(-(((f - a) / 120.0) ** 2)) + 0.7 * np.exp(-(((f - b) / 160.0) ** 2)) + 0.02
            wave += gain * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        wave *= 0.5 / max(np.abs(wave).max(), 1e-6)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        spec[(freqs < a) | (freqs > b)] = 0
        wave = np.fft.irfft(spec, n)
        wave *= 0.25 / max(np.abs(wave).max(), 1e-6)
    return wave * _fade(n)


def synth_utterance(
    rng: np.random.Generator,
    *,
    min_words: int = 2,
    max_words: int = 4,
    phones: int = len(_PHONES),
    phone_s: tuple[float, float] = (0.08, 0.2),
) -> tuple[np.ndarray, str]:
    """One utterance: (float32 wave at 16 kHz, transcript of phone letters, words by spaces)."""
    f0 = rng.uniform(100, 220)
    pieces, words = [np.zeros(int(SR * rng.uniform(0.03, 0.08)))], []
    for _ in range(int(rng.integers(min_words, max_words + 1))):
        ids = rng.integers(0, phones, size=int(rng.integers(2, 5)))
        for i in ids:
            kind, a, b = _PHONES[int(i)]
            pieces.append(
                _phone(kind, a, b, f0 * rng.uniform(0.95, 1.05), int(SR * rng.uniform(*phone_s)), rng)
            )
        pieces.append(np.zeros(int(SR * rng.uniform(0.04, 0.09))))
        words.append("".join(PHONE_LETTERS[int(i)] for i in ids))
    wave = np.concatenate(pieces)
    wave = wave + 0.003 * rng.standard_normal(len(wave))
    return wave.astype(np.float32), " ".join(words)


def make_toy_corpus(
    out_dir: str | Path,
    *,
    train: int = 200,
    valid: int = 20,
    seed: int = 0,
    min_words: int = 2,
    max_words: int = 4,
    phone_s: tuple[float, float] = (0.08, 0.2),
) -> Path:
    """Write wavs, ``{train,valid}.tsv`` manifests, ``.ltr``/``.wrd`` labels and ``dict.ltr.txt``."""
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    all_ltr: list[str] = []
    for subset, count in (("train", train), ("valid", valid)):
        rows, wrd, ltr = [], [], []
        for i in range(count):
            wave, text = synth_utterance(rng, min_words=min_words, max_words=max_words, phone_s=phone_s)
            rel = f"wav/{subset}_{i:05d}.wav"
            sf.write(out / rel, wave, SR, subtype="PCM_16")
            rows.append((rel, len(wave)))
            wrd.append(text)
            ltr.append(text_to_ltr(text))
        write_manifest(out / f"{subset}.tsv", out, rows)
        write_labels(out / f"{subset}.wrd", wrd)
        write_labels(out / f"{subset}.ltr", ltr)
        all_ltr += ltr
    write_dictionary(out / "dict.ltr.txt", count_symbols(all_ltr))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--valid", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(make_toy_corpus(a.out_dir, train=a.train, valid=a.valid, seed=a.seed))


if __name__ == "__main__":
    main()
