"""Demo corpus: eSpeak NG synthesis, sentences, transcript normalisation, the corpus build."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from wav2vec2_lite.corpus import (  # noqa: E402
    SentenceGenerator,
    SynthesisError,
    Synthesizer,
    UtteranceSpec,
    build_corpus,
    normalize_transcript,
    number_to_words,
    render_utterance,
)
from wav2vec2_lite.corpus.sentences import MAX_WORDS, MIN_WORDS  # noqa: E402
from wav2vec2_lite.data.manifest import (  # noqa: E402
    ltr_to_text,
    read_dictionary,
    read_labels,
    read_manifest,
    text_to_ltr,
)

LABELED = ("train_10min", "train_1h", "valid", "test")
TINY = dict(unlabeled_minutes=0.3, train_10min_minutes=0.2, train_1h_minutes=0.3, valid_minutes=0.2,
            test_minutes=0.2)  # fmt: skip


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
        ("1,250 people, 3.14 and 50%", "ONE THOUSAND TWO HUNDRED FIFTY PEOPLE THREE POINT ONE FOUR AND FIFTY PERCENT"),
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
    spk = {s: {speaker[p] for p in read_manifest(corpus / f"{s}.tsv").paths} for s in ("unlabeled",) + LABELED}
    train = spk["train_10min"] | spk["train_1h"]
    assert not spk["test"] & train and not spk["test"] & spk["valid"] and not spk["test"] & spk["unlabeled"]
    assert not spk["valid"] & train
    # train_1h starts with train_10min (Libri-light), no audio is shared with other splits
    ten, hour = read_manifest(corpus / "train_10min.tsv"), read_manifest(corpus / "train_1h.tsv")
    assert hour.paths[: len(ten.paths)] == ten.paths and len(hour.paths) > len(ten.paths)
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
