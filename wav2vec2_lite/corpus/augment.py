"""Audio diversity for the demo corpus: speed perturbation, EQ tilt, room reverberation, coloured noise.

Every function is a pure function of its arguments and of a seeded ``numpy`` generator, so a
corpus built with these options stays byte-identical per seed whatever the number of workers.
``Diversity`` holds the per-corpus settings (which pools, which probabilities and ranges);
the planner in ``build.py`` draws the per-utterance values (recorded in ``utterances.jsonl``)
and ``build.render_utterance`` applies them in this order:

1. ``speed_perturb``: resample-based speed change (Kaldi/ESPnet style: duration and pitch
   both scale; factor 1.1 = 10 % faster, ``len / 1.1`` samples), with ``soxr`` (HQ).
2. ``eq_tilt``: a spectral tilt of ``db_per_octave`` around 1 kHz (a cheap microphone /
   channel colouring), then the utterance's peak level as before.
3. ``room_impulse_response`` + ``convolve``: a synthetic room: a unit direct path followed
   by exponentially decaying Gaussian noise whose energy decays by 60 dB after ``rt60_s``,
   scaled to a direct-to-reverberant ratio ``drr_db``; the convolution keeps the whole tail
   (the file gets ``len(ir) - 1`` samples longer).
4. ``coloured_noise``: white / pink (1/f power) / brown (1/f^2 power) noise at an SNR
   relative to the mean power of the (reverberant) speech segment.

Only numpy (its FFT) and soxr are used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import soxr

__all__ = [
    "DIVERSITY_PRESETS",
    "NOISE_COLORS",
    "Diversity",
    "coloured_noise",
    "convolve",
    "eq_tilt",
    "resolve_diversity",
    "room_impulse_response",
    "speed_perturb",
]

NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # exponent of the 1/f^a power spectrum
POOLS = ("unlabeled", "train", "valid", "test")
_NOISE_FMIN = 20.0  # Hz: below it pink/brown noise is flat (no DC drift)
_TILT_FMIN, _TILT_FMAX = 100.0, 8000.0  # Hz: the tilt is flat outside this band


@dataclass(frozen=True)
class Diversity:
    """Which audio diversity a corpus gets, and where; ``Diversity()`` is "none".

    Attributes:
        pools: the pools it applies to: ``unlabeled``, ``train`` (all labeled training
            splits: train_1min, train_10min, train_1h), ``valid``, ``test``.
        speed_factors: speed-perturbation factors, one drawn uniformly per utterance.
        tilt_prob, tilt_db_per_octave: probability and range of an EQ tilt (dB/octave around 1 kHz).
        reverb_prob, rt60_s, drr_db: probability of a synthetic room, its RT60 range (s) and
            direct-to-reverberant ratio range (dB).
        noise_prob, snr_db, noise_colors: probability of additive noise, its SNR range (dB)
            and colours (drawn uniformly). When ``noise_prob > 0`` this noise replaces the
            corpus' base white noise (``noise_prob`` of ``build_corpus``) in these pools.
        extra_variants: add speakers made of every English voice with each of
            ``build.EXTRA_VARIANTS`` (eSpeak's other variants: klatt, whisper, Andy, ...),
            with wider speaking styles, to the unlabeled pool (if in ``pools``). The labeled
            splits keep the 72 training speakers (the label curve's speakers do not depend on
            the preset) and valid/test never use these variants, so their speakers stay held out.
    """

    pools: tuple[str, ...] = ()
    speed_factors: tuple[float, ...] = (1.0,)
    tilt_prob: float = 0.0
    tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0)
    reverb_prob: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.8)
    drr_db: tuple[float, float] = (0.0, 10.0)
    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_colors: tuple[str, ...] = ("white", "pink", "brown")
    extra_variants: bool = False

    def __post_init__(self) -> None:
        for pool in self.pools:
            if pool not in POOLS:
                raise ValueError(f"diversity pools must be among {POOLS}, found {pool!r}")
        if not self.speed_factors or not all(0.5 <= f <= 2.0 for f in self.speed_factors):
            raise ValueError(f"speed factors must be in [0.5, 2], found {self.speed_factors}")
        for name in ("tilt_prob", "reverb_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], found {getattr(self, name)}")
        for name in ("tilt_db_per_octave", "rt60_s", "drr_db", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high), found {(lo, hi)}")
        if self.rt60_s[0] <= 0.0 or self.rt60_s[1] > 3.0:
            raise ValueError(f"rt60_s must lie in (0, 3] s, found {self.rt60_s}")
        bad = [c for c in self.noise_colors if c not in NOISE_COLORS]
        if bad or not self.noise_colors:
            raise ValueError(f"noise colours must be among {tuple(NOISE_COLORS)}, found {self.noise_colors}")

    @property
    def active(self) -> bool:
        """Whether it changes anything at all."""
        return bool(self.pools) and (
            any(f != 1.0 for f in self.speed_factors) or self.tilt_prob > 0 or self.reverb_prob > 0
            or self.noise_prob > 0 or self.extra_variants
        )  # fmt: skip

    def applies_to(self, pool: str) -> bool:
        return self.active and pool in self.pools

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# The science runs' setting (issue 20): diverse unlabeled audio, labeled/valid/test untouched.
DIVERSE = Diversity(
    pools=("unlabeled",),
    speed_factors=(0.9, 1.0, 1.1),
    tilt_prob=0.5,
    tilt_db_per_octave=(-3.0, 3.0),
    reverb_prob=0.5,
    rt60_s=(0.2, 0.8),
    drr_db=(0.0, 10.0),
    noise_prob=0.7,
    snr_db=(5.0, 30.0),
    noise_colors=("white", "pink", "brown"),
    extra_variants=True,
)
DIVERSITY_PRESETS: dict[str, Diversity] = {
    "none": Diversity(),
    "diverse": DIVERSE,
    "diverse_train": replace(DIVERSE, pools=("unlabeled", "train")),
}


def resolve_diversity(value: str | Diversity | Mapping | None) -> Diversity:
    """A ``Diversity`` from a preset name, a ``Diversity``, a mapping of its fields (with an
    optional ``"preset"`` key to start from) or None ("none")."""
    if value is None:
        return DIVERSITY_PRESETS["none"]
    if isinstance(value, Diversity):
        return value
    if isinstance(value, str):
        if value not in DIVERSITY_PRESETS:
            raise ValueError(f"unknown diversity preset {value!r}; presets: {', '.join(DIVERSITY_PRESETS)}")
        return DIVERSITY_PRESETS[value]
    if isinstance(value, Mapping):
        over = dict(value)
        base = resolve_diversity(over.pop("preset", "none"))
        names = {f.name for f in fields(Diversity)}
        unknown = set(over) - names
        if unknown:
            raise ValueError(f"unknown diversity options {sorted(unknown)}; known: {sorted(names)}")
        over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
        return replace(base, **over)
    raise TypeError(
        f"diversity must be a preset name, a Diversity or a mapping, found {type(value).__name__}"
    )


# ------------------------------------------------------------------------------ the effects


def speed_perturb(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """``wave`` played ``factor`` times faster (``len / factor`` samples, pitch scaled too)."""
    if factor == 1.0:
        return wave
    out = soxr.resample(
        np.ascontiguousarray(wave, np.float32), sample_rate * factor, sample_rate, quality="HQ"
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def eq_tilt(wave: np.ndarray, db_per_octave: float, sample_rate: int) -> np.ndarray:
    """A spectral tilt: gain ``db_per_octave * log2(f / 1 kHz)`` dB, flat outside 100 Hz-8 kHz."""
    if db_per_octave == 0.0:
        return wave
    n = wave.shape[0]
    spec = np.fft.rfft(wave.astype(np.float64))
    f = np.clip(np.fft.rfftfreq(n, 1.0 / sample_rate), _TILT_FMIN, _TILT_FMAX)
    gain = 10.0 ** (db_per_octave * np.log2(f / 1000.0) / 20.0)
    return np.fft.irfft(spec * gain, n).astype(np.float32)


def room_impulse_response(
    rt60_s: float, drr_db: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """A synthetic room impulse response of ``round(rt60_s * sample_rate)`` samples (to -60 dB).

    ``h[0] = 1`` is the direct path; ``h[1:]`` is Gaussian noise under the envelope
    ``exp(-6.91 n / (rt60 * sr))`` (energy down 60 dB after ``rt60_s``), scaled so that
    ``10 log10(h[0]^2 / sum(h[1:]^2)) == drr_db``.
    """
    n = max(2, round(rt60_s * sample_rate))
    t = np.arange(n, dtype=np.float64)
    tail = rng.standard_normal(n) * np.exp(-3.0 * math.log(10.0) * t / (rt60_s * sample_rate))
    tail[0] = 0.0
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
    tail[0] = 1.0
    return tail


def convolve(wave: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Full linear convolution (``len(wave) + len(ir) - 1`` samples) with numpy's FFT."""
    n = wave.shape[0] + ir.shape[0] - 1
    nfft = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(wave.astype(np.float64), nfft) * np.fft.rfft(ir, nfft), nfft)[:n]
    return out.astype(np.float32)


def coloured_noise(n: int, color: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """``n`` samples of zero-mean noise with a 1/f^a power spectrum (white a=0, pink 1, brown 2),
    scaled to unit mean power exactly."""
    alpha = NOISE_COLORS[color]
    white = rng.standard_normal(n)
    if alpha == 0.0:
        noise = white
    else:
        spec = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), _NOISE_FMIN)
        spec *= f ** (-alpha / 2.0)
        spec[0] = 0.0
        noise = np.fft.irfft(spec, n)
    noise = noise - noise.mean()
    return noise / math.sqrt(float(np.mean(noise**2)))
