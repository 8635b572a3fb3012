"""One pass over a manifest (+ labels) before training that finds every bad row.

``validate_dataset`` checks each row for: malformed manifest line, duplicate path, missing /
empty / non-audio / corrupt / truncated file, header length != manifest num_samples,
NaN/inf samples, more than one channel, wrong sample rate, shorter than
``min_sample_size`` (the 400-sample receptive field), longer than ``max_duration_s``;
and with labels: empty transcript, symbols outside the dictionary, labelled rows longer
than ``max_sample_size`` (AudioDataset would drop them), and transcripts longer than
the CTC frames the audio gives (the CTC loss would be inf).

Warnings (counted in the report, the rows stay usable): silence (whole-file RMS below
``SILENCE_DBFS``) and heavy clipping (at least ``CLIP_FRACTION`` of the samples at
``|x| >= CLIP_LEVEL``). They need the samples, so they are checked here on the files that are
decoded (every file with ``check_audio="full"``, float files with ``"header"``); training
checks the others as it first loads them (``AudioDataset.check_levels``).

Cost. Every check but two reads only the file header (and, for WAV, the chunk list;
docs/benchmarks.md has the time per file). Decoding the samples is needed only to find NaN/inf
values and damage inside compressed data. ``check_audio="header"`` decodes just the files stored as floats
(the only WAV/FLAC/... sample formats that can hold NaN/inf), ``True``/``"full"`` decodes
every file, ``False`` none. Files are read by a few threads (``num_workers``), which helps
when decoding and on network storage.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

from wav2vec2_lite.data.audio import (
    CLIP_FRACTION,
    CLIP_LEVEL,
    SILENCE_DBFS,
    AudioError,
    audio_info,
    audio_warnings,
    read_samples,
)
from wav2vec2_lite.data.dataset import DatasetError, is_ltr
from wav2vec2_lite.data.manifest import iter_manifest, read_labels, write_labels, write_manifest
from wav2vec2_lite.data.tokenizer import CharTokenizer, TokenizerError

__all__ = [
    "Problem",
    "ValidationReport",
    "validate_dataset",
    "num_frames",
    "ctc_min_frames",
    "audio_warnings",
    "DatasetError",
    "SILENCE_DBFS",
    "CLIP_LEVEL",
    "CLIP_FRACTION",
]

log = logging.getLogger(__name__)

# wav2vec 2.0 feature encoder: 7 convs, 20 ms hop, 400-sample receptive field
CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
# sample formats (soundfile subtypes) that can hold NaN/inf
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})


class Problem(NamedTuple):
    """One problem: manifest line (1-based), audio path (or file at fault), what is wrong."""

    line_no: int
    path: str
    message: str


@dataclass
class ValidationReport:
    """Rows (0-based, in manifest order) without problems, and every problem found."""

    manifest_path: Path
    labels_path: Path | None
    num_rows: int
    valid_indices: list[int]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    """Usable rows worth a look (silent, clipped); they stay in ``valid_indices``."""

    @property
    def num_invalid(self) -> int:
        return self.num_rows - len(self.valid_indices)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, warnings: bool = False) -> str:
        """One line per problem (or per warning): ``manifest:line: path: message``."""
        found = self.warnings if warnings else self.problems
        return "\n".join(f"  {self.manifest_path}:{p.line_no}: {p.path}: {p.message}" for p in found)

    def write_subset(self, tsv_out: str | os.PathLike, labels_out: str | os.PathLike | None = None) -> None:
        """Write the valid rows as a new manifest (and their labels, if any)."""
        root, rows = iter_manifest(self.manifest_path)
        parsed = {line_no - 2: (rel, size) for line_no, rel, size, err in rows if err is None}
        write_manifest(tsv_out, root, [parsed[i] for i in self.valid_indices])  # type: ignore[misc]
        if labels_out is not None:
            if self.labels_path is None:
                raise ValueError("labels_out given but the dataset was validated without labels")
            labels = read_labels(self.labels_path)
            write_labels(labels_out, [labels[i] for i in self.valid_indices])


def num_frames(
    num_samples: int, kernels: Sequence[int] = CONV_KERNELS, strides: Sequence[int] = CONV_STRIDES
) -> int:
    """Frames the conv feature encoder gives for ``num_samples`` (0 if too short)."""
    n = num_samples
    for k, s in zip(kernels, strides):
        if n < k:
            return 0
        n = (n - k) // s + 1
    return n


def ctc_min_frames(ids: Sequence[int]) -> int:
    """Frames CTC needs for ``ids``: one per label plus a blank between each repeated pair."""
    return len(ids) + sum(1 for a, b in zip(ids, ids[1:]) if a == b)


def validate_dataset(
    manifest_path: str | os.PathLike,
    *,
    labels_path: str | os.PathLike | None = None,
    tokenizer: CharTokenizer | None = None,
    sample_rate: int = 16000,
    min_sample_size: int = 400,
    max_sample_size: int | None = None,
    max_duration_s: float | None = None,
    skip_invalid: bool = False,
    check_audio: bool | str = True,
    mono: str = "error",
    resample: str = "error",
    conv_kernel: Sequence[int] = CONV_KERNELS,
    conv_stride: Sequence[int] = CONV_STRIDES,
    num_workers: int = 4,
    warn: bool = True,
) -> ValidationReport:
    """Check every manifest row (see module doc).

    Args:
        check_audio: ``True``/``"full"`` decode every file; ``"header"`` decode only float
            files (NaN/inf); ``False`` headers only.
        mono, resample: the loader's policies; ``"mix"`` / ``"soxr"`` accept multi-channel
            files / other sample rates.
        conv_kernel, conv_stride: the model's feature encoder, for the CTC frame check.
        num_workers: threads reading files (1: in this thread).
        warn: log the skipped rows (``skip_invalid``) as a warning.

    Raises:
        DatasetError listing every problem (``manifest:line: path: message``) unless
        ``skip_invalid``; always if label and manifest counts differ (rows cannot be paired).
    Returns:
        ValidationReport; with ``skip_invalid`` its ``valid_indices`` are the usable rows.
    """
    manifest_path = Path(manifest_path)
    root, rows_iter = iter_manifest(manifest_path)
    rows = list(rows_iter)
    labels = None
    if labels_path is not None:
        labels = read_labels(labels_path)
        if len(labels) != len(rows):
            raise DatasetError(
                f"{labels_path} has {len(labels)} lines but {manifest_path} has {len(rows)} rows; "
                f"label line i must belong to manifest row i"
            )
    elif tokenizer is not None:
        raise DatasetError(f"{manifest_path}: a tokenizer was given without labels_path")
    if check_audio not in (True, False, "full", "header"):
        raise ValueError(f"check_audio: True/'full', 'header' or False, found {check_audio!r}")
    decode = "all" if check_audio in (True, "full") else "float" if check_audio == "header" else "none"

    def audio_problems(item: tuple[int, str, int | None, str | None]) -> tuple[list[str], list[str]]:
        _, rel, size, err = item
        if err is not None:
            return [], []
        return _check_audio_row(
            str(root / rel),
            size,
            sample_rate,
            min_sample_size,  # type: ignore[arg-type]
            max_duration_s,
            decode,
            mono,
            resample,
        )

    if num_workers > 1 and len(rows) > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            audio_found = list(pool.map(audio_problems, rows, chunksize=64))
    else:
        audio_found = [audio_problems(r) for r in rows]

    problems: list[Problem] = []
    warnings: list[Problem] = []
    valid: list[int] = []
    seen: dict[str, int] = {}
    for row, (line_no, rel, size, err) in enumerate(rows):
        found: list[str] = []
        path = str(root / rel) if err is None else "-"
        if err is not None:
            found.append(f"malformed manifest line: {err}")
        else:
            assert size is not None
            if rel in seen:
                found.append(f"duplicate of line {seen[rel]}")
            seen.setdefault(rel, line_no)
            found += audio_found[row][0]
            if labels is not None:
                found += _check_label_row(
                    labels[row],
                    row,
                    Path(labels_path),
                    tokenizer,
                    size,
                    max_sample_size,  # type: ignore[arg-type]
                    conv_kernel,
                    conv_stride,
                )
        problems += [Problem(line_no, path, m) for m in found]
        if not found:
            valid.append(row)
            warnings += [Problem(line_no, path, m) for m in audio_found[row][1]]

    report = ValidationReport(
        manifest_path, Path(labels_path) if labels_path else None, len(rows), valid, problems, warnings
    )
    if problems and not skip_invalid:
        raise DatasetError(
            f"{manifest_path}: {len(problems)} problem(s) in {report.num_invalid} of {len(rows)} rows "
            f"(pass skip_invalid=True to train on the {len(valid)} valid rows):\n{report.format()}"
        )
    if problems and warn:
        log.warning(
            "%s: skipping %d of %d rows with %d problem(s):\n%s",
            manifest_path,
            report.num_invalid,
            len(rows),
            len(problems),
            report.format(),
        )
    if report.warnings and warn:
        log.warning(
            "%s: %d warning(s):\n%s", manifest_path, len(report.warnings), report.format(warnings=True)
        )
    return report


def _strip_path(msg: str, path: str) -> str:
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _check_audio_row(
    path: str,
    size: int,
    sample_rate: int,
    min_sample_size: int,
    max_duration_s: float | None,
    decode: str,
    mono: str,
    resample: str,
) -> tuple[list[str], list[str]]:
    """Problems and warnings of one audio file (warnings only when its samples are decoded)."""
    found: list[str] = []
    try:
        info = audio_info(path)
    except AudioError as e:
        return [_strip_path(str(e), path)], []
    if info.num_samples != size:
        found.append(
            f"manifest says {size} samples, the file header says {info.num_samples}; rebuild the manifest"
        )
    if info.channels != 1 and mono == "error":
        found.append(f"has {info.channels} channels, expected mono (or set data.mono=mix)")
    if info.sample_rate != sample_rate and resample == "error":
        found.append(
            f"sample rate is {info.sample_rate} Hz, expected {sample_rate} Hz (or set data.resample=soxr)"
        )
    if info.num_samples < min_sample_size:
        found.append(
            f"{info.num_samples} samples is shorter than min_sample_size={min_sample_size} "
            f"(the feature encoder's 400-sample receptive field)"
        )
    if max_duration_s is not None and info.num_samples > max_duration_s * info.sample_rate:
        found.append(
            f"{info.num_samples / info.sample_rate:.1f} s is longer than max_duration_s={max_duration_s}"
        )
    warnings: list[str] = []
    if info.num_samples > 0 and (decode == "all" or (decode == "float" and info.subtype in FLOAT_SUBTYPES)):
        try:
            warnings = audio_warnings(read_samples(path, info))
        except AudioError as e:
            found.append(_strip_path(str(e), path))
    return found, warnings


def _check_label_row(
    label: str,
    row: int,
    labels_path: Path,
    tokenizer: CharTokenizer | None,
    size: int,
    max_sample_size: int | None,
    conv_kernel: Sequence[int] = CONV_KERNELS,
    conv_stride: Sequence[int] = CONV_STRIDES,
) -> list[str]:
    where = f"{labels_path}:{row + 1}"
    if not label.strip():
        return [f"empty transcript ({where})"]
    found: list[str] = []
    if max_sample_size is not None and size > max_sample_size:
        found.append(
            f"labelled utterance of {size} samples is longer than max_sample_size={max_sample_size}; "
            f"AudioDataset drops it (a crop would cut its transcript)"
        )
    if tokenizer is not None:
        try:
            ids = tokenizer.encode_ltr(label) if is_ltr(labels_path) else tokenizer.encode_text(label)
        except TokenizerError as e:
            found.append(f"{where}: {e}")
        else:
            need, have = ctc_min_frames(ids), num_frames(size, conv_kernel, conv_stride)
            if need > have:
                found.append(
                    f"{where}: transcript needs {need} CTC frames ({len(ids)} symbols + repeats) but "
                    f"{size} samples give {have}; the CTC loss would be inf"
                )
    return found
