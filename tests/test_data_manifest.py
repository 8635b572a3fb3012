"""Manifest, label and dictionary files: round trips and errors that name file:line."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wav2vec2_lite.data.manifest import (
    ManifestError,
    build_manifests,
    count_symbols,
    ltr_to_text,
    read_dictionary,
    read_labels,
    read_manifest,
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)


def test_manifest_round_trip(tmp_path: Path) -> None:
    rows = [("a/x.wav", 16000), ("b y.flac", 400), ("c.wav", 0)]
    write_manifest(tmp_path / "train.tsv", "/data/root", rows)
    text = (tmp_path / "train.tsv").read_text()
    assert text == "/data/root\na/x.wav\t16000\nb y.flac\t400\nc.wav\t0\n"
    m = read_manifest(tmp_path / "train.tsv")
    assert m.root == Path("/data/root")
    assert list(zip(m.paths, m.sizes)) == rows
    assert m.line_numbers == [2, 3, 4]
    assert len(m) == 3 and m.full_path(0) == Path("/data/root/a/x.wav")


@pytest.mark.parametrize(
    "body, needle",
    [
        ("a.wav 100\n", "2 tab-separated fields"),
        ("a.wav\tabc\n", "must be an integer"),
        ("a.wav\t-3\n", ">= 0"),
        ("a.wav\t1\t2\n", "found 3 field"),
        ("\t5\n", "empty path"),
    ],
)
def test_manifest_malformed_line_names_file_and_line(tmp_path: Path, body: str, needle: str) -> None:
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("/root\nok.wav\t10\n" + body)
    with pytest.raises(ManifestError) as e:
        read_manifest(tsv)
    assert f"{tsv}:3" in str(e.value) and needle in str(e.value)


def test_manifest_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ManifestError, match=r"empty.tsv:1: expected the root folder"):
        read_manifest(tmp_path / "empty.tsv")


def test_labels_round_trip_keeps_empty_lines(tmp_path: Path) -> None:
    lines = ["H E L L O |", "", "W O R L D |", ""]
    write_labels(tmp_path / "x.ltr", lines)
    assert read_labels(tmp_path / "x.ltr") == lines
    with pytest.raises(ManifestError, match="newline"):
        write_labels(tmp_path / "y.ltr", ["a\nb"])


def test_dictionary_round_trip_sorted_by_count(tmp_path: Path) -> None:
    counts = count_symbols([text_to_ltr("hello world"), text_to_ltr("low")])
    assert counts == {"H": 1, "E": 1, "L": 4, "O": 3, "|": 3, "W": 2, "R": 1, "D": 1}
    write_dictionary(tmp_path / "dict.ltr.txt", counts)
    lines = (tmp_path / "dict.ltr.txt").read_text().splitlines()
    assert lines[:3] == ["L 4", "O 3", "| 3"]
    assert read_dictionary(tmp_path / "dict.ltr.txt") == ["L", "O", "|", "W", "D", "E", "H", "R"]


def test_dictionary_errors_name_line(tmp_path: Path) -> None:
    p = tmp_path / "dict.ltr.txt"
    p.write_text("A 5\nB x\n")
    with pytest.raises(ManifestError, match=r"dict.ltr.txt:2: count must be an integer"):
        read_dictionary(p)
    p.write_text("A 5\nA 3\n")
    with pytest.raises(ManifestError, match=r":2: duplicate symbol 'A' \(first on line 1\)"):
        read_dictionary(p)
    p.write_text("<unk> 1 #fairseq:overwrite\nA 2\n")
    assert read_dictionary(p) == ["<unk>", "A"]


def test_text_to_ltr() -> None:
    assert text_to_ltr("hello world") == "H E L L O | W O R L D |"
    assert text_to_ltr("  it's   ok ") == "I T ' S | O K |"
    assert text_to_ltr("   ") == ""
    assert ltr_to_text("H E L L O | W O R L D |") == "HELLO WORLD"


def _write_wav(path: Path, n: int, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(n, dtype=np.float32), sr, subtype="PCM_16")


def test_build_manifests_deterministic_split(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    for i in range(20):
        _write_wav(audio / f"spk{i % 3}" / f"utt{i:02d}.wav", 100 + i)
    (audio / "notes.txt").write_text("not audio")
    counts = build_manifests(audio, tmp_path / "m1", ext="wav", valid_percent=0.3, seed=1)
    build_manifests(audio, tmp_path / "m2", ext=".wav", valid_percent=0.3, seed=1)
    assert counts["train"] + counts["valid"] == 20 and counts["valid"] > 0
    for split in ("train", "valid"):
        assert (tmp_path / "m1" / f"{split}.tsv").read_text() == (
            tmp_path / "m2" / f"{split}.tsv"
        ).read_text()
    tr, va = read_manifest(tmp_path / "m1" / "train.tsv"), read_manifest(tmp_path / "m1" / "valid.tsv")
    assert tr.root == audio.resolve()
    allrows = dict(zip(tr.paths + va.paths, tr.sizes + va.sizes))
    assert allrows["spk1/utt04.wav"] == 104 and len(allrows) == 20
    build_manifests(audio, tmp_path / "m3", valid_percent=0.3, seed=2)
    assert (tmp_path / "m3" / "valid.tsv").read_text() != (tmp_path / "m1" / "valid.tsv").read_text()


def test_build_manifests_no_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no \*.flac files"):
        build_manifests(tmp_path, tmp_path / "out", ext="flac")
