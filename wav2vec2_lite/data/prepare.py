"""Data preparation: a folder of audio (+ transcripts) -> fairseq manifests, labels and dictionary.

What ``w2v2-manifest`` runs. Transcripts are found, in this order:

* ``transcripts=FILE``: ``path<TAB>text`` lines, or a CSV whose header names a path column
  (``path``/``file``/``filename``/``audio``/``id``) and a text column
  (``text``/``transcript``/``transcription``/``sentence``); a path may be relative to the audio
  folder, absolute, or a file's stem;
* LibriSpeech ``*.trans.txt`` files (``UTTERANCE-ID TEXT`` lines, audio ``UTTERANCE-ID.flac`` beside them);
* sidecars: ``x.txt`` or ``x.lab`` next to ``x.wav``;
* none of them: unlabelled audio (manifests only, for pretraining).

Text is normalised to a character set (default ``A-Z`` and the apostrophe, upper case;
accents stripped, dashes and slashes become spaces); every other character is dropped and
counted in the report. Splits are drawn per file (``valid_percent``/``test_percent``) or per
speaker (``speaker_disjoint``); an empty requested split is an error; ``test_percent=1`` (or
``single_split="dev-clean"``) makes the whole folder one evaluation split. Nothing is written
until every file has been read, so an error leaves no half-written folder.

The folder is searched with symbolic links followed (a link back to a folder already searched is
noted, not followed again). A file that cannot be used is never left out without a word: an
audio-named entry that is not a regular file (a FIFO, a broken link), an unreadable or empty file,
NaN/inf samples (float files are decoded), fewer samples than the 400-sample receptive field,
two different transcripts for one key.
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from wav2vec2_lite.data.audio import AudioError, audio_info, read_samples
from wav2vec2_lite.data.manifest import (
    ManifestError,
    count_symbols,
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)
from wav2vec2_lite.data.transcripts import (
    DEFAULT_CHARSET,
    librispeech_transcripts,
    lookup_transcript,
    normalize_transcript,
    read_text_lines,
    read_transcripts,
    sidecar_transcript,
)

__all__ = ["DEFAULT_CHARSET", "PrepareReport", "normalize_transcript", "read_transcripts", "prepare_dataset"]

AUDIO_EXTENSIONS = ("wav", "flac", "ogg")
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})  # the only files that can hold NaN/inf samples
MIN_SAMPLES = 400  # the feature encoder's receptive field at 16 kHz: a shorter file gives no frame


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` found and wrote (also saved as ``prepare_report.json``)."""

    audio_files: int = 0
    labelled: bool = False
    transcript_source: str = "none"
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    dropped_characters: dict[str, int] = field(default_factory=dict)
    utterances_with_dropped_characters: int = 0
    transcripts_without_audio: int = 0
    not_16k: int = 0
    multi_channel: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines: splits, skips, dropped characters and conversion warnings."""
        lines = [f"{name}: {s['files']} files, {s['hours']:.3f} h" for name, s in self.splits.items()]
        lines.append(f"transcripts: {self.transcript_source}")
        if self.skipped:
            reasons = Counter(s["reason"].split(":")[0] for s in self.skipped)
            lines.append(
                f"skipped {len(self.skipped)} files: " + ", ".join(f"{n} {r}" for r, n in reasons.items())
            )
        if self.dropped_characters:
            top = ", ".join(
                f"{c!r} x{n}" for c, n in sorted(self.dropped_characters.items(), key=lambda kv: -kv[1])
            )
            lines.append(
                f"dropped characters outside the character set in {self.utterances_with_dropped_characters} "
                f"transcripts: {top}"
            )
        if self.transcripts_without_audio:
            lines.append(
                f"{self.transcripts_without_audio} transcripts name no audio file found under the folder"
            )
        lines += [f"note: {n}" for n in self.notes]
        if self.not_16k or self.multi_channel:
            lines.append(
                f"{self.not_16k} files not at 16000 Hz and {self.multi_channel} with several channels: "
                f"training refuses them unless data.resample=soxr / data.mono=mix"
            )
        return lines


def _find_audio(
    root: Path, exts: set[str], must_contain: str | None
) -> tuple[list[Path], list[tuple[Path, str]], list[str]]:
    """Audio-named entries under ``root``, symbolic links followed: ``(files, unusable, notes)``.

    ``unusable`` pairs an audio-named entry that is not a regular file (a FIFO, a device, a broken
    link) with why; ``notes`` names each link to a folder already searched (a loop or a second way
    in: searched once) and each folder that could not be listed."""
    files: list[Path] = []
    unusable: list[tuple[Path, str]] = []
    notes: list[str] = []
    seen: dict[tuple[int, int], str] = {}

    def unlisted(e: OSError) -> None:
        unusable.append((Path(e.filename or "?"), f"folder cannot be listed ({e.strerror or e})"))

    for folder, dirs, names in os.walk(root, followlinks=True, onerror=unlisted):
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in seen:  # reached again through a link: do not search it twice (or forever)
            notes.append(f"{folder}: a link to {seen[key]}, already searched; not searched again")
            dirs[:] = []
            continue
        seen[key] = folder
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.suffix.lower() not in exts or (must_contain and must_contain not in str(path)):
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as e:  # a broken link or a link loop
                why = "a broken symbolic link" if path.is_symlink() else "cannot be read"
                unusable.append((path, f"{why} ({e.strerror or e})"))
                continue
            if not stat.S_ISREG(mode):
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
                unusable.append(
                    (path, f"not a regular file ({kind})" if not stat.S_ISDIR(mode) else "a folder")
                )
                continue
            files.append(path)
    return sorted(files), unusable, notes


def _speaker(rel: str, pattern: re.Pattern | None) -> str:
    if pattern is not None:
        m = pattern.search(rel)
        if not m:
            raise ManifestError(f"{rel}: --speaker-pattern {pattern.pattern!r} does not match this path")
        return m.group(1) if m.groups() else m.group(0)
    parts = rel.split("/")
    if len(parts) < 2:
        raise ManifestError(
            f"{rel}: a speaker-disjoint split needs one folder per speaker below the audio folder "
            f"(or --speaker-pattern REGEX with one group)"
        )
    return parts[0]


def _split_counts(n: int, percents: dict[str, float], unit: str) -> dict[str, int]:
    counts = {name: int(round(p * n)) for name, p in percents.items() if p > 0}
    for name, k in counts.items():
        if k == 0:
            raise ManifestError(
                f"the {name} split would be empty: {percents[name]:g} of {n} {unit} is less than "
                f"one; raise --{name}-percent or give more audio"
            )
    if sum(counts.values()) >= n:
        raise ManifestError(
            f"the train split would be empty: valid/test take {sum(counts.values())} of {n} {unit}"
        )
    return counts


def _assign(
    n_items: int, groups: dict[str, list[int]] | None, percents: dict[str, float], seed: int
) -> list[str]:
    """Each item's split: per file (a fixed count per split), or per speaker (whole speakers, each
    split taking speakers until its share of the utterances is reached; at least one each)."""
    rng = random.Random(seed)
    out = ["train"] * n_items
    wanted = [(name, p) for name, p in percents.items() if p > 0]
    if groups is None:
        counts = _split_counts(n_items, dict(wanted), "files")
        order = list(range(n_items))
        rng.shuffle(order)
        start = 0
        for name, k in counts.items():
            for i in order[start : start + k]:
                out[i] = name
            start += k
        return out
    speakers = sorted(groups)
    if len(speakers) < len(wanted) + 1:
        raise ManifestError(
            f"a speaker-disjoint split into train + {' + '.join(n for n, _ in wanted)} needs at least "
            f"{len(wanted) + 1} speakers; found {len(speakers)}"
        )
    rng.shuffle(speakers)
    for k, (name, p) in enumerate(wanted):
        still_needed = len(wanted) - k  # one speaker left for each later split and one for train
        target, taken = p * n_items, 0
        while len(speakers) > still_needed:
            size = len(groups[speakers[-1]])
            if taken and taken + size / 2 > target:  # adding this speaker would overshoot more than it helps
                break
            for i in groups[speakers.pop()]:
                out[i] = name
            taken += size
    return out


def prepare_dataset(
    audio_dir: str | Path,
    dest: str | Path,
    *,
    transcripts: str | Path | None = None,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
    valid_percent: float = 0.01,
    test_percent: float = 0.0,
    speaker_disjoint: bool = False,
    speaker_pattern: str | None = None,
    seed: int = 0,
    charset: str = DEFAULT_CHARSET,
    skip_bad: bool = False,
    path_must_contain: str | None = None,
    single_split: str | None = None,
) -> PrepareReport:
    """Write ``dest/{train,valid,test}.tsv`` (+ ``.ltr``, ``.wrd`` and ``dict.ltr.txt`` when
    transcripts are found) and ``prepare_report.json``; returns the report.

    A file that cannot be used (unreadable audio, no transcript, a transcript empty after
    normalisation, NaN/inf samples, shorter than 400 samples; an audio-named FIFO or broken link) is
    a :class:`ManifestError` naming it, or with ``skip_bad`` a skip listed in the report. The
    dictionary counts the symbols of every split written. ``test_percent=1`` puts every file in
    ``test``; ``single_split=NAME`` every file in ``NAME.tsv`` (no train split either way).
    """
    for name, p in (("valid", valid_percent), ("test", test_percent)):
        if not 0.0 <= p <= 1.0:
            raise ManifestError(f"--{name}-percent must be in [0, 1], found {p:g}")
    if test_percent == 1.0 or valid_percent == 1.0:
        if valid_percent + test_percent > 1.0:
            raise ManifestError(
                f"--valid-percent {valid_percent:g} and --test-percent {test_percent:g} add up to more "
                f"than 1; one split of the whole folder is --test-percent 1 (or --valid-percent 1) alone"
            )
        single_split = single_split or ("test" if test_percent == 1.0 else "valid")
    elif single_split is not None and (valid_percent > 0 or test_percent > 0):
        raise ManifestError(
            f"--split-name {single_split} puts every file in one split; leave out --valid-percent and "
            f"--test-percent"
        )
    if single_split is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", single_split):
        raise ManifestError(f"--split-name {single_split!r}: letters, digits, '_', '-' and '.' only")
    if not charset:
        raise ManifestError("the character set is empty")
    root = Path(audio_dir).resolve()
    if not root.is_dir():
        raise ManifestError(f"{audio_dir}: audio folder not found")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    files, unusable, notes = _find_audio(root, exts, path_must_contain)
    if not files and not unusable:
        raise ManifestError(f"{root}: no audio files ({', '.join(sorted(exts))}) in this folder or below")
    report = PrepareReport(audio_files=len(files) + len(unusable), notes=notes)

    table: dict[str, str] | None = None
    if transcripts is not None:
        table, report.transcript_source = read_transcripts(transcripts), str(transcripts)
    else:
        libri = librispeech_transcripts(root)
        if libri:
            table, report.transcript_source = libri, "LibriSpeech *.trans.txt"
        elif any(sidecar_transcript(f) for f in files):
            report.transcript_source = "sidecar .txt/.lab files"
    report.labelled = report.transcript_source != "none"

    errors: list[str] = []

    def bad(path: Path, reason: str) -> None:
        if skip_bad:
            report.skipped.append({"path": str(path), "reason": reason})
        else:
            errors.append(f"{path}: {reason}")

    for f, why in unusable:
        bad(f, why)
    rows: list[tuple[str, int, float]] = []  # rel path, samples, seconds
    texts: list[str] = []
    used_keys: set[str] = set()
    dropped_total: Counter = Counter()
    for f in files:
        try:
            info = audio_info(f)
            if info.subtype in _FLOAT_SUBTYPES and info.num_samples > 0:
                read_samples(f, info)  # NaN/inf: an AudioError naming the first bad sample
        except AudioError as e:
            bad(f, str(e).removeprefix(f"{f}: "))
            continue
        if info.num_samples == 0:
            bad(f, "contains no audio samples (0 frames)")
            continue
        at_16k = info.num_samples * 16000 // info.sample_rate
        if at_16k < MIN_SAMPLES:
            bad(
                f,
                f"{at_16k} samples at 16 kHz, shorter than the {MIN_SAMPLES}-sample receptive field "
                f"(no frame to train on or transcribe)",
            )
            continue
        text = None
        if report.labelled:
            if table is not None:
                found = lookup_transcript(table, root, f)
                if found is not None:
                    used_keys.add(found[0])
                    text = found[1]
            else:
                side = sidecar_transcript(f)
                text = " ".join(read_text_lines(side)) if side is not None else None
            if text is None:
                bad(f, "no transcript")
                continue
            text, dropped = normalize_transcript(text, charset)
            if not text:
                bad(f, "transcript empty after normalisation to the character set")
                continue
            if dropped:
                dropped_total.update(dropped)
                report.utterances_with_dropped_characters += 1
            texts.append(text)
        report.not_16k += info.sample_rate != 16000
        report.multi_channel += info.channels > 1
        rows.append((f.relative_to(root).as_posix(), info.num_samples, info.num_samples / info.sample_rate))
    if errors:
        shown = "\n  ".join(errors[:20]) + (
            f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        )
        raise ManifestError(
            f"{len(errors)} of {report.audio_files} files cannot be used (pass --skip-bad to skip "
            f"them):\n  {shown}"
        )
    if not rows:
        raise ManifestError(f"{root}: every file was skipped ({len(report.skipped)}); nothing to write")
    report.dropped_characters = dict(dropped_total)
    if table is not None:
        report.transcripts_without_audio = len(set(table) - used_keys)

    if single_split is not None:
        return _write_splits(dest, root, rows, texts, report, {single_split: list(range(len(rows)))}, None)
    percents = {"valid": valid_percent, "test": test_percent}
    groups = None
    if speaker_disjoint:
        try:
            pattern = re.compile(speaker_pattern) if speaker_pattern else None
        except re.error as e:
            raise ManifestError(
                f"--speaker-pattern {speaker_pattern!r}: not a regular expression ({e})"
            ) from None
        groups = {}
        for i, (rel, _, _) in enumerate(rows):
            groups.setdefault(_speaker(rel, pattern), []).append(i)
    assignment = _assign(len(rows), groups, percents, seed)
    splits = {
        name: [i for i, s in enumerate(assignment) if s == name]
        for name in ("train", "valid", "test")
        if name == "train" or percents[name] > 0
    }
    return _write_splits(dest, root, rows, texts, report, splits, groups)


def _write_splits(
    dest: str | Path,
    root: Path,
    rows: list[tuple[str, int, float]],
    texts: list[str],
    report: PrepareReport,
    splits: dict[str, list[int]],
    groups: dict[str, list[int]] | None,
) -> PrepareReport:
    """Write each split's manifest (and labels), the dictionary and ``prepare_report.json``."""
    dest = Path(dest)
    ltr_all = []
    for name, idx in splits.items():
        write_manifest(dest / f"{name}.tsv", root, [(rows[i][0], rows[i][1]) for i in idx])
        if report.labelled:
            write_labels(dest / f"{name}.wrd", [texts[i] for i in idx])
            ltr = [text_to_ltr(texts[i]) for i in idx]
            write_labels(dest / f"{name}.ltr", ltr)
            ltr_all += ltr
        report.splits[name] = {"files": len(idx), "hours": sum(rows[i][2] for i in idx) / 3600}
        if groups is not None:
            chosen = set(idx)
            report.splits[name]["speakers"] = sum(members[0] in chosen for members in groups.values())
    if report.labelled:
        write_dictionary(dest / "dict.ltr.txt", count_symbols(ltr_all))
    (dest / "prepare_report.json").write_text(
        json.dumps(asdict(report), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report
