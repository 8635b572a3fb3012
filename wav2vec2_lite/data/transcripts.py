"""Transcripts for ``w2v2-manifest``: read from a CSV/TSV table, LibriSpeech ``*.trans.txt`` files
or a sidecar ``.txt``/``.lab`` per audio file, and normalised to the letter set of the CTC
dictionary (:func:`normalize_transcript`). Duplicate keys with different text are an error naming
both lines; a UTF-8 byte-order mark is not text.
"""

from __future__ import annotations

import csv
import unicodedata
from collections import Counter
from pathlib import Path

from wav2vec2_lite.data.manifest import ManifestError

__all__ = [
    "DEFAULT_CHARSET",
    "normalize_transcript",
    "read_transcripts",
    "librispeech_transcripts",
    "sidecar_transcript",
    "lookup_transcript",
    "read_text_lines",
]

DEFAULT_CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
_PATH_COLUMNS = ("path", "file", "filename", "file_name", "audio", "audio_path", "wav", "id", "utterance_id")
_TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text", "label")
_SEPARATORS = set("-‐‑‒–—_/")
_APOSTROPHES = {"’": "'", "‘": "'", "ʼ": "'", "`": "'"}


def normalize_transcript(text: str, charset: str = DEFAULT_CHARSET) -> tuple[str, Counter]:
    """``text`` reduced to ``charset`` (words separated by single spaces) and the characters dropped.

    Accents are stripped (``é`` -> ``E``), typographic apostrophes become ``'``, dashes,
    underscores and slashes separate words; text is upper-cased unless ``charset`` has
    lower-case letters.
    """
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c))
    if not any(c.islower() for c in charset):
        t = t.upper()
    out, dropped = [], Counter()
    for c in t:
        c = _APOSTROPHES.get(c, c)
        if c in charset:
            out.append(c)
        elif c.isspace() or c in _SEPARATORS:
            out.append(" ")
        else:
            dropped[c] += 1
    return " ".join("".join(out).split()), dropped


def read_text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: a byte-order mark is not text
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read ({e.strerror or e})") from None


def read_transcripts(path: str | Path) -> dict[str, str]:
    """``{path or id: text}`` from a ``path<TAB>text`` file or a CSV with a header (see module docstring)."""
    path = Path(path)
    lines = read_text_lines(path)
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(lines))
        if not rows:
            raise ManifestError(f"{path}: empty CSV")
        header = [h.strip().lower() for h in rows[0]]
        key = next((header.index(c) for c in _PATH_COLUMNS if c in header), None)
        val = next((header.index(c) for c in _TEXT_COLUMNS if c in header), None)
        if key is None or val is None:
            raise ManifestError(
                f"{path}: the CSV header {rows[0]} needs a path column (one of {list(_PATH_COLUMNS)}) "
                f"and a text column (one of {list(_TEXT_COLUMNS)})"
            )
        table = _Table(path)
        for n, row in enumerate(rows[1:], start=2):
            if len(row) <= max(key, val):
                raise ManifestError(f"{path}:{n}: expected {len(header)} columns, found {len(row)}")
            table.add(row[key].strip(), row[val], n)
        return table.result()
    table = _Table(path)
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, sep, text = line.partition("\t")
        if not sep:
            raise ManifestError(f"{path}:{n}: expected 'path<TAB>text', found {line[:60]!r}")
        table.add(name.strip(), text, n)
    return table.result()


class _Table:
    """``{key: text}`` of one transcript file; a key given twice with different texts is an error
    naming both lines (the same text twice is kept once)."""

    def __init__(self, path: Path) -> None:
        self.path, self.texts, self.lines, self.clashes = path, {}, {}, []

    def add(self, key: str, text: str, line: int) -> None:
        if key in self.texts and self.texts[key].strip() != text.strip():
            self.clashes.append(
                f"{self.path}:{line}: {key!r} has another transcript on line {self.lines[key]} "
                f"({self.texts[key].strip()[:40]!r} vs {text.strip()[:40]!r})"
            )
            return
        self.texts.setdefault(key, text)
        self.lines.setdefault(key, line)

    def result(self) -> dict[str, str]:
        if self.clashes:
            shown = "\n  ".join(self.clashes[:20]) + (
                f"\n  ... and {len(self.clashes) - 20} more" if len(self.clashes) > 20 else ""
            )
            raise ManifestError(
                f"{len(self.clashes)} key(s) with two different transcripts (which one is right?); keep "
                f"one line per key:\n  {shown}"
            )
        return self.texts


def librispeech_transcripts(root: Path) -> dict[str, str]:
    """``{folder/ID: text}`` from every ``*.trans.txt`` under ``root``."""
    out = {}
    for tf in sorted(root.rglob("*.trans.txt")):
        table = _Table(tf)
        for n, line in enumerate(read_text_lines(tf), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            if not text:
                raise ManifestError(f"{tf}:{n}: expected 'UTTERANCE-ID TEXT', found {line[:60]!r}")
            table.add((tf.parent.relative_to(root) / uid).as_posix(), text, n)
        out.update(table.result())
    return out


def sidecar_transcript(audio: Path) -> Path | None:
    for ext in (".txt", ".lab"):
        p = audio.with_suffix(ext)
        if p.is_file():
            return p
    return None


def lookup_transcript(table: dict[str, str], root: Path, audio: Path) -> tuple[str, str] | None:
    """The transcript table's key and text for ``audio``: relative path, absolute path, path without
    extension, or stem."""
    rel = audio.relative_to(root).as_posix()
    for key in (rel, str(audio), rel.rsplit(".", 1)[0], audio.stem):
        if key in table:
            return key, table[key]
    return None
