"""Map-style dataset over a fairseq manifest (+ optional ``.ltr``/``.wrd`` labels).

Items are dicts::

    {"id": int,                      # dataset index (``ds.rows[id]`` = manifest row)
     "path": str,                    # absolute audio path
     "waveform": FloatTensor (S,),   # mono, ``sample_rate`` Hz, cropped to max_sample_size
     "labels": LongTensor (L,),      # only with labels_path and tokenizer
     "text": str}                    # only with labels_path

With ``on_error="skip"`` an utterance whose file cannot be used when it is read (deleted,
corrupted or replaced after the manifest was validated) becomes ``{"id", "path",
"error": str}`` instead of raising; the training collate drops it and the trainer counts
and logs it (see :func:`is_skipped`).

:meth:`AudioDataset.keep_decoded` keeps a small set's decoded waves in memory, so each file is
decoded once per process instead of once per epoch (bounded: the whole set fits the budget, or
nothing is kept).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from wav2vec2_lite.data.audio import AudioError, MonoPolicy, ResamplePolicy, audio_warnings, load_audio
from wav2vec2_lite.data.audio import normalize as normalize_wave
from wav2vec2_lite.data.manifest import Manifest, ManifestError, iter_manifest, ltr_to_text, read_labels
from wav2vec2_lite.data.tokenizer import CharTokenizer, TokenizerError

__all__ = ["DatasetError", "AudioDataset", "crop_offset", "is_skipped"]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A manifest/labels pair cannot be used; the message names the files (and lines)."""


def crop_offset(size: int, target: int, *, seed: int, epoch: int, index: int) -> int:
    """Random crop start in ``[0, size - target]`` from a generator seeded by (seed, epoch, index)."""
    if size <= target:
        return 0
    rng = np.random.default_rng([seed, epoch, index])
    return int(rng.integers(0, size - target + 1))


def is_skipped(item: dict[str, Any]) -> bool:
    """True for the stand-in ``{"id", "path", "error"}`` of an unreadable utterance (``on_error="skip"``)."""
    return "error" in item


def _read_manifest_lenient(tsv: Path) -> tuple[Manifest, dict[int, str]]:
    """All rows, malformed ones as placeholders (path "", size 0), so row numbers match
    ``validate_dataset``; returns the manifest and ``{row: "tsv:line: what is wrong"}``."""
    root, rows = iter_manifest(tsv)
    m = Manifest(root=root, paths=[], sizes=[], line_numbers=[])
    malformed: dict[int, str] = {}
    for line_no, rel, size, err in rows:
        if err is not None:
            malformed[len(m.paths)] = f"{tsv}:{line_no}: {err}"
            rel, size = "", 0
        m.paths.append(rel)
        m.sizes.append(int(size))  # type: ignore[arg-type]
        m.line_numbers.append(line_no)
    return m, malformed


def is_ltr(labels_path: str | os.PathLike) -> bool:
    """``.ltr`` files hold space-separated symbols; anything else is plain text (``.wrd``)."""
    return Path(labels_path).suffix == ".ltr"


class AudioDataset(Dataset):
    """Audio (and labels) of a ``.tsv`` manifest.

    Rows shorter than ``min_sample_size`` (manifest sizes) are dropped and counted in
    ``num_skipped_short``. Longer than ``max_sample_size``: unlabelled rows are cropped
    (random offset seeded by (seed, epoch, index) when ``random_crop``, else the start);
    labelled rows are dropped and counted in ``num_skipped_long``, since a crop would no
    longer match its transcript. Rows longer than ``max_duration_s`` (at ``sample_rate``)
    are dropped and counted in ``num_skipped_duration``; with a tokenizer, rows whose
    transcript is empty are dropped and counted in ``num_skipped_empty``. ``indices`` (e.g.
    ``ValidationReport.valid_indices``) restricts the manifest rows used; a malformed
    manifest line among them is a ManifestError naming ``file:line``. ``sizes`` are in
    manifest samples (the file's rate).

    Reading an item checks what the manifest promised: when no resampling is involved the
    file must hold exactly the manifest's sample count, and never fewer than
    ``min_sample_size`` samples (so a batch cropped to its shortest utterance keeps at least
    that many). A violation, or any :class:`AudioError`, raises; with ``on_error="skip"`` it
    gives the stand-in item described in the module docstring instead.
    """

    def __init__(
        self,
        manifest_path: str | os.PathLike,
        *,
        labels_path: str | os.PathLike | None = None,
        tokenizer: CharTokenizer | None = None,
        sample_rate: int = 16000,
        max_sample_size: int | None = None,
        min_sample_size: int = 0,
        normalize: bool = False,
        mono: MonoPolicy = "error",
        resample: ResamplePolicy = "error",
        random_crop: bool = True,
        seed: int = 0,
        indices: Sequence[int] | None = None,
        max_duration_s: float | None = None,
        on_error: str = "raise",
    ) -> None:
        if max_sample_size is not None and max_sample_size <= 0:
            raise ValueError(f"max_sample_size must be > 0 or None, found {max_sample_size}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', found {on_error!r}")
        self.manifest_path = Path(manifest_path)
        self.manifest, malformed = _read_manifest_lenient(self.manifest_path)
        self.on_error = on_error
        self.labels_path = Path(labels_path) if labels_path is not None else None
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.max_sample_size = max_sample_size
        self.min_sample_size = min_sample_size
        self.normalize = normalize
        self.mono, self.resample = mono, resample
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0
        self.check_levels = False
        """Check each loaded wave for silence and clipping (``level_warnings`` in the item, the
        first time an index is read); training sets it for the files data validation did not decode."""
        self._decoded: dict[int, np.ndarray] | None = None  # index -> wave, see keep_decoded
        self._decoded_budget = 0
        self._decoded_bytes = 0

        labels = self._read_labels()
        candidates = range(len(self.manifest)) if indices is None else indices
        self.rows: list[int] = []  # dataset index -> manifest row
        self.num_skipped_short = 0
        self.num_skipped_long = 0
        self.num_skipped_duration = 0
        self.num_skipped_empty = 0
        max_samples = None if max_duration_s is None else max_duration_s * sample_rate
        for r in candidates:
            if not 0 <= r < len(self.manifest):
                raise IndexError(f"row {r} is outside {self.manifest_path} ({len(self.manifest)} rows)")
            if r in malformed:
                raise ManifestError(malformed[r])
            size = self.manifest.sizes[r]
            if size < min_sample_size:
                self.num_skipped_short += 1
            elif max_samples is not None and size > max_samples:
                self.num_skipped_duration += 1
            elif labels is not None and max_sample_size is not None and size > max_sample_size:
                self.num_skipped_long += 1
            elif labels is not None and tokenizer is not None and not labels[r].strip():
                self.num_skipped_empty += 1  # nothing to learn from, and a batch of them has no CTC target
            else:
                self.rows.append(r)
        if (
            self.num_skipped_short
            or self.num_skipped_long
            or self.num_skipped_duration
            or self.num_skipped_empty
        ):
            log.info(
                "%s: kept %d rows, skipped %d shorter than %d samples, %d labelled rows longer than %s, "
                "%d longer than max_duration_s=%s and %d with an empty transcript",
                self.manifest_path,
                len(self.rows),
                self.num_skipped_short,
                min_sample_size,
                self.num_skipped_long,
                max_sample_size,
                self.num_skipped_duration,
                max_duration_s,
                self.num_skipped_empty,
            )
        raw = np.asarray([self.manifest.sizes[r] for r in self.rows], dtype=np.int64)
        self.sizes: np.ndarray = raw if max_sample_size is None else np.minimum(raw, max_sample_size)
        self._levels_checked = np.zeros(len(self.rows), dtype=bool)  # index -> checked once

        self.texts: list[str] | None = None
        self.label_ids: list[list[int]] | None = None
        if labels is not None:
            self.texts = [
                ltr_to_text(labels[r]) if is_ltr(self.labels_path) else labels[r] for r in self.rows
            ]
            if tokenizer is not None:
                self.label_ids = [self._encode(labels[r], r) for r in self.rows]

    def _read_labels(self) -> list[str] | None:
        if self.labels_path is None:
            if self.tokenizer is not None:
                raise DatasetError(f"{self.manifest_path}: a tokenizer was given without labels_path")
            return None
        labels = read_labels(self.labels_path)
        if len(labels) != len(self.manifest):
            raise DatasetError(
                f"{self.labels_path} has {len(labels)} lines but {self.manifest_path} has "
                f"{len(self.manifest)} rows; label line i must belong to manifest row i"
            )
        return labels

    def _encode(self, label: str, row: int) -> list[int]:
        assert self.tokenizer is not None and self.labels_path is not None
        try:
            if is_ltr(self.labels_path):
                return self.tokenizer.encode_ltr(label)
            return self.tokenizer.encode_text(label)
        except TokenizerError as e:
            raise DatasetError(
                f"{self.labels_path}:{row + 1} (row of {self.manifest.paths[row]}): {e}"
            ) from None

    def keep_decoded(self, max_bytes: int) -> bool:
        """Keep each wave in memory once decoded, if the whole set fits ``max_bytes`` as float32
        (the manifest's sample counts), so later epochs crop and normalise the kept wave instead of
        reading the file again: the same numbers as reading the files, but a file that changes or
        disappears after it was kept is no longer noticed. Never more than ``max_bytes`` is kept
        (with resampling the counts are at the files' rates: a wave past the budget is read each
        time). Returns whether waves are kept (False: the set is larger, or ``max_bytes`` is 0)."""
        needed = 4 * int(sum(self.manifest.sizes[r] for r in self.rows))
        self._decoded = {} if 0 < needed <= max_bytes else None
        self._decoded_budget, self._decoded_bytes = int(max_bytes), 0
        return self._decoded is not None

    def _keep(self, index: int, wave: np.ndarray) -> None:
        if self._decoded is not None and self._decoded_bytes + wave.nbytes <= self._decoded_budget:
            self._decoded[index] = wave.copy()  # the item's tensor may share memory with ``wave``
            self._decoded_bytes += wave.nbytes

    def set_epoch(self, epoch: int) -> None:
        """Crop offsets depend on (seed, epoch, index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, index: int) -> str:
        return str(self.manifest.full_path(self.rows[index]))

    def _load(self, index: int, path: str) -> np.ndarray:
        """The wave of ``index`` (S,); AudioError if the file is unusable or not what the manifest says."""
        wave = load_audio(path, sample_rate=self.sample_rate, mono=self.mono, resample=self.resample)
        expected = self.manifest.sizes[self.rows[index]]
        if self.resample == "error" and len(wave) != expected:  # same rate: counts must match exactly
            raise AudioError(
                f"{path}: holds {len(wave)} samples, the manifest says {expected} "
                f"(file changed since the manifest was made?)"
            )
        if len(wave) < max(self.min_sample_size, 1):
            raise AudioError(
                f"{path}: holds {len(wave)} samples, fewer than min_sample_size={self.min_sample_size}"
            )
        return wave

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.rows)} items")
        path = self.path(index)
        kept = self._decoded.get(index) if self._decoded is not None else None
        if kept is not None:
            wave = kept.copy()  # the item's tensor must not share memory with the kept wave
        else:
            try:
                wave = self._load(index, path)
            except (AudioError, OSError) as e:
                if self.on_error == "raise":
                    raise
                msg = str(e)
                reason = msg[len(path) + 2 :] if msg.startswith(f"{path}: ") else msg
                log.info("%s: skipped, cannot be read (%s)", path, reason)
                return {"id": index, "path": path, "error": reason}
            self._keep(index, wave)
        found = []
        if self.check_levels and not self._levels_checked[index]:  # the whole file, before any crop
            found = audio_warnings(wave)
            self._levels_checked[index] = True
        if self.normalize:  # fairseq normalises the whole utterance, then crops
            wave = normalize_wave(wave)
        if self.max_sample_size is not None and len(wave) > self.max_sample_size:
            start = (
                crop_offset(len(wave), self.max_sample_size, seed=self.seed, epoch=self.epoch, index=index)
                if self.random_crop
                else 0
            )
            wave = wave[start : start + self.max_sample_size]
        item: dict[str, Any] = {
            "id": index,
            "path": path,
            "waveform": torch.from_numpy(np.ascontiguousarray(wave)),
        }
        if self.label_ids is not None:
            item["labels"] = torch.tensor(self.label_ids[index], dtype=torch.long)
        if self.texts is not None:
            item["text"] = self.texts[index]
        if found:
            item["level_warnings"] = found
        return item
