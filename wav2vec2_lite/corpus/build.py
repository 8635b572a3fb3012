"""Build the demo corpus: eSpeak NG speech in Libri-light-style splits.

    info = build_corpus("data/demo", unlabeled_minutes=30, seed=0, workers=2)

writes into ``out_dir``::

    wav/{unlabeled,train,valid,test}/<utt_id>.wav      16 kHz mono PCM-16
    unlabeled.tsv                                      for pretraining
    unlabeled_text.{tsv,ltr,wrd}                       the same, with transcripts (a supervised topline)
    train_1min.{tsv,ltr,wrd}  train_10min.{tsv,ltr,wrd}  train_1h.{tsv,ltr,wrd}
                                                       labeled; nested prefixes: 1min of 10min of 1h
    valid.{tsv,ltr,wrd}  test.{tsv,ltr,wrd}
    dict.ltr.txt                                       letters, counts from train_1h
    utterances.jsonl                                   one line per utterance: speaker, voice settings, text
    corpus.json                                        settings, minutes/utterances/speakers per split

Speakers are eSpeak voice+variant pairs (8 English voices x 12 variants = 96), each with
its own speaking rate, pitch, pitch range and word gap; every utterance jitters rate and
pitch a little, gets 0.05-0.3 s of leading/trailing silence, a random peak level and, with
probability ``noise_prob``, white noise at 25-40 dB SNR. Test and valid speakers are held
out: they appear in no other split, and every sentence occurs at most once in the corpus.

``diversity`` (``augment.Diversity`` or a preset name, e.g. ``"diverse"``) adds speed
perturbation, EQ tilt, synthetic room reverberation, coloured noise and extra eSpeak
variants to chosen pools (by default none; the ``"diverse"`` preset: unlabeled only), drawn
per utterance and recorded in ``utterances.jsonl``; valid and test stay as they are unless
a ``Diversity`` names them.

Determinism: every choice comes from ``random.Random`` / ``numpy`` generators seeded by
``seed`` and the split name, and each utterance is synthesized in isolation (see
``espeak.py``), so a seed gives the same files whatever ``workers`` is. Splits are filled
in a fixed order (test, valid, train, unlabeled) until their minutes are reached.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from wav2vec2_lite.corpus.augment import (
    DIVERSITY_PRESETS,
    Diversity,
    coloured_noise,
    convolve,
    eq_tilt,
    resolve_diversity,
    room_impulse_response,
    speed_perturb,
)
from wav2vec2_lite.corpus.espeak import (
    SAMPLE_RATE,
    VARIANTS,
    Synthesizer,
)
from wav2vec2_lite.corpus.plan import (
    DEFAULT_MINUTES,
    EXTRA_VARIANTS,
    FULL_MINUTES,
    LABELED_TRAIN,
    POOLS,
    SPLITS,
    Speaker,
    UtterancePlanner,
    UtteranceSpec,
    corpus_minutes,
    make_extra_speakers,
    make_speakers,
    plan_capacity,
    speaker_pools,
)
from wav2vec2_lite.corpus.sentences import (
    GENERATOR_VERSION,
)
from wav2vec2_lite.data.manifest import (
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)

__all__ = [
    "CORPUS_VERSION",
    "DEFAULT_MINUTES",
    "DIVERSITY_PRESETS",
    "EXTRA_VARIANTS",
    "FULL_MINUTES",
    "SPLITS",
    "Diversity",
    "Speaker",
    "UtteranceSpec",
    "build_corpus",
    "corpus_minutes",
    "make_extra_speakers",
    "make_speakers",
    "plan_capacity",
    "render_utterance",
]

# 2: train_1min split, diversity options and utterance fields (the default audio is unchanged)
CORPUS_VERSION = 2  # bump when a change alters the audio or the splits a seed produces
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ'") + ("|",)  # every symbol normalize_transcript can emit
ENGINE_VOLUME = 70  # keeps the engine's own int16 output clear of clipping
AVG_UTTERANCE_S = 3.0  # first guess of an utterance's length, for batch sizing only
MAX_BATCH = 64


def render_utterance(spec: UtteranceSpec, synth: Synthesizer) -> np.ndarray:
    """The utterance's 16 kHz float32 wave: speech, [speed, tilt], level, silence padding,
    [reverberation], optional noise (see ``augment.py``; bracketed steps only when the spec asks).

    The noise's SNR is relative to the mean power of the speech segment (``lead_s`` on, as
    long as the speech) before noise; a result louder than full scale is scaled down, not clipped.
    """
    speech = synth.synthesize(
        spec.text, voice=spec.voice, variant=spec.variant, rate=spec.rate, pitch=spec.pitch,
        pitch_range=spec.pitch_range, word_gap=spec.word_gap, volume=ENGINE_VOLUME,
        seed=spec.seed & 0x7FFFFFFF,
    )  # fmt: skip
    sr = synth.sample_rate
    speech = speed_perturb(speech, spec.speed, sr)
    speech = eq_tilt(speech, spec.tilt_db, sr)
    speech = speech * np.float32(spec.peak / max(float(np.abs(speech).max()), 1e-6))
    lead = round(spec.lead_s * sr)
    wave = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(round(spec.tail_s * sr), np.float32)])
    if spec.rt60_s is not None:
        ir = room_impulse_response(spec.rt60_s, spec.drr_db if spec.drr_db is not None else 0.0,
                                   np.random.default_rng([spec.seed, 1]), sr)  # fmt: skip
        wave = convolve(wave, ir)
        wave = wave * np.float32(spec.peak / max(float(np.abs(wave).max()), 1e-6))
    if spec.snr_db is not None:
        power = float(np.mean(wave[lead : lead + speech.shape[0]].astype(np.float64) ** 2))
        noise_std = math.sqrt(power / 10.0 ** (spec.snr_db / 10.0))
        if spec.noise_color == "white":  # the base corpus' noise, as in CORPUS_VERSION 1
            noise = np.random.default_rng(spec.seed).standard_normal(wave.shape[0])
        else:
            noise = coloured_noise(wave.shape[0], spec.noise_color, np.random.default_rng([spec.seed, 2]), sr)
        wave = wave + (noise * noise_std).astype(np.float32)
    top = float(np.abs(wave).max())
    if top > 1.0:
        wave = wave * np.float32(0.999 / top)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------ rendering workers

_WORKER: dict = {}


def _init_worker(out_dir: str) -> None:
    _WORKER["synth"] = Synthesizer(SAMPLE_RATE)
    _WORKER["out_dir"] = Path(out_dir)


def _worker_info() -> dict:
    synth = _WORKER["synth"]
    return {"backend": synth.backend, "version": synth.version, "native_rate": synth.native_rate,
            "isolated": synth.isolate}  # fmt: skip


def _render_to_file(spec: UtteranceSpec) -> int:
    """Render ``spec`` to ``out_dir/spec.rel_path`` (PCM-16); return its number of samples."""
    wave = render_utterance(spec, _WORKER["synth"])
    path = _WORKER["out_dir"] / spec.rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, SAMPLE_RATE, subtype="PCM_16")
    return int(wave.shape[0])


class _Renderer:
    """Renders batches of specs in this process (workers=1) or a spawn-context pool."""

    def __init__(self, out_dir: Path, workers: int) -> None:
        self.pool = None
        if workers > 1:
            # fork on Linux: workers inherit the imported modules (spawn would re-import torch,
            # seconds per worker); they run only eSpeak, numpy, soxr and soundfile.
            ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=(str(out_dir),))
        else:
            _init_worker(str(out_dir))
        self.synth_info = self.pool.apply(_worker_info) if self.pool is not None else _worker_info()

    def render(self, specs: list[UtteranceSpec]) -> list[int]:
        if self.pool is None:
            return [_render_to_file(s) for s in specs]
        return self.pool.map(_render_to_file, specs, chunksize=1)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def _fill(
    planner: UtterancePlanner, target_s: float, renderer: _Renderer, out_dir: Path, bar
) -> list[tuple[UtteranceSpec, int]]:
    """Render the planner's utterances in order until ``target_s`` seconds are reached."""
    done: list[tuple[UtteranceSpec, int]] = []
    total = 0.0
    while total < target_s:
        avg = total / len(done) if done else AVG_UTTERANCE_S
        n = max(1, min(MAX_BATCH, math.ceil((target_s - total) / avg)))
        specs = [next(planner) for _ in range(n)]
        for spec, num_samples in zip(specs, renderer.render(specs)):
            if total >= target_s:  # batch overshot: drop the extra file (its sentence stays used)
                (out_dir / spec.rel_path).unlink(missing_ok=True)
                continue
            seconds = num_samples / SAMPLE_RATE
            if bar is not None:
                bar.update(min(seconds, target_s - total) / 60.0)  # the bar's total is the sum of targets
            done.append((spec, num_samples))
            total += seconds
    return done


# ------------------------------------------------------------------------------- the build

_OUTPUT_FILES = ["unlabeled.tsv", "dict.ltr.txt", "utterances.jsonl"] + [
    f"{s}.{ext}" for s in (*LABELED_TRAIN, "valid", "test", "unlabeled_text") for ext in ("tsv", "ltr", "wrd")
]


def _settings(minutes: dict[str, float], seed: int, domain_fraction: float, noise_prob: float,
              diversity: Diversity) -> dict:  # fmt: skip
    return {
        "seed": int(seed),
        "minutes": {k: float(minutes[k]) for k in SPLITS},
        "sample_rate": SAMPLE_RATE,
        "domain_fraction": float(domain_fraction),
        "noise_prob": float(noise_prob),
        "diversity": diversity.to_dict() if diversity.active else None,
        "generator_version": GENERATOR_VERSION,
        "corpus_version": CORPUS_VERSION,
    }


def _is_complete(out_dir: Path, settings: dict) -> bool:
    meta = out_dir / "corpus.json"
    if not meta.is_file():
        return False
    try:
        old = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return old.get("settings") == settings and all((out_dir / f).is_file() for f in _OUTPUT_FILES)


def _prefix(rows: list[tuple[UtteranceSpec, int]], target_s: float) -> list[tuple[UtteranceSpec, int]]:
    """The shortest prefix of ``rows`` with at least ``target_s`` seconds (all if shorter)."""
    total = 0.0
    for i, (_, n) in enumerate(rows):
        total += n / SAMPLE_RATE
        if total >= target_s:
            return rows[: i + 1]
    return rows


def _diversity_counts(rows: list[tuple[UtteranceSpec, int]]) -> dict:
    """How many utterances of a pool got each effect (details per utterance: utterances.jsonl)."""
    speeds: dict[str, int] = {}
    noise: dict[str, int] = {}
    for spec, _ in rows:
        speeds[f"{spec.speed:g}"] = speeds.get(f"{spec.speed:g}", 0) + 1
        if spec.snr_db is not None:
            noise[spec.noise_color] = noise.get(spec.noise_color, 0) + 1
    return {
        "utterances": len(rows),
        "speed": dict(sorted(speeds.items())),
        "tilt": sum(spec.tilt_db != 0.0 for spec, _ in rows),
        "reverb": sum(spec.rt60_s is not None for spec, _ in rows),
        "noise": dict(sorted(noise.items())),
        "extra_variant_speakers": sum(spec.variant not in VARIANTS for spec, _ in rows),
    }


def build_corpus(
    out_dir: str | os.PathLike,
    *,
    unlabeled_minutes: float = DEFAULT_MINUTES["unlabeled"],
    train_10min_minutes: float = DEFAULT_MINUTES["train_10min"],
    train_1min_minutes: float | None = None,
    train_1h_minutes: float = DEFAULT_MINUTES["train_1h"],
    valid_minutes: float = DEFAULT_MINUTES["valid"],
    test_minutes: float = DEFAULT_MINUTES["test"],
    seed: int = 0,
    workers: int = 2,
    domain_fraction: float = 0.5,
    noise_prob: float = 0.5,
    diversity: str | Diversity | dict | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Synthesize the corpus into ``out_dir`` (see the module docstring); return corpus.json's content.

    ``train_1min_minutes`` defaults to ``min(1, train_10min_minutes)``. ``diversity``: None
    (plain audio, as before), a preset name of ``DIVERSITY_PRESETS`` (``"diverse"``: the
    unlabeled pool only; ``"diverse_train"``: unlabeled and the labeled training splits),
    a ``Diversity``, or a dict of its fields (``{"preset": "diverse", "reverb_prob": 1.0}``).

    Skips the work (and says so) when ``out_dir/corpus.json`` records the same settings and
    every output file exists, unless ``force``. ``workers`` changes speed, never the output.
    """
    if train_1min_minutes is None:
        train_1min_minutes = min(DEFAULT_MINUTES["train_1min"], train_10min_minutes)
    minutes = {
        "unlabeled": unlabeled_minutes, "train_1min": train_1min_minutes, "train_10min": train_10min_minutes,
        "train_1h": train_1h_minutes, "valid": valid_minutes, "test": test_minutes,
    }  # fmt: skip
    for name, value in minutes.items():
        if not value > 0:
            raise ValueError(f"{name} minutes must be > 0, found {value}")
    for small, big in itertools.pairwise(LABELED_TRAIN):
        if minutes[big] < minutes[small]:
            raise ValueError(
                f"{big} ({minutes[big]} min) must be at least {small} ({minutes[small]} min): it contains it"
            )
    diversity = resolve_diversity(diversity)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, found {workers}")
    out_dir = Path(out_dir)
    settings = _settings(minutes, seed, domain_fraction, noise_prob, diversity)
    if not force and _is_complete(out_dir, settings):
        print(f"corpus in {out_dir} is up to date (same settings in corpus.json); not rebuilding")
        return json.loads((out_dir / "corpus.json").read_text())

    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "corpus.json").unlink(missing_ok=True)  # an interrupted build must not look complete
    shutil.rmtree(out_dir / "wav", ignore_errors=True)
    for name in _OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)

    by_pool, speakers = speaker_pools(seed, diversity)
    targets_s = {
        "test": minutes["test"] * 60, "valid": minutes["valid"] * 60,
        "train": max(minutes[s] for s in LABELED_TRAIN) * 60, "unlabeled": minutes["unlabeled"] * 60,
    }  # fmt: skip
    bar = None
    if progress:
        bar = tqdm(total=sum(targets_s.values()) / 60, unit="min", desc="synthesizing", bar_format=
                   "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} audio min "
                   "[{elapsed}<{remaining}]")  # fmt: skip
    used: set[str] = set()
    rows: dict[str, list[tuple[UtteranceSpec, int]]] = {}
    renderer = _Renderer(out_dir, workers)
    try:
        for pool in ("test", "valid", "train", "unlabeled"):  # fixed order: see module docstring
            planner = UtterancePlanner(pool, by_pool[pool], seed, used, domain_fraction=domain_fraction,
                               noise_prob=noise_prob, diversity=diversity)  # fmt: skip
            if bar is not None:
                bar.set_description_str(f"synthesizing {pool}")
            rows[pool] = _fill(planner, targets_s[pool], renderer, out_dir, bar)
    finally:
        renderer.close()
        if bar is not None:
            bar.close()

    splits = {
        "unlabeled": rows["unlabeled"],
        **{name: _prefix(rows["train"], minutes[name] * 60) for name in LABELED_TRAIN},
        "valid": rows["valid"],
        "test": rows["test"],
        "unlabeled_text": rows["unlabeled"],  # for a supervised topline (experiments' finetune.topline)
    }
    root = out_dir.resolve()
    for name, split_rows in splits.items():
        write_manifest(out_dir / f"{name}.tsv", root, [(spec.rel_path, n) for spec, n in split_rows])
        if name != "unlabeled":
            write_labels(out_dir / f"{name}.wrd", [spec.transcript for spec, _ in split_rows])
            write_labels(out_dir / f"{name}.ltr", [text_to_ltr(spec.transcript) for spec, _ in split_rows])
    counts = dict.fromkeys(LETTERS, 0)  # every symbol, so valid/test never meet an unknown one
    for spec, _ in splits["train_1h"]:
        for sym in text_to_ltr(spec.transcript).split():
            counts[sym] = counts.get(sym, 0) + 1
    write_dictionary(out_dir / "dict.ltr.txt", counts)
    with open(out_dir / "utterances.jsonl", "w", encoding="utf-8") as f:
        for pool in ("unlabeled", "train", "valid", "test"):
            for spec, n in rows[pool]:
                f.write(json.dumps({**asdict(spec), "path": spec.rel_path, "num_samples": n}) + "\n")

    info = {
        "name": "wav2vec2_lite demo corpus (eSpeak NG)",
        "settings": settings,
        "synthesizer": renderer.synth_info,
        "splits": {
            name: {
                "utterances": len(split_rows),
                "minutes": round(sum(n for _, n in split_rows) / SAMPLE_RATE / 60, 3),
                "num_speakers": len({spec.speaker for spec, _ in split_rows}),
                "speakers": sorted({spec.speaker for spec, _ in split_rows}),
            }
            for name, split_rows in splits.items()
        },
        "speaker_sets": {pool: sorted(s.id for s in by_pool[pool]) for pool in POOLS},
        "speakers": {s.id: asdict(s) for s in speakers},
        "diversity_applied": {pool: _diversity_counts(rows[pool]) for pool in POOLS},
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    tmp = out_dir / "corpus.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, out_dir / "corpus.json")
    return info
