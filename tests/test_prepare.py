"""w2v2-manifest: audio + transcripts -> manifests, labels, dictionary; splits; bad files; the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wav2vec2_lite.cli import manifest
from wav2vec2_lite.data.manifest import (
    ManifestError,
    read_dictionary,
    read_labels,
    read_manifest,
    text_to_ltr,
)
from wav2vec2_lite.data.prepare import normalize_transcript, prepare_dataset, read_transcripts


def _wav(path: Path, n: int = 1600, sr: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    data = (0.1 * rng.standard_normal((n, channels))).astype(np.float32)
    sf.write(str(path), data if channels > 1 else data[:, 0], sr)
    return path


def _rows(dest: Path, split: str) -> list[tuple[str, str, str]]:
    """(relative path, .wrd line, .ltr line) of each row of a written split."""
    m = read_manifest(dest / f"{split}.tsv")
    return list(zip(m.paths, read_labels(dest / f"{split}.wrd"), read_labels(dest / f"{split}.ltr")))


def test_transcripts_are_normalised_to_the_character_set_and_the_drops_counted():
    text, dropped = normalize_transcript("Héllo,  wörld — it’s 42!")
    assert text == "HELLO WORLD IT'S"
    assert dropped == {",": 1, "4": 1, "2": 1, "!": 1}
    assert (
        normalize_transcript("naïve café", "abcdefghijklmnopqrstuvwxyz ")[0] == "naive cafe"
    )  # lower-case set
    assert normalize_transcript("...")[0] == ""


def test_tsv_transcripts_with_a_bom_give_aligned_labels_a_dictionary_and_a_report(tmp_path):
    audio = tmp_path / "audio"
    texts = {f"spk{i % 2}/u{i}.wav": f"word{'ab'[i % 2]} number {i}" for i in range(10)}
    for rel in texts:
        _wav(audio / rel)
    _wav(audio / "spk0" / "loud.wav", sr=8000)  # named by its stem in the file below
    lines = [f"{rel}\t{t}" for rel, t in texts.items()] + ["loud\tLoud One", "ghost.wav\tnobody"]
    (tmp_path / "t.tsv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    dest = tmp_path / "out"
    report = prepare_dataset(
        audio, dest, transcripts=tmp_path / "t.tsv", valid_percent=0.2, test_percent=0.1, seed=3
    )
    assert {k: v["files"] for k, v in report.splits.items()} == {"train": 8, "valid": 2, "test": 1}
    expected = {**{rel: normalize_transcript(t)[0] for rel, t in texts.items()}, "spk0/loud.wav": "LOUD ONE"}
    seen = []
    for split in ("train", "valid", "test"):
        for rel, wrd, ltr in _rows(dest, split):
            assert wrd == expected[rel] and ltr == text_to_ltr(wrd)
            seen.append(rel)
    assert sorted(seen) == sorted(expected)
    assert read_manifest(dest / "train.tsv").root == audio.resolve()
    assert set(read_dictionary(dest / "dict.ltr.txt")) == set("|WORDABNUMEBLOE")
    assert report.dropped_characters == {str(i): 1 for i in range(10)}
    assert report.transcripts_without_audio == 1 and report.not_16k == 1
    saved = json.loads((dest / "prepare_report.json").read_text())
    assert saved["splits"]["valid"]["files"] == 2 and saved["transcript_source"] == str(tmp_path / "t.tsv")
    again = tmp_path / "again"
    prepare_dataset(audio, again, transcripts=tmp_path / "t.tsv", valid_percent=0.2, test_percent=0.1, seed=3)
    assert (again / "valid.tsv").read_text() == (dest / "valid.tsv").read_text()  # deterministic per seed


def test_csv_librispeech_and_sidecar_transcripts(tmp_path):
    csv_audio = tmp_path / "csv"
    for i in range(4):
        _wav(csv_audio / f"clip{i}.flac")
    (tmp_path / "meta.csv").write_text(
        "\ufeffFile,Sentence,age\n"
        + "".join(f'clip{i}.flac,"Hello, there {"x" * (i + 1)}",30\n' for i in range(4)),
        encoding="utf-8",
    )
    prepare_dataset(csv_audio, tmp_path / "o1", transcripts=tmp_path / "meta.csv", valid_percent=0.25)
    assert sorted(w for _, w, _ in _rows(tmp_path / "o1", "train") + _rows(tmp_path / "o1", "valid")) == [
        f"HELLO THERE {'X' * (i + 1)}" for i in range(4)
    ]

    libri = tmp_path / "LibriSpeech" / "dev"
    for spk in ("19", "26", "32"):
        chapter = libri / spk / "100"
        for j in range(3):
            _wav(chapter / f"{spk}-100-{j:04d}.flac")
        (chapter / f"{spk}-100.trans.txt").write_text(
            "".join(f"{spk}-100-{j:04d} SPEAKER {spk} SAYS {j}\n" for j in range(3))
        )
    report = prepare_dataset(
        libri, tmp_path / "o2", valid_percent=0.3, test_percent=0.3, speaker_disjoint=True
    )
    assert report.transcript_source == "LibriSpeech *.trans.txt"
    speakers = {
        split: {rel.split("/")[0] for rel, _, _ in _rows(tmp_path / "o2", split)}
        for split in ("train", "valid", "test")
    }
    assert all(len(s) == 1 for s in speakers.values()) and len(set.union(*speakers.values())) == 3
    for rel, wrd, _ in _rows(tmp_path / "o2", "valid"):
        assert wrd == "SPEAKER SAYS"  # digits are outside the character set: dropped

    side = tmp_path / "side"
    for i, ext in enumerate((".txt", ".lab", ".txt")):
        _wav(side / f"s{i}.wav")
        (side / f"s{i}").with_suffix(ext).write_text(f"line {i}\nand more\n")
    prepare_dataset(side, tmp_path / "o3", valid_percent=0)
    assert not (tmp_path / "o3" / "valid.tsv").exists()
    assert [w for _, w, _ in _rows(tmp_path / "o3", "train")] == ["LINE AND MORE"] * 3


def test_unlabelled_audio_gives_manifests_only(tmp_path):
    for i in range(5):
        _wav(tmp_path / "a" / f"{i}.ogg")
    report = prepare_dataset(tmp_path / "a", tmp_path / "o", valid_percent=0.2)
    assert not report.labelled and sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "prepare_report.json",
        "train.tsv",
        "valid.tsv",
    ]
    assert len(read_manifest(tmp_path / "o" / "train.tsv")) == 4


def test_bad_files_stop_it_naming_each_or_are_skipped_and_listed(tmp_path, capsys):
    audio = tmp_path / "audio"
    for i in range(6):
        _wav(audio / f"good{i}.wav")
    (audio / "empty.wav").write_bytes(b"")
    (audio / "text.wav").write_text("not audio at all")
    _wav(audio / "untranscribed.wav")
    _wav(audio / "punct.wav")
    (tmp_path / "t.tsv").write_text(
        "".join(f"good{i}.wav\tgood {i}\n" for i in range(6)) + "empty.wav\tx\ntext.wav\tx\npunct.wav\t?!\n"
    )
    with pytest.raises(ManifestError) as e:
        prepare_dataset(audio, tmp_path / "out", transcripts=tmp_path / "t.tsv")
    message = str(e.value)
    assert message.startswith("4 of 10 files cannot be used (pass --skip-bad to skip them)")
    for name, reason in (
        ("empty", "file is empty"),
        ("text", "not a readable audio file"),
        ("untranscribed", "no transcript"),
        ("punct", "transcript empty after normalisation"),
    ):
        assert f"{audio.resolve() / name}.wav: {reason}" in message, name
    assert not (tmp_path / "out").exists()  # nothing half-written

    with pytest.raises(SystemExit) as code:
        manifest(
            [
                str(audio),
                "--dest",
                str(tmp_path / "out"),
                "--transcripts",
                str(tmp_path / "t.tsv"),
                "--skip-bad",
                "--valid-percent",
                "0.2",
            ]
        )
    assert code.value.code == 1
    out, err = capsys.readouterr()
    assert (
        err.count("w2v2-manifest: skipped ") == 4
        and err.splitlines()[-1] == "w2v2-manifest: 4 of 10 files skipped"
    )
    assert "train: 5 files" in out and "valid: 1 files" in out
    assert len(json.loads((tmp_path / "out" / "prepare_report.json").read_text())["skipped"]) == 4


def test_an_empty_split_and_bad_options_are_one_line_errors(tmp_path, capsys):
    for i in range(9):
        _wav(tmp_path / "a" / f"{i}.wav")
    with pytest.raises(
        ManifestError, match=r"the valid split would be empty: 0.01 of 9 files is less than one"
    ):
        prepare_dataset(tmp_path / "a", tmp_path / "o", valid_percent=0.01)
    for argv, expected in (
        (["--valid-percent", "0.01"], "the valid split would be empty"),
        (["--speaker-disjoint"], "needs one folder per speaker"),
        (["--speaker-pattern", "("], "not a regular expression"),
        (["--valid-percent", "1.5"], "must be in [0, 1]"),
    ):
        with pytest.raises(SystemExit) as code:
            manifest([str(tmp_path / "a"), "--dest", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert code.value.code == 2 and err.count("\n") == 1 and expected in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_speaker_disjoint_split_needs_enough_speakers(tmp_path):
    for spk in ("a", "b"):
        for i in range(3):
            _wav(tmp_path / "d" / spk / f"{i}.wav")
    with pytest.raises(ManifestError, match="needs at least 3 speakers; found 2"):
        prepare_dataset(
            tmp_path / "d", tmp_path / "o", valid_percent=0.2, test_percent=0.2, speaker_disjoint=True
        )
    report = prepare_dataset(tmp_path / "d", tmp_path / "o", valid_percent=0.2, speaker_disjoint=True)
    assert report.splits["train"]["speakers"] == report.splits["valid"]["speakers"] == 1


def test_read_transcripts_names_the_line_or_the_missing_columns(tmp_path):
    (tmp_path / "bad.tsv").write_text("a.wav\thello\nno tab here\n")
    with pytest.raises(ManifestError, match=r"bad.tsv:2: expected 'path<TAB>text'"):
        read_transcripts(tmp_path / "bad.tsv")
    (tmp_path / "bad.csv").write_text("name,words\nx,y\n")
    with pytest.raises(ManifestError, match="needs a path column"):
        read_transcripts(tmp_path / "bad.csv")
