"""What the corpus will hold, before any audio: splits and their minutes, speakers, and the
stream of utterance specs per pool (sentence, speaker, voice settings, noise, diversity).

Rendering a spec into audio and writing the splits is ``build.py``'s; :func:`plan_capacity`
runs this planning alone, to check that a size can be filled with new sentences.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

from wav2vec2_lite.corpus.augment import Diversity, resolve_diversity
from wav2vec2_lite.corpus.espeak import ENGLISH_VOICES, VARIANTS
from wav2vec2_lite.corpus.sentences import Sentence, SentenceGenerator

__all__ = [
    "DEFAULT_MINUTES",
    "EXTRA_VARIANTS",
    "FULL_MINUTES",
    "LABELED_TRAIN",
    "POOLS",
    "SPLITS",
    "Speaker",
    "UtterancePlanner",
    "UtteranceSpec",
    "corpus_minutes",
    "make_extra_speakers",
    "make_speakers",
    "plan_capacity",
    "speaker_pools",
    "split_speakers",
    "stable_seed",
]

SPLITS = ("unlabeled", "train_1min", "train_10min", "train_1h", "valid", "test")
POOLS = ("unlabeled", "train", "valid", "test")  # folders under wav/; train holds every train_* split
LABELED_TRAIN = ("train_1min", "train_10min", "train_1h")  # nested prefixes of the train pool
# Small enough to build in a few minutes on 2 cores; train_1h is scaled down to 30 min.
DEFAULT_MINUTES = {"unlabeled": 30.0, "train_1min": 1.0, "train_10min": 10.0, "train_1h": 30.0, "valid": 3.0,
                   "test": 3.0}  # fmt: skip
# Libri-light's labeled sizes (1 min = its first fold's scale, 10 min, 1 h), 10 h unlabeled,
# 10 min valid/test.
FULL_MINUTES = {"unlabeled": 600.0, "train_1min": 1.0, "train_10min": 10.0, "train_1h": 60.0, "valid": 10.0,
                "test": 10.0}  # fmt: skip

NUM_TEST_SPEAKERS = 12
NUM_VALID_SPEAKERS = 12

# Speaker and utterance variation (documented in docs/corpus.md).
RATE_WPM = (130, 190)
PITCH = (30, 70)
PITCH_RANGE = (30, 80)
WORD_GAPS = (0, 0, 0, 1, 2)  # units of 10 ms, drawn per speaker
RATE_JITTER, PITCH_JITTER = 10, 4
SILENCE_S = (0.05, 0.3)
PEAK = (0.3, 0.9)
SNR_DB = (25.0, 40.0)
# eSpeak NG 1.52's other variants (voices/!v), used only with ``Diversity.extra_variants``, for
# unlabeled speakers; "Mr serious" is left out (a space in its name).
EXTRA_VARIANTS = (
    "m8", "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo", "Gene",
    "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "Reed",
    "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "UniRobot", "adam", "anika",
    "anikaRobot", "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "croak", "david",
    "ed", "edward", "edward2", "fast", "grandma", "grandpa", "gustave", "ian", "iven", "iven2", "iven3",
    "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda",
    "marcelo", "max", "michel", "miguel", "mike2", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
    "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7",
    "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "whisper", "whisperf",
    "zac",
)  # fmt: skip
# wider speaking styles of the extra speakers
EXTRA_RATE_WPM = (110, 230)
EXTRA_PITCH = (15, 85)
EXTRA_PITCH_RANGE = (20, 95)


def corpus_minutes(*, full: bool = False, scale: float = 1.0) -> dict[str, float]:
    """Minutes per split: the default (or ``full``) sizes times ``scale``."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, found {scale}")
    base = FULL_MINUTES if full else DEFAULT_MINUTES
    return {k: v * scale for k, v in base.items()}


@dataclass(frozen=True)
class Speaker:
    """An eSpeak voice+variant with its own speaking style."""

    voice: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int

    @property
    def id(self) -> str:
        return f"{self.voice}+{self.variant}"


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance; rendering is a pure function of it."""

    utt_id: str
    pool: str  # unlabeled | train | valid | test (folder under wav/)
    speaker: str
    voice: str
    variant: str
    text: str
    transcript: str
    kind: str  # general | domain
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    lead_s: float
    tail_s: float
    peak: float
    snr_db: float | None
    seed: int  # seeds the engine's breath noise and the added noise
    # diversity (build_corpus(diversity=...)); the defaults are "not applied"
    speed: float = 1.0  # speed-perturbation factor
    tilt_db: float = 0.0  # EQ tilt, dB per octave around 1 kHz
    rt60_s: float | None = None  # synthetic room: RT60 (s) and direct-to-reverberant ratio (dB)
    drr_db: float | None = None
    noise_color: str = "white"  # colour of the noise at snr_db (when snr_db is not None)

    @property
    def rel_path(self) -> str:
        return f"wav/{self.pool}/{self.utt_id}.wav"


def make_speakers(seed: int) -> list[Speaker]:
    """All voice x variant speakers, with styles drawn from ``seed`` (sorted by id)."""
    rng = random.Random(f"{seed}:speakers")
    speakers = []
    for voice in ENGLISH_VOICES:
        for variant in VARIANTS:
            speakers.append(
                Speaker(
                    voice=voice,
                    variant=variant,
                    rate=rng.randint(*RATE_WPM),
                    pitch=rng.randint(*PITCH),
                    pitch_range=rng.randint(*PITCH_RANGE),
                    word_gap=rng.choice(WORD_GAPS),
                )
            )
    return speakers


def make_extra_speakers(seed: int) -> list[Speaker]:
    """English voices x ``EXTRA_VARIANTS``, wider styles drawn from ``seed`` (never valid/test)."""
    rng = random.Random(f"{seed}:extra-speakers")
    return [
        Speaker(
            voice=voice,
            variant=variant,
            rate=rng.randint(*EXTRA_RATE_WPM),
            pitch=rng.randint(*EXTRA_PITCH),
            pitch_range=rng.randint(*EXTRA_PITCH_RANGE),
            word_gap=rng.choice(WORD_GAPS),
        )
        for voice in ENGLISH_VOICES
        for variant in EXTRA_VARIANTS
    ]


def split_speakers(speakers: list[Speaker], seed: int) -> dict[str, list[Speaker]]:
    """Disjoint test / valid / train speaker sets; unlabeled uses the train speakers."""
    order = sorted(speakers, key=lambda s: s.id)
    random.Random(f"{seed}:speaker-split").shuffle(order)
    test = order[:NUM_TEST_SPEAKERS]
    valid = order[NUM_TEST_SPEAKERS : NUM_TEST_SPEAKERS + NUM_VALID_SPEAKERS]
    train = order[NUM_TEST_SPEAKERS + NUM_VALID_SPEAKERS :]
    return {"test": test, "valid": valid, "train": train, "unlabeled": train}


def speaker_pools(seed: int, diversity: Diversity) -> tuple[dict[str, list[Speaker]], list[Speaker]]:
    """(speakers per pool, every speaker used): ``split_speakers``, plus the extra-variant
    speakers in the unlabeled pool when ``diversity`` asks for them there."""
    speakers = make_speakers(seed)
    by_pool = split_speakers(speakers, seed)
    if diversity.extra_variants and diversity.applies_to("unlabeled"):
        extra = make_extra_speakers(seed)
        by_pool["unlabeled"] = by_pool["unlabeled"] + extra
        speakers = speakers + extra
    return by_pool, speakers


def stable_seed(seed: int, name: str) -> int:
    """An integer seed for (seed, name) that is the same in every process (unlike ``hash``)."""
    return random.Random(f"{seed}:{name}").getrandbits(63)


class UtterancePlanner:
    """Endless stream of utterance specs for one pool (speakers in shuffled round robin)."""

    def __init__(self, pool: str, speakers: list[Speaker], seed: int, used: set[str], *,
                 domain_fraction: float, noise_prob: float,
                 diversity: Diversity | None = None) -> None:  # fmt: skip
        self.pool, self.speakers, self.used = pool, speakers, used
        self.rng = random.Random(f"{seed}:{pool}:utterances")
        # a separate stream, so the base choices are the same with or without diversity
        self.diversity = diversity if diversity is not None and diversity.applies_to(pool) else None
        self.drng = random.Random(f"{seed}:{pool}:diversity")
        self.sentences = SentenceGenerator(seed=stable_seed(seed, pool), domain_fraction=domain_fraction)
        self.noise_prob = noise_prob
        self.count = 0
        self._queue: list[Speaker] = []

    def _next_speaker(self) -> Speaker:
        if not self._queue:
            self._queue = list(self.speakers)
            self.rng.shuffle(self._queue)
        return self._queue.pop()

    def _next_sentence(self) -> Sentence:
        for _ in range(10_000):
            s = self.sentences.sample()
            if s.transcript not in self.used:
                self.used.add(s.transcript)
                return s
        raise RuntimeError(
            f"{self.pool}: no new sentence in 10000 draws; the sentence space is exhausted, "
            f"ask for fewer minutes"
        )

    def __iter__(self) -> Iterator[UtteranceSpec]:
        return self

    def __next__(self) -> UtteranceSpec:
        spk, sent, r = self._next_speaker(), self._next_sentence(), self.rng
        self.count += 1
        noisy = r.random() < self.noise_prob
        spec = UtteranceSpec(
            utt_id=f"{self.pool}-{self.count:06d}",
            pool=self.pool,
            speaker=spk.id,
            voice=spk.voice,
            variant=spk.variant,
            text=sent.text,
            transcript=sent.transcript,
            kind=sent.kind,
            rate=min(max(spk.rate + r.randint(-RATE_JITTER, RATE_JITTER), 80), 450),
            pitch=min(max(spk.pitch + r.randint(-PITCH_JITTER, PITCH_JITTER), 0), 99),
            pitch_range=spk.pitch_range,
            word_gap=spk.word_gap,
            lead_s=round(r.uniform(*SILENCE_S), 3),
            tail_s=round(r.uniform(*SILENCE_S), 3),
            peak=round(r.uniform(*PEAK), 3),
            snr_db=round(r.uniform(*SNR_DB), 1) if noisy else None,
            seed=r.getrandbits(63),
        )
        return spec if self.diversity is None else self._diversify(spec)

    def _diversify(self, spec: UtteranceSpec) -> UtteranceSpec:
        """Draw this utterance's diversity (a fixed number of draws, whatever is applied)."""
        d, r = self.diversity, self.drng
        speed = r.choice(d.speed_factors)
        tilt, tilt_db = r.random() < d.tilt_prob, round(r.uniform(*d.tilt_db_per_octave), 2)
        reverb, rt60, drr = (
            r.random() < d.reverb_prob,
            round(r.uniform(*d.rt60_s), 3),
            round(r.uniform(*d.drr_db), 1),
        )
        noisy, color, snr = (
            r.random() < d.noise_prob,
            r.choice(d.noise_colors),
            round(r.uniform(*d.snr_db), 1),
        )
        over: dict = {"speed": float(speed), "tilt_db": tilt_db if tilt else 0.0}
        if reverb:
            over.update(rt60_s=rt60, drr_db=drr)
        if d.noise_prob > 0:  # this noise replaces the base white noise
            over.update(snr_db=snr if noisy else None, noise_color=color if noisy else "white")
        return replace(spec, **over)


def plan_capacity(
    *,
    unlabeled_minutes: float = FULL_MINUTES["unlabeled"],
    train_minutes: float = FULL_MINUTES["train_1h"],
    valid_minutes: float = FULL_MINUTES["valid"],
    test_minutes: float = FULL_MINUTES["test"],
    seed: int = 0,
    domain_fraction: float = 0.5,
    noise_prob: float = 0.5,
    diversity: str | Diversity | dict | None = None,
    seconds_per_utterance: float = 2.5,
) -> dict:
    """Dry run of the build's planning, without audio: can these minutes get new sentences?

    Draws the same utterance specs as ``build_corpus`` (same seed, order and sentence
    de-duplication) for ``minutes * 60 / seconds_per_utterance`` utterances per pool (the
    default is below the corpus' average utterance length, so the count errs high) and returns, per pool, the
    number of utterances, distinct speakers, most utterances of one speaker and the share of
    closed-domain sentences. Raises the build's ``RuntimeError`` ("ask for fewer minutes")
    when the sentence space runs out. Seconds per 10 h: see docs/corpus.md.
    """
    diversity = resolve_diversity(diversity)
    by_pool, _ = speaker_pools(seed, diversity)
    minutes = {
        "test": test_minutes,
        "valid": valid_minutes,
        "train": train_minutes,
        "unlabeled": unlabeled_minutes,
    }
    used: set[str] = set()
    report: dict = {}
    for pool in ("test", "valid", "train", "unlabeled"):
        planner = UtterancePlanner(pool, by_pool[pool], seed, used, domain_fraction=domain_fraction,
                           noise_prob=noise_prob, diversity=diversity)  # fmt: skip
        n = math.ceil(minutes[pool] * 60 / seconds_per_utterance)
        per_speaker: dict[str, int] = {}
        domain = 0
        for _ in range(n):
            spec = next(planner)
            per_speaker[spec.speaker] = per_speaker.get(spec.speaker, 0) + 1
            domain += spec.kind == "domain"
        report[pool] = {
            "utterances": n,
            "speakers": len(per_speaker),
            "max_per_speaker": max(per_speaker.values(), default=0),
            "domain_share": round(domain / max(n, 1), 3),
        }
    report["sentences"] = len(used)
    return report
