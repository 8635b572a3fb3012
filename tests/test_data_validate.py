"""validate_dataset: every bad row is reported with manifest:line and its file."""

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.manifest import (
    count_symbols,
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.data.validate import ctc_min_frames, num_frames, validate_dataset

SR = 16000


def _wave(n: int, channels: int = 1) -> np.ndarray:
    x = np.random.default_rng(n).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def _make(tmp_path: Path):
    """Rows: (rel path, manifest size, transcript, expected message or None)."""
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(str(d / "good1.wav"), _wave(8000), SR, subtype="FLOAT")
    sf.write(str(d / "good2.flac"), _wave(3000), SR)
    (d / "empty.wav").write_bytes(b"")
    sf.write(str(d / "cut.wav"), _wave(4000), SR, subtype="PCM_16")
    (d / "cut.wav").write_bytes((d / "cut.wav").read_bytes()[:3000])
    (d / "text.wav").write_text("not audio\n" * 50)
    nan = _wave(4000)
    nan[7] = np.nan
    sf.write(str(d / "nan.wav"), nan, SR, subtype="FLOAT")
    sf.write(str(d / "stereo.wav"), _wave(4000, 2), SR, subtype="FLOAT")
    sf.write(str(d / "8k.wav"), _wave(4000), 8000, subtype="FLOAT")
    sf.write(str(d / "short.wav"), _wave(300), SR, subtype="FLOAT")
    sf.write(str(d / "long.wav"), _wave(40000), SR, subtype="FLOAT")
    sf.write(str(d / "sizebad.wav"), _wave(4000), SR, subtype="FLOAT")
    sf.write(str(d / "notext.wav"), _wave(4000), SR, subtype="FLOAT")
    sf.write(str(d / "badchar.wav"), _wave(4000), SR, subtype="FLOAT")
    sf.write(str(d / "ctc.wav"), _wave(1000), SR, subtype="FLOAT")
    rows = [
        ("good1.wav", 8000, "hello world", None),
        ("good2.flac", 3000, "low", None),
        ("missing.wav", 4000, "hello", "audio file not found"),
        ("empty.wav", 4000, "hello", "file is empty (0 bytes)"),
        ("cut.wav", 4000, "hello", "truncated WAV"),
        ("text.wav", 4000, "hello", "not a readable audio file"),
        ("nan.wav", 4000, "hello", "1 NaN/inf sample(s), first at sample 7"),
        ("stereo.wav", 4000, "hello", "has 2 channels, expected mono"),
        ("8k.wav", 4000, "hello", "sample rate is 8000 Hz, expected 16000 Hz"),
        ("short.wav", 300, "he", "300 samples is shorter than min_sample_size=400"),
        ("long.wav", 40000, "hello", "2.5 s is longer than max_duration_s=2.0"),
        ("sizebad.wav", 5000, "hello", "manifest says 5000 samples, the file header says 4000"),
        ("notext.wav", 4000, "", "empty transcript"),
        ("badchar.wav", 4000, "hello wörld", "'Ö'"),
        ("ctc.wav", 1000, "hello hello", "transcript needs 14 CTC frames"),
        ("good1.wav", 8000, "hello world", "duplicate of line 2"),
    ]
    write_manifest(tmp_path / "train.tsv", d, [(r, n) for r, n, _, _ in rows])
    write_labels(tmp_path / "train.wrd", [t.upper() for _, _, t, _ in rows])
    write_dictionary(tmp_path / "dict.ltr.txt", count_symbols([text_to_ltr("hello world")]))
    return d, rows


def test_every_problem_reported(tmp_path: Path) -> None:
    d, rows = _make(tmp_path)
    tok = CharTokenizer.from_dictionary(tmp_path / "dict.ltr.txt")
    kw = dict(labels_path=tmp_path / "train.wrd", tokenizer=tok, max_duration_s=2.0)
    with pytest.raises(DatasetError) as e:
        validate_dataset(tmp_path / "train.tsv", **kw)
    msg = str(e.value)
    assert "skip_invalid=True" in msg and "2 valid rows" in msg
    for i, (rel, _, _, expected) in enumerate(rows):
        if expected is not None:
            line = f"{tmp_path / 'train.tsv'}:{i + 2}: {d / rel}: "
            assert any(ln.strip().startswith(line.strip()) and expected in ln for ln in msg.splitlines()), (
                rel,
                expected,
                msg,
            )

    report = validate_dataset(tmp_path / "train.tsv", skip_invalid=True, **kw)
    assert (
        report.valid_indices == [0, 1]
        and report.num_rows == len(rows)
        and report.num_invalid == len(rows) - 2
    )
    assert {p.line_no for p in report.problems} == {i + 2 for i, r in enumerate(rows) if r[3] is not None}
    for i, (rel, _, _, expected) in enumerate(rows):
        if expected is not None:
            assert any(
                p.line_no == i + 2 and p.path == str(d / rel) and expected in p.message
                for p in report.problems
            ), (rel, expected)


def test_skip_invalid_subset_trains(tmp_path: Path, caplog) -> None:
    _make(tmp_path)
    with caplog.at_level(logging.WARNING):
        report = validate_dataset(
            tmp_path / "train.tsv", labels_path=tmp_path / "train.wrd", skip_invalid=True
        )
    assert "skipping" in caplog.text and "train.tsv" in caplog.text
    # without a tokenizer or max_duration_s: long.wav, badchar.wav and ctc.wav are fine
    assert report.valid_indices == [0, 1, 10, 13, 14]
    report.write_subset(tmp_path / "clean.tsv", tmp_path / "clean.wrd")
    ds = AudioDataset(tmp_path / "clean.tsv", labels_path=tmp_path / "clean.wrd")
    assert len(ds) == 5 and ds[1]["text"] == "LOW" and ds[2]["waveform"].shape == (40000,)
    validate_dataset(tmp_path / "clean.tsv", labels_path=tmp_path / "clean.wrd")  # no error now
    ds2 = AudioDataset(tmp_path / "train.tsv", indices=report.valid_indices)
    assert ds2.rows == report.valid_indices


def test_header_only_mode_skips_sample_checks(tmp_path: Path) -> None:
    _make(tmp_path)
    report = validate_dataset(tmp_path / "train.tsv", skip_invalid=True, check_audio=False)
    assert not any("NaN" in p.message for p in report.problems)
    assert any("truncated WAV" in p.message for p in report.problems)  # a header check


def test_malformed_lines_and_count_mismatch(tmp_path: Path) -> None:
    d, _ = _make(tmp_path)
    tsv = tmp_path / "bad.tsv"
    tsv.write_text(f"{d}\ngood1.wav\t8000\ngood2.flac 3000\ngood2.flac\tx\n")
    with pytest.raises(DatasetError) as e:
        validate_dataset(tsv)
    msg = str(e.value)
    assert f"{tsv}:3: -: malformed manifest line" in msg and f"{tsv}:4: -: malformed" in msg
    report = validate_dataset(tsv, skip_invalid=True)
    assert report.valid_indices == [0]
    write_labels(tmp_path / "bad.ltr", ["A |"])
    with pytest.raises(DatasetError, match=r"bad.ltr has 1 lines but .*bad.tsv has 3 rows"):
        validate_dataset(tsv, labels_path=tmp_path / "bad.ltr", skip_invalid=True)


def test_frame_helpers() -> None:
    assert num_frames(400) == 1 and num_frames(399) == 0 and num_frames(16000) == 49
    assert ctc_min_frames([5, 5, 6, 6, 6]) == 5 + 3
