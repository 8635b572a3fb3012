"""Demo corpus: eSpeak NG synthesis, sentences, transcript normalisation, the corpus build."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from wav2vec2_lite.corpus import (  # noqa: E402
    DIVERSITY_PRESETS,
    EXTRA_VARIANTS,
    Sentence,
    SentenceGenerator,
    SynthesisError,
    Synthesizer,
    UtteranceSpec,
    build_corpus,
    corpus_minutes,
    make_extra_speakers,
    normalize_transcript,
    number_to_words,
    plan_capacity,
    render_utterance,
)
from wav2vec2_lite.corpus.augment import coloured_noise, convolve, room_impulse_response, speed_perturb  # noqa: E402
from wav2vec2_lite.corpus.sentences import MAX_WORDS, MIN_WORDS  # noqa: E402
from wav2vec2_lite.data.manifest import (  # noqa: E402
    ltr_to_text,
    read_dictionary,
    read_labels,
    read_manifest,
    text_to_ltr,
)

LABELED = ("train_1min", "train_10min", "train_1h", "valid", "test")
TINY = dict(unlabeled_minutes=0.3, train_1min_minutes=0.1, train_10min_minutes=0.2, train_1h_minutes=0.3,
            valid_minutes=0.2, test_minutes=0.2)  # fmt: skip


@pytest.fixture(scope="module")
def synth() -> Synthesizer:
    return Synthesizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "demo"
    build_corpus(out, seed=0, workers=2, **TINY)
    return out


# ------------------------------------------------------------------------------ synthesis


def test_synthesize_one_sentence(synth):
    text = "set a timer for five minutes"
    wave = synth.synthesize(text, voice="en-us", variant="m3", rate=160, pitch=50)
    native = synth.synthesize_native(text, voice="en-us", variant="m3", rate=160, pitch=50)
    assert synth.sample_rate == 16000 and synth.native_rate == 22050
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.shape[0] - native.shape[0] * 16000 / 22050) <= 1  # resampled, not cut
    seconds = wave.shape[0] / 16000
    words = len(text.split())
    assert 0.2 * words < seconds < 1.0 * words, seconds  # 160 wpm: 6 words ~ 2.3 s
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    assert rms > 0.01 and np.abs(wave).max() <= 1.0
    # speech is voiced: most 20 ms frames carry energy
    frames = wave[: wave.shape[0] // 320 * 320].reshape(-1, 320)
    assert (np.sqrt((frames**2).mean(axis=1)) > 0.005).mean() > 0.5


def test_rate_changes_duration(synth):
    text = "the old farmer found a red box near the river"
    slow = synth.synthesize(text, voice="en-gb", variant="f2", rate=120)
    fast = synth.synthesize(text, voice="en-gb", variant="f2", rate=240)
    assert 1.5 < slow.shape[0] / fast.shape[0] < 2.5


def test_synthesis_is_independent_of_history(synth):
    """The engine keeps state between utterances; isolation must hide it (byte-identical)."""
    kwargs = dict(voice="en-029", variant="f5", rate=150, pitch=40, word_gap=1)
    first = synth.synthesize("turn the lights on in the kitchen", **kwargs)
    for other in ("what time is it in paris", "anna found a golden key", "dial five five five"):
        synth.synthesize(other, voice="en-gb-scotland", variant="m7")
    again = synth.synthesize("turn the lights on in the kitchen", **kwargs)
    assert first.tobytes() == again.tobytes()
    other_voice = synth.synthesize("turn the lights on in the kitchen", **{**kwargs, "variant": "m2"})
    assert other_voice.tobytes() != first.tobytes()


def test_synthesizer_rejects_bad_arguments(synth):
    with pytest.raises(SynthesisError, match="unknown eSpeak NG voice"):
        synth.synthesize("hello", voice="en-xx")
    with pytest.raises(SynthesisError, match="variant"):
        synth.synthesize("hello", variant="q9")
    with pytest.raises(ValueError, match="rate"):
        synth.synthesize("hello", rate=20)
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("   ")


def _spec(**overrides) -> UtteranceSpec:
    base = dict(
        utt_id="x-000001", pool="test", speaker="en-us+m1", voice="en-us", variant="m1",
        text="set the volume to four.", transcript="SET THE VOLUME TO FOUR", kind="domain",
        rate=160, pitch=50, pitch_range=50, word_gap=0, lead_s=0.2, tail_s=0.1, peak=0.5,
        snr_db=None, seed=7,
    )  # fmt: skip
    return UtteranceSpec(**{**base, **overrides})


def test_render_utterance_padding_level_and_noise(synth):
    clean = render_utterance(_spec(), synth)
    lead, tail = round(0.2 * 16000), round(0.1 * 16000)
    assert np.all(clean[:lead] == 0) and np.all(clean[-tail:] == 0)
    assert np.abs(clean).max() == pytest.approx(0.5, abs=1e-6)

    noisy = render_utterance(_spec(snr_db=30.0), synth)
    assert noisy.shape == clean.shape
    noise_power = float(np.mean(noisy[:lead].astype(np.float64) ** 2))
    speech_power = float(np.mean(clean[lead:-tail].astype(np.float64) ** 2))
    snr = 10 * math.log10(speech_power / noise_power)
    assert abs(snr - 30.0) < 1.5, snr
    assert render_utterance(_spec(snr_db=30.0), synth).tobytes() == noisy.tobytes()
    assert render_utterance(_spec(snr_db=30.0, seed=8), synth).tobytes() != noisy.tobytes()


# ------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Set a timer for 5 minutes!", "SET A TIMER FOR FIVE MINUTES"),
        ("It's 7:30, isn't it?", "IT'S SEVEN THIRTY ISN'T IT"),
        ("wake me at 6:05 or 10:00", "WAKE ME AT SIX OH FIVE OR TEN O'CLOCK"),
        ("café & bar", "CAFE AND BAR"),
        (
            "1,250 people, 3.14 and 50%",
            "ONE THOUSAND TWO HUNDRED FIFTY PEOPLE THREE POINT ONE FOUR AND FIFTY PERCENT",
        ),
        ("the 21st and 2nd day", "THE TWENTY FIRST AND SECOND DAY"),
        ("code 007", "CODE ZERO ZERO SEVEN"),
        ("'quoted' well-known rock\u2019n\u2019roll", "QUOTED WELL KNOWN ROCK'N'ROLL"),
        ("  MiXeD\tcase\n ", "MIXED CASE"),
        ("?!", ""),
    ],
)
def test_normalize_transcript(text, expected):
    out = normalize_transcript(text)
    assert out == expected
    assert set(out) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    assert normalize_transcript(out) == out


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(15) == "fifteen"
    assert number_to_words(40) == "forty"
    assert number_to_words(99) == "ninety nine"
    assert number_to_words(105) == "one hundred five"
    assert number_to_words(2_000_017) == "two million seventeen"


def test_sentence_generator_is_deterministic():
    a = [s.transcript for s in SentenceGenerator(seed=3).sample_many(300)]
    b = [s.transcript for s in SentenceGenerator(seed=3).sample_many(300)]
    c = [s.transcript for s in SentenceGenerator(seed=4).sample_many(300)]
    assert a == b and a != c


def test_sentences_are_well_formed():
    sents = SentenceGenerator(seed=0).sample_many(2000)
    kinds = {s.kind for s in sents}
    assert kinds == {"general", "domain"}
    for s in sents:
        assert MIN_WORDS <= s.num_words <= MAX_WORDS, s
        assert s.transcript == normalize_transcript(s.text)
        assert not any(ch.isdigit() for ch in s.text)  # spoken text and label agree
    general = {w for s in sents if s.kind == "general" for w in s.transcript.split()}
    domain = {w for s in sents if s.kind == "domain" for w in s.transcript.split()}
    assert len(general) > 300  # several hundred common words
    assert len(domain) < 250  # a closed vocabulary
    domain_only = SentenceGenerator(seed=1, domain_fraction=1.0).sample_many(50)
    assert all(s.kind == "domain" for s in domain_only)


# ------------------------------------------------------------------------------ corpus


def _rows(corpus: Path, split: str):
    m = read_manifest(corpus / f"{split}.tsv")
    return m, [m.full_path(i) for i in range(len(m))]


def _speaker_of(corpus: Path) -> dict[str, str]:
    lines = (corpus / "utterances.jsonl").read_text().splitlines()
    return {(d := json.loads(line))["path"]: d["speaker"] for line in lines}


def test_corpus_files_and_manifests(corpus):
    for name in ["unlabeled.tsv", "dict.ltr.txt", "corpus.json", "utterances.jsonl"] + [
        f"{s}.{ext}" for s in LABELED for ext in ("tsv", "ltr", "wrd")
    ]:
        assert (corpus / name).is_file(), name
    for split in ("unlabeled",) + LABELED:
        m, paths = _rows(corpus, split)
        assert len(m) > 0 and m.root == corpus.resolve()
        for path, size in zip(paths, m.sizes):
            info = sf.info(str(path))
            assert info.samplerate == 16000 and info.channels == 1
            assert info.frames == size
        minutes = sum(m.sizes) / 16000 / 60
        assert minutes >= TINY[f"{split}_minutes"]
    # the unlabeled pool with its transcripts (a supervised topline): same rows, labels from utterances.jsonl
    unlabeled, text = read_manifest(corpus / "unlabeled.tsv"), read_manifest(corpus / "unlabeled_text.tsv")
    assert (text.paths, text.sizes) == (unlabeled.paths, unlabeled.sizes)
    transcripts = {
        json.loads(line)["path"]: json.loads(line)["transcript"] for line in open(corpus / "utterances.jsonl")
    }
    assert read_labels(corpus / "unlabeled_text.wrd") == [transcripts[p] for p in unlabeled.paths]


def test_corpus_labels_line_up(corpus):
    symbols = set(read_dictionary(corpus / "dict.ltr.txt"))
    for split in LABELED:
        m = read_manifest(corpus / f"{split}.tsv")
        ltr, wrd = read_labels(corpus / f"{split}.ltr"), read_labels(corpus / f"{split}.wrd")
        assert len(ltr) == len(wrd) == len(m)
        for letters, words in zip(ltr, wrd):
            assert words and words == normalize_transcript(words)
            assert letters == text_to_ltr(words) and ltr_to_text(letters) == words
            assert set(letters.split()) <= symbols
    # the labels belong to the audio rows (utterances.jsonl links path and transcript)
    meta = {(d := json.loads(x))["path"]: d for x in (corpus / "utterances.jsonl").read_text().splitlines()}
    m, _ = _rows(corpus, "test")
    assert [meta[p]["transcript"] for p in m.paths] == read_labels(corpus / "test.wrd")
    assert [meta[p]["num_samples"] for p in m.paths] == m.sizes


def test_corpus_dictionary(corpus):
    lines = [ln.rsplit(" ", 1) for ln in (corpus / "dict.ltr.txt").read_text().splitlines()]
    counts = {sym: int(c) for sym, c in lines}
    assert set(counts) == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ'|")
    expected: dict[str, int] = {}
    for line in read_labels(corpus / "train_1h.ltr"):
        for sym in line.split():
            expected[sym] = expected.get(sym, 0) + 1
    assert {k: v for k, v in counts.items() if v} == expected
    assert [int(c) for _, c in lines] == sorted((int(c) for _, c in lines), reverse=True)


def test_corpus_splits_are_disjoint(corpus):
    speaker = _speaker_of(corpus)
    spk = {
        s: {speaker[p] for p in read_manifest(corpus / f"{s}.tsv").paths} for s in ("unlabeled",) + LABELED
    }
    train = spk["train_1min"] | spk["train_10min"] | spk["train_1h"]
    assert not spk["test"] & train and not spk["test"] & spk["valid"] and not spk["test"] & spk["unlabeled"]
    assert not spk["valid"] & train
    # train_1min, train_10min, train_1h: nested prefixes (Libri-light); no audio shared with other splits
    one, ten = read_manifest(corpus / "train_1min.tsv"), read_manifest(corpus / "train_10min.tsv")
    hour = read_manifest(corpus / "train_1h.tsv")
    assert ten.paths[: len(one.paths)] == one.paths and len(ten.paths) > len(one.paths) > 0
    assert hour.paths[: len(ten.paths)] == ten.paths and len(hour.paths) > len(ten.paths)
    for small, big in (("train_1min", "train_10min"), ("train_10min", "train_1h")):
        n = len(read_labels(corpus / f"{small}.wrd"))
        assert read_labels(corpus / f"{big}.wrd")[:n] == read_labels(corpus / f"{small}.wrd")
        assert read_labels(corpus / f"{big}.ltr")[:n] == read_labels(corpus / f"{small}.ltr")
    unl = set(read_manifest(corpus / "unlabeled.tsv").paths)
    assert not unl & set(hour.paths) and not unl & set(read_manifest(corpus / "test.tsv").paths)
    # every sentence occurs once: no test sentence in unlabeled or training text
    texts = [json.loads(x)["transcript"] for x in (corpus / "utterances.jsonl").read_text().splitlines()]
    assert len(texts) == len(set(texts))


def test_corpus_json(corpus):
    info = json.loads((corpus / "corpus.json").read_text())
    s = info["settings"]
    assert s["seed"] == 0 and s["sample_rate"] == 16000
    assert s["minutes"] == {k.removesuffix("_minutes"): v for k, v in TINY.items()}
    assert s["generator_version"] >= 1 and s["corpus_version"] >= 1
    assert info["synthesizer"]["backend"] in ("library", "cli")
    for split, rec in info["splits"].items():
        m = read_manifest(corpus / f"{split}.tsv")
        assert rec["utterances"] == len(m)
        assert rec["minutes"] == pytest.approx(sum(m.sizes) / 16000 / 60, abs=1e-3)
        assert rec["num_speakers"] == len(rec["speakers"]) > 0
    assert not set(info["speaker_sets"]["test"]) & set(info["speaker_sets"]["train"])
    assert set(info["splits"]["test"]["speakers"]) <= set(info["speaker_sets"]["test"])


def test_corpus_rebuild_is_skipped(corpus, capsys):
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}
    build_corpus(corpus, seed=0, workers=2, **TINY)
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()} == before


def test_corpus_is_deterministic(corpus, tmp_path):
    """Same seed -> byte-identical audio and labels, whatever the number of workers."""
    again = tmp_path / "again"
    build_corpus(again, seed=0, workers=1, **TINY)
    for split in ("unlabeled",) + LABELED:
        a, b = read_manifest(corpus / f"{split}.tsv"), read_manifest(again / f"{split}.tsv")
        assert a.paths == b.paths and a.sizes == b.sizes
        for p in a.paths:
            assert (corpus / p).read_bytes() == (again / p).read_bytes(), p
        if split != "unlabeled":
            assert (corpus / f"{split}.ltr").read_bytes() == (again / f"{split}.ltr").read_bytes()

    other = tmp_path / "other"
    build_corpus(other, seed=1, workers=2, unlabeled_minutes=0.1, train_10min_minutes=0.1,
                 train_1h_minutes=0.1, valid_minutes=0.1, test_minutes=0.2)  # fmt: skip
    assert read_labels(other / "test.wrd") != read_labels(corpus / "test.wrd")
    first = read_manifest(corpus / "test.tsv").paths[0]
    assert (other / first).read_bytes() != (corpus / first).read_bytes()


def test_build_corpus_validates_sizes(tmp_path):
    with pytest.raises(ValueError, match="train_1h"):
        build_corpus(tmp_path, train_10min_minutes=2.0, train_1h_minutes=1.0)
    with pytest.raises(ValueError, match="train_10min .* must be at least train_1min"):
        build_corpus(tmp_path, train_1min_minutes=3.0, train_10min_minutes=2.0)
    with pytest.raises(ValueError, match="unknown diversity preset"):
        build_corpus(tmp_path, diversity="noisy")
    with pytest.raises(ValueError, match="unknown diversity options"):
        build_corpus(tmp_path, diversity={"preset": "diverse", "reverb": 1.0})
    with pytest.raises(ValueError, match="pools"):
        build_corpus(tmp_path, diversity={"pools": ["train_1h"]})
    assert not (tmp_path / "corpus.json").exists()
    with pytest.raises(ValueError, match="minutes must be > 0"):
        build_corpus(tmp_path, test_minutes=0.0)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian's espeak-ng program is not installed")
def test_cli_backend():
    cli = Synthesizer(backend="cli")
    assert cli.backend == "cli"
    text = "set a timer for five minutes"
    wave = cli.synthesize(text, voice="en-gb", variant="f3", rate=160, word_gap=1)
    assert wave.dtype == np.float32 and 0.2 * 6 < wave.shape[0] / 16000 < 6.0
    assert cli.synthesize(text, voice="en-gb", variant="f3", rate=160, word_gap=1).tobytes() == wave.tobytes()
    with pytest.raises(SynthesisError, match="unknown eSpeak NG voice"):
        cli.synthesize(text, voice="en-xx")


def test_train_1min_default_follows_train_10min(tmp_path):
    """Callers that predate train_1min keep working: it defaults to min(1, train_10min) minutes."""
    info = build_corpus(tmp_path / "c", seed=0, workers=1, unlabeled_minutes=0.05, train_10min_minutes=0.05,
                        train_1h_minutes=0.05, valid_minutes=0.05, test_minutes=0.05)  # fmt: skip
    assert info["settings"]["minutes"]["train_1min"] == 0.05
    assert (
        read_manifest(tmp_path / "c" / "train_1min.tsv").paths
        == read_manifest(tmp_path / "c" / "train_10min.tsv").paths
    )
    assert corpus_minutes()["train_1min"] == 1.0 and corpus_minutes(full=True, scale=2)["train_1min"] == 2.0


def test_held_out_splits_of_a_smaller_build_are_prefixes_of_a_larger_one(tmp_path):
    """With one seed, valid and test of a smaller corpus (the demo's) are the first utterances of
    a larger one's (the shipped checkpoint's), so they stay out of the larger one's unlabeled pool
    (speakers and sentences), whatever diversity the larger one applies to it."""
    small = dict(unlabeled_minutes=0.1, train_10min_minutes=0.1, train_1h_minutes=0.1, valid_minutes=0.15,
                 test_minutes=0.15)  # fmt: skip
    large = dict(unlabeled_minutes=0.6, train_10min_minutes=0.2, train_1h_minutes=0.3, valid_minutes=0.4,
                 test_minutes=0.4)  # fmt: skip
    build_corpus(tmp_path / "small", seed=3, workers=1, **small)
    build_corpus(tmp_path / "large", seed=3, workers=1, diversity="diverse", **large)

    def rows(root, split):
        return [
            json.loads(line)
            for line in (root / "utterances.jsonl").read_text().splitlines()
            if json.loads(line)["pool"] == split
        ]

    for split in ("valid", "test"):
        a, b = rows(tmp_path / "small", split), rows(tmp_path / "large", split)
        assert 0 < len(a) < len(b)
        assert [(r["speaker"], r["text"]) for r in a] == [(r["speaker"], r["text"]) for r in b[: len(a)]]
        for r in a:
            assert (
                sf.read(tmp_path / "small" / r["path"])[0].tolist()
                == sf.read(tmp_path / "large" / r["path"])[0].tolist()
            )
        unlabeled = rows(tmp_path / "large", "unlabeled")
        assert not {r["speaker"] for r in a} & {r["speaker"] for r in unlabeled}
        assert not {r["text"] for r in a} & {r["text"] for r in unlabeled}


# ---------------------------------------------------------------------------- diversity


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, np.float64) ** 2))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_duration_by_the_factor(synth, factor):
    clean = render_utterance(_spec(), synth)
    lead, tail = round(0.2 * 16000), round(0.1 * 16000)
    fast = render_utterance(_spec(speed=factor), synth)
    speech, perturbed = clean.shape[0] - lead - tail, fast.shape[0] - lead - tail
    assert abs(perturbed - speech / factor) <= 2, (perturbed, speech / factor)
    assert np.all(fast[:lead] == 0) and np.abs(fast).max() == pytest.approx(0.5, abs=1e-6)  # level kept
    # the same signal played faster/slower: slowing it back by the factor restores the original
    back = speed_perturb(fast[lead:-tail], 1.0 / factor, 16000).astype(np.float64)
    orig = clean[lead:-tail].astype(np.float64)
    n = min(back.shape[0], orig.shape[0])
    corr = float(back[:n] @ orig[:n] / math.sqrt((back[:n] @ back[:n]) * (orig[:n] @ orig[:n])))
    assert corr > 0.95, corr


def test_room_impulse_response_rt60_and_drr():
    rng = np.random.default_rng(0)
    for rt60, drr in ((0.3, 0.0), (0.8, 8.0)):
        ir = room_impulse_response(rt60, drr, rng, 16000)
        assert ir.shape == (round(rt60 * 16000),) and ir[0] == 1.0
        assert 10 * math.log10(1.0 / float(np.sum(ir[1:] ** 2))) == pytest.approx(drr, abs=1e-6)
        # Schroeder backward integration of the tail: T20 (-5 .. -25 dB) x 3 ~ RT60
        edc = np.cumsum(ir[1:][::-1] ** 2)[::-1]
        edc_db = 10 * np.log10(edc / edc[0])
        t5, t25 = np.argmax(edc_db <= -5), np.argmax(edc_db <= -25)
        assert 3 * (t25 - t5) / 16000 == pytest.approx(rt60, rel=0.15)


def test_reverberation_lengthens_the_tail_and_lowers_the_drr(synth):
    clean = render_utterance(_spec(), synth)
    wet = render_utterance(_spec(rt60_s=0.5, drr_db=3.0), synth)
    assert wet.shape[0] == clean.shape[0] + round(0.5 * 16000) - 1  # the room's tail is kept
    assert np.abs(wet).max() == pytest.approx(0.5, abs=1e-6)
    tail = round(0.1 * 16000)
    end = clean.shape[0] - tail  # where the dry speech ends
    # after the speech ends the dry signal is silent; the room keeps ringing
    assert np.all(clean[end:] == 0) and _power(wet[end : end + 1600]) > 1e-3 * _power(wet[:end])
    # direct-to-reverberant ratio: project the wet signal on the dry one (the direct path)
    dry = np.concatenate([clean, np.zeros(wet.shape[0] - clean.shape[0], np.float32)]).astype(np.float64)
    gain = float(wet @ dry / (dry @ dry))
    drr = 10 * math.log10(_power(gain * dry) / _power(wet - gain * dry))
    assert 0.0 < drr < 6.0, drr  # ~3 dB asked (the tail correlates a little with the speech)
    assert render_utterance(_spec(rt60_s=0.5, drr_db=3.0), synth).tobytes() == wet.tobytes()


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_coloured_noise_at_the_requested_snr(synth, color):
    clean = render_utterance(_spec(), synth)
    noisy = render_utterance(_spec(snr_db=10.0, noise_color=color), synth)
    lead, tail = round(0.2 * 16000), round(0.1 * 16000)
    noise = noisy.astype(np.float64) - clean
    snr = 10 * math.log10(_power(clean[lead:-tail]) / _power(noise))
    assert abs(snr - 10.0) < (0.3 if color == "white" else 0.05), (
        snr
    )  # white: as in version 1 (not renormalised)
    # the colour: share of the noise power below 500 Hz (white ~6 %, pink ~50 %, brown ~97 %)
    spec = np.abs(np.fft.rfft(noise)) ** 2
    low = spec[np.fft.rfftfreq(noise.shape[0], 1 / 16000) < 500].sum() / spec.sum()
    assert {"white": 0.03 < low < 0.1, "pink": 0.3 < low < 0.7, "brown": low > 0.9}[color], low


def test_coloured_noise_is_normalised_and_seeded():
    a = coloured_noise(20000, "pink", np.random.default_rng(3), 16000)
    assert _power(a) == pytest.approx(1.0) and abs(float(a.mean())) < 1e-9
    assert a.tobytes() == coloured_noise(20000, "pink", np.random.default_rng(3), 16000).tobytes()


def test_eq_tilt_moves_energy(synth):
    clean = render_utterance(_spec(), synth)
    bright = render_utterance(_spec(tilt_db=3.0), synth)
    dark = render_utterance(_spec(tilt_db=-3.0), synth)

    def high_share(x):
        spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        return spec[np.fft.rfftfreq(x.shape[0], 1 / 16000) > 2000].sum() / spec.sum()

    assert high_share(dark) < high_share(clean) < high_share(bright)
    assert bright.shape == clean.shape and np.abs(bright).max() == pytest.approx(0.5, abs=1e-6)


def test_speed_perturb_and_convolve_helpers():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert speed_perturb(x, 1.0, 16000) is x
    for f in (0.9, 1.1):
        assert abs(speed_perturb(x, f, 16000).shape[0] - 16000 / f) <= 2
    h = np.array([1.0, 0.5, 0.25])
    assert np.allclose(convolve(x[:50], h), np.convolve(x[:50], h), atol=1e-5)


DIVERSE_TINY = dict(unlabeled_minutes=0.6, train_1min_minutes=0.1, train_10min_minutes=0.2,
                    train_1h_minutes=0.3, valid_minutes=0.2, test_minutes=0.2)  # fmt: skip


@pytest.fixture(scope="module")
def diverse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diverse") / "c"
    build_corpus(out, seed=0, workers=2, diversity="diverse", **DIVERSE_TINY)
    return out


def _meta(corpus: Path) -> dict[str, dict]:
    return {(d := json.loads(x))["path"]: d for x in (corpus / "utterances.jsonl").read_text().splitlines()}


def test_diverse_corpus_records_and_applies_diversity(diverse):
    meta = _meta(diverse)
    unl = [meta[p] for p in read_manifest(diverse / "unlabeled.tsv").paths]
    preset = DIVERSITY_PRESETS["diverse"]
    assert {d["speed"] for d in unl} <= set(preset.speed_factors) and len({d["speed"] for d in unl}) > 1
    assert any(d["rt60_s"] is not None for d in unl) and any(d["rt60_s"] is None for d in unl)
    for d in unl:
        if d["rt60_s"] is not None:
            assert (
                preset.rt60_s[0] <= d["rt60_s"] <= preset.rt60_s[1]
                and preset.drr_db[0] <= d["drr_db"] <= preset.drr_db[1]
            )
        if d["snr_db"] is not None:
            assert (
                preset.snr_db[0] <= d["snr_db"] <= preset.snr_db[1]
                and d["noise_color"] in preset.noise_colors
            )
        assert preset.tilt_db_per_octave[0] <= d["tilt_db"] <= preset.tilt_db_per_octave[1]
    assert any(d["variant"] in EXTRA_VARIANTS for d in unl)
    # valid, test and the labeled splits are untouched by the "diverse" preset
    for d in meta.values():
        if d["pool"] != "unlabeled":
            assert (
                d["speed"] == 1.0
                and d["tilt_db"] == 0.0
                and d["rt60_s"] is None
                and d["noise_color"] == "white"
            )
            assert d["variant"] not in EXTRA_VARIANTS
    info = json.loads((diverse / "corpus.json").read_text())
    assert info["settings"]["diversity"]["pools"] == ["unlabeled"]
    applied = info["diversity_applied"]["unlabeled"]
    assert applied["utterances"] == len(unl) and applied["reverb"] == sum(
        d["rt60_s"] is not None for d in unl
    )
    assert info["diversity_applied"]["test"]["reverb"] == 0


def test_diverse_noise_snr_measured_from_the_clean_signal(diverse, synth):
    """Re-render noisy unlabeled utterances without their noise; the file minus that is the noise."""
    meta = _meta(diverse)
    fields = set(UtteranceSpec.__dataclass_fields__)
    checked = 0
    for d in meta.values():
        if d["pool"] != "unlabeled" or d["snr_db"] is None or checked >= 4:
            continue
        spec = UtteranceSpec(**{k: v for k, v in d.items() if k in fields})
        clean = render_utterance(dataclasses.replace(spec, snr_db=None), synth).astype(np.float64)
        wave, _ = sf.read(str(diverse / d["path"]), dtype="float64")
        gain = float(wave @ clean / (clean @ clean))  # 1 unless the sum was scaled below full scale
        noise = wave / gain - clean
        lead = round(spec.lead_s * 16000)
        n_speech = round((clean.shape[0] - lead - round(spec.tail_s * 16000) - (
            round(spec.rt60_s * 16000) - 1 if spec.rt60_s is not None else 0)))  # fmt: skip
        snr = 10 * math.log10(_power(clean[lead : lead + n_speech]) / _power(noise))
        assert abs(snr - spec.snr_db) < 0.5, (d["path"], snr, spec.snr_db)
        assert 5.0 - 0.5 < snr < 30.0 + 0.5
        checked += 1
    assert checked == 4


def test_diverse_corpus_keeps_valid_test_and_train_as_plain(diverse, corpus):
    """The "diverse" preset changes the unlabeled pool only: valid/test/train audio are the plain build's."""
    for split in ("test", "valid", "train_1min"):
        a, b = read_manifest(corpus / f"{split}.tsv"), read_manifest(diverse / f"{split}.tsv")
        assert a.paths == b.paths
        for p in a.paths:
            assert (corpus / p).read_bytes() == (diverse / p).read_bytes(), p


def test_diverse_corpus_speakers_and_sentences_are_disjoint(diverse):
    meta = _meta(diverse)
    by_split = {
        s: [meta[p] for p in read_manifest(diverse / f"{s}.tsv").paths] for s in ("unlabeled",) + LABELED
    }
    heard = {s: {d["speaker"] for d in rows} for s, rows in by_split.items()}
    said = {s: {d["transcript"] for d in rows} for s, rows in by_split.items()}
    for held_out in ("valid", "test"):
        for seen in ("unlabeled", "train_1min", "train_10min", "train_1h"):
            assert not heard[held_out] & heard[seen], (held_out, seen)
            assert not said[held_out] & said[seen], (held_out, seen)
    assert not heard["valid"] & heard["test"]
    assert not said["unlabeled"] & said["train_1h"]
    texts = [d["transcript"] for d in meta.values()]
    assert len(texts) == len(set(texts))
    info = json.loads((diverse / "corpus.json").read_text())
    sets = info["speaker_sets"]
    assert not (set(sets["unlabeled"]) | set(sets["train"])) & (set(sets["valid"]) | set(sets["test"]))
    assert len(sets["unlabeled"]) == len(sets["train"]) + len(make_extra_speakers(0))


def test_diverse_corpus_is_deterministic_across_workers(diverse, tmp_path):
    again = tmp_path / "again"
    build_corpus(again, seed=0, workers=1, diversity="diverse", **DIVERSE_TINY)
    assert (again / "utterances.jsonl").read_bytes() == (diverse / "utterances.jsonl").read_bytes()
    for split in ("unlabeled",) + LABELED:
        a = read_manifest(diverse / f"{split}.tsv")
        assert a.paths == read_manifest(again / f"{split}.tsv").paths
        for p in a.paths:
            assert (diverse / p).read_bytes() == (again / p).read_bytes(), p


def test_diverse_train_preset_and_idempotence(tmp_path, capsys):
    out = tmp_path / "c"
    small = dict(unlabeled_minutes=0.1, train_1min_minutes=0.1, train_10min_minutes=0.1, train_1h_minutes=0.2,
                 valid_minutes=0.05, test_minutes=0.05)  # fmt: skip
    build_corpus(out, seed=2, workers=1, diversity="diverse_train", **small)
    meta = _meta(out)
    train = [d for d in meta.values() if d["pool"] == "train"]
    assert any(d["speed"] != 1.0 or d["rt60_s"] is not None for d in train)
    assert not any(d["variant"] in EXTRA_VARIANTS for d in train)  # extra speakers: unlabeled only
    assert all(
        d["rt60_s"] is None and d["speed"] == 1.0 for d in meta.values() if d["pool"] in ("valid", "test")
    )
    capsys.readouterr()
    build_corpus(out, seed=2, workers=1, diversity="diverse_train", **small)
    assert "up to date" in capsys.readouterr().out
    # another diversity is another corpus
    build_corpus(out, seed=2, workers=1, diversity={"preset": "diverse_train", "reverb_prob": 1.0}, **small)
    assert "up to date" not in capsys.readouterr().out
    assert all(d["rt60_s"] is not None for d in _meta(out).values() if d["pool"] == "train")


def test_exhausted_sentences_ask_for_fewer_minutes(tmp_path, monkeypatch):
    """When the sentence space runs out the build stops with a clear error and leaves no corpus.json."""
    from wav2vec2_lite.corpus import plan as plan_mod

    fixed = Sentence(text="turn the lights on.", transcript="TURN THE LIGHTS ON", kind="domain")
    monkeypatch.setattr(plan_mod.SentenceGenerator, "sample", lambda self: fixed)
    with pytest.raises(RuntimeError, match="ask for fewer minutes"):
        build_corpus(tmp_path, seed=0, workers=1, **TINY)
    assert not (tmp_path / "corpus.json").exists()


def test_extra_speakers_never_in_valid_or_test():
    extra = make_extra_speakers(0)
    assert len(extra) == 8 * len(EXTRA_VARIANTS) and len({s.id for s in extra}) == len(extra)
    assert not {s.variant for s in extra} & {
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
        "m6",
        "m7",
        "f1",
        "f2",
        "f3",
        "f4",
        "f5",
    }
    assert make_extra_speakers(0) == extra and make_extra_speakers(1) != extra


def test_ten_hours_of_diverse_unlabeled_audio_can_be_planned():
    """A dry run of the planner (no audio) for the --full sizes with the "diverse" preset:
    10 h of unlabeled audio gets new sentences and 800 speakers, none of valid/test's."""
    report = plan_capacity(unlabeled_minutes=600, diversity="diverse")
    unl = report["unlabeled"]
    assert unl["utterances"] >= 600 * 60 / 2.5 and unl["speakers"] == 72 + len(make_extra_speakers(0))
    assert unl["max_per_speaker"] <= 20
    assert report["sentences"] == sum(
        report[p]["utterances"] for p in ("test", "valid", "train", "unlabeled")
    )
    assert report["test"]["speakers"] == report["valid"]["speakers"] == 12


def test_plan_capacity_stops_like_the_build(monkeypatch):
    from wav2vec2_lite.corpus import plan as plan_mod

    fixed = Sentence(text="turn the lights on.", transcript="TURN THE LIGHTS ON", kind="domain")
    monkeypatch.setattr(plan_mod.SentenceGenerator, "sample", lambda self: fixed)
    with pytest.raises(RuntimeError, match="ask for fewer minutes"):
        plan_capacity(unlabeled_minutes=1.0)
