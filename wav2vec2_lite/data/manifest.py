"""fairseq-style manifests, label files and dictionaries.

Formats (as fairseq's ``examples/wav2vec`` scripts write them):

* ``train.tsv``: first line the root folder, then ``relative/path<TAB>num_samples``.
* ``train.ltr``: one line per manifest row, characters separated by spaces, ``|``
  between words and a trailing ``|`` (``"H E L L O | W O R L D |"``).
* ``train.wrd``: one line per manifest row, plain words.
* ``dict.ltr.txt``: ``SYMBOL COUNT`` lines, sorted by count (descending).

Label line ``i`` belongs to manifest row ``i``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import soundfile as sf

__all__ = [
    "ManifestError",
    "Manifest",
    "parse_manifest_line",
    "iter_manifest",
    "read_manifest",
    "write_manifest",
    "read_labels",
    "write_labels",
    "read_dictionary",
    "write_dictionary",
    "count_symbols",
    "text_to_ltr",
    "ltr_to_text",
    "build_manifests",
]

PathLike = str | os.PathLike


class ManifestError(ValueError):
    """A manifest, label or dictionary file is malformed; the message names file:line."""


@dataclass
class Manifest:
    """Parsed ``.tsv`` manifest. ``line_numbers[i]`` is the 1-based file line of row ``i``."""

    root: Path
    paths: list[str]
    sizes: list[int]
    line_numbers: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, i: int) -> Path:
        """Absolute (root-joined) path of row ``i``."""
        return self.root / self.paths[i]


def _read_lines(path: PathLike, what: str) -> list[str]:
    """Lines of a UTF-8 text file without their newline; a final newline adds no line, a leading
    byte-order mark is no part of the first line."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"{what} file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not text
    except UnicodeDecodeError as e:
        raise ManifestError(f"{p}: {what} file is not UTF-8 text ({e})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_manifest_line(line: str) -> tuple[str, int]:
    """``"rel/path.wav\\t12345"`` -> ``("rel/path.wav", 12345)``; ValueError says what is wrong."""
    fields = line.split("\t")
    if len(fields) != 2:
        raise ValueError(
            f"expected 'relative/path<TAB>num_samples' (2 tab-separated fields), "
            f"found {len(fields)} field(s): {line!r}"
        )
    rel, size_s = fields[0].strip(), fields[1].strip()
    if not rel:
        raise ValueError(f"empty path in line {line!r}")
    try:
        size = int(size_s)
    except ValueError:
        raise ValueError(f"num_samples must be an integer, found {size_s!r}") from None
    if size < 0:
        raise ValueError(f"num_samples must be >= 0, found {size}")
    return rel, size


def iter_manifest(tsv: PathLike) -> tuple[Path, Iterator[tuple[int, str, int | None, str | None]]]:
    """Lenient reader: ``(root, rows)`` with rows ``(line_no, rel_path, size, error)``.

    ``error`` is None for a good row; otherwise ``size`` is None and ``rel_path`` is the raw
    line. Used by ``validate_dataset`` to report every malformed line at once.
    """
    lines = _read_lines(tsv, "manifest")
    if not lines or not lines[0].strip():
        raise ManifestError(f"{tsv}:1: expected the root folder on the first line, found an empty line")
    root = Path(lines[0].strip())

    def rows() -> Iterator[tuple[int, str, int | None, str | None]]:
        for i, line in enumerate(lines[1:], start=2):
            try:
                rel, size = parse_manifest_line(line)
            except ValueError as e:
                yield i, line, None, str(e)
            else:
                yield i, rel, size, None

    return root, rows()


def read_manifest(tsv: PathLike) -> Manifest:
    """Read a fairseq ``.tsv`` manifest; a malformed line raises ManifestError naming file:line."""
    root, rows = iter_manifest(tsv)
    m = Manifest(root=root, paths=[], sizes=[], line_numbers=[])
    for line_no, rel, size, err in rows:
        if err is not None:
            raise ManifestError(f"{tsv}:{line_no}: {err}")
        assert size is not None
        m.paths.append(rel)
        m.sizes.append(size)
        m.line_numbers.append(line_no)
    return m


def write_manifest(tsv: PathLike, root: PathLike, rows: Iterable[tuple[str, int]]) -> None:
    """Write a ``.tsv`` manifest: ``root`` then one ``relative/path<TAB>num_samples`` per row."""
    out = [str(root)]
    for rel, size in rows:
        if "\t" in rel or "\n" in rel:
            raise ManifestError(f"{tsv}: path {rel!r} contains a tab or newline")
        if int(size) < 0:
            raise ManifestError(f"{tsv}: num_samples of {rel!r} must be >= 0, found {size}")
        out.append(f"{rel}\t{int(size)}")
    _write_text(tsv, out)


def _write_text(path: PathLike, lines: list[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def read_labels(path: PathLike) -> list[str]:
    """One stripped label per line (``.ltr`` or ``.wrd``); empty lines are kept as ``""``."""
    return [ln.strip() for ln in _read_lines(path, "labels")]


def write_labels(path: PathLike, lines: Iterable[str]) -> None:
    """Write one label per line; a label containing a newline is an error."""
    lines = list(lines)
    for i, ln in enumerate(lines):
        if "\n" in ln or "\r" in ln:
            raise ManifestError(f"{path}: label {i} contains a newline: {ln!r}")
    _write_text(path, lines)


def read_dictionary(path: PathLike) -> list[str]:
    """Symbols of a fairseq ``dict.ltr.txt`` (``SYMBOL COUNT`` lines) in file order."""
    symbols: list[str] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(_read_lines(path, "dictionary"), start=1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(" ", 1)
        if len(parts) != 2 or not parts[0]:
            raise ManifestError(f"{path}:{i}: expected 'SYMBOL COUNT', found {line!r}")
        sym, count = parts
        if count == "#fairseq:overwrite":  # fairseq flag; symbol may repeat a special
            parts = sym.rsplit(" ", 1)
            if len(parts) != 2:
                raise ManifestError(f"{path}:{i}: expected 'SYMBOL COUNT #fairseq:overwrite', found {line!r}")
            sym, count = parts
        try:
            int(count)
        except ValueError:
            raise ManifestError(
                f"{path}:{i}: count must be an integer, found {count!r} in {line!r}"
            ) from None
        if sym in seen:
            raise ManifestError(f"{path}:{i}: duplicate symbol {sym!r} (first on line {seen[sym]})")
        seen[sym] = i
        symbols.append(sym)
    return symbols


def write_dictionary(path: PathLike, counts: dict[str, int]) -> None:
    """Write ``SYMBOL COUNT`` lines sorted by count descending (ties: by symbol)."""
    for sym in counts:
        if not sym or any(c.isspace() for c in sym):
            raise ManifestError(f"{path}: symbol {sym!r} is empty or contains whitespace")
    items = sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    _write_text(path, [f"{s} {int(c)}" for s, c in items])


def count_symbols(ltr_lines: Iterable[str]) -> dict[str, int]:
    """Symbol counts of ``.ltr`` lines (for ``write_dictionary``)."""
    counts: dict[str, int] = {}
    for line in ltr_lines:
        for sym in line.split():
            counts[sym] = counts.get(sym, 0) + 1
    return counts


def text_to_ltr(text: str) -> str:
    """``"hello world"`` -> ``"H E L L O | W O R L D |"`` (upper-cased, whitespace collapsed).

    Empty or all-whitespace text gives ``""``.
    """
    words = text.upper().split()
    if not words:
        return ""
    return " ".join("|".join(words)) + " |"


def ltr_to_text(ltr: str) -> str:
    """``"H E L L O | W O R L D |"`` -> ``"HELLO WORLD"``."""
    return " ".join("".join(ltr.split()).replace("|", " ").split())


def build_manifests(
    audio_dir: PathLike,
    dest: PathLike,
    *,
    ext: str = "wav",
    valid_percent: float = 0.01,
    seed: int = 0,
    path_must_contain: str | None = None,
) -> dict[str, int]:
    """Scan ``audio_dir`` recursively for ``*.ext`` and write ``dest/train.tsv`` / ``valid.tsv``.

    Follows fairseq's ``wav2vec_manifest.py``: root = resolved ``audio_dir``, one
    ``rel_path<TAB>frames`` per file, each file goes to valid with probability
    ``valid_percent`` from ``random.Random(seed)``. Files are visited in sorted order, so
    the split is deterministic per seed. ``valid.tsv`` is written only if
    ``valid_percent > 0``. Returns ``{"train": n, "valid": m}``.
    """
    if not 0.0 <= valid_percent <= 1.0:
        raise ValueError(f"valid_percent must be in [0, 1], found {valid_percent}")
    root = Path(audio_dir).resolve()
    if not root.is_dir():
        raise ManifestError(f"audio folder not found: {audio_dir}")
    ext = ext.lstrip(".")
    files = sorted(p for p in root.rglob(f"*.{ext}") if p.is_file())
    if path_must_contain:
        files = [p for p in files if path_must_contain in str(p)]
    if not files:
        raise ManifestError(f"no *.{ext} files under {root}")
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "valid": []}
    for p in files:
        try:
            frames = sf.info(str(p)).frames
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise ManifestError(f"{p}: cannot read audio header ({e})") from None
        split = "valid" if rng.random() < valid_percent else "train"
        splits[split].append((p.relative_to(root).as_posix(), int(frames)))
    dest = Path(dest)
    write_manifest(dest / "train.tsv", root, splits["train"])
    if valid_percent > 0:
        write_manifest(dest / "valid.tsv", root, splits["valid"])
    return {k: len(v) for k, v in splits.items()}
