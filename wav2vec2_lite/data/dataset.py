"""Map-style dataset over a fairseq manifest (+ optional ``.ltr``/``.wrd`` labels).

Items are dicts::

    {"id": int,                      # dataset index (``ds.rows[id]`` = manifest row)
     "path": str,                    # absolute audio path
     "waveform": FloatTensor (S,),   # mono, ``sample_rate`` Hz, cropped to max_sample_size
     "labels": LongTensor (L,),      # only with labels_path and tokenizer
     "text": str}                    # only with labels_path
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from wav2vec2_lite.data.audio import MonoPolicy, ResamplePolicy, load_audio
from wav2vec2_lite.data.audio import normalize as normalize_wave
from wav2vec2_lite.data.manifest import ltr_to_text, read_labels, read_manifest
from wav2vec2_lite.data.tokenizer import CharTokenizer, TokenizerError

__all__ = ["DatasetError", "AudioDataset", "crop_offset"]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A manifest/labels pair cannot be used; the message names the files (and lines)."""


def crop_offset(size: int, target: int, *, seed: int, epoch: int, index: int) -> int:
    """Random crop start in ``[0, size - target]`` from a generator seeded by (seed, epoch, index)."""
    if size <= target:
        return 0
    rng = np.random.default_rng([seed, epoch, index])
    return int(rng.integers(0, size - target + 1))


def is_ltr(labels_path: str | os.PathLike) -> bool:
    """``.ltr`` files hold space-separated symbols; anything else is plain text (``.wrd``)."""
    return Path(labels_path).suffix == ".ltr"


class AudioDataset(Dataset):
    """Audio (and labels) of a ``.tsv`` manifest.

    Rows shorter than ``min_sample_size`` (manifest sizes) are dropped and counted in
    ``num_skipped_short``. Longer than ``max_sample_size``: unlabelled rows are cropped
    (random offset seeded by (seed, epoch, index) when ``random_crop``, else the start);
    labelled rows are dropped and counted in ``num_skipped_long``, since a crop would no
    longer match its transcript. ``indices`` (e.g. ``ValidationReport.valid_indices``)
    restricts the manifest rows used. ``sizes`` are in manifest samples (the file's rate).
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
    ) -> None:
        if max_sample_size is not None and max_sample_size <= 0:
            raise ValueError(f"max_sample_size must be > 0 or None, found {max_sample_size}")
        self.manifest_path = Path(manifest_path)
        self.manifest = read_manifest(manifest_path)
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

        labels = self._read_labels()
        candidates = range(len(self.manifest)) if indices is None else indices
        self.rows: list[int] = []  # dataset index -> manifest row
        self.num_skipped_short = 0
        self.num_skipped_long = 0
        for r in candidates:
            if not 0 <= r < len(self.manifest):
                raise IndexError(f"row {r} is outside {self.manifest_path} ({len(self.manifest)} rows)")
            size = self.manifest.sizes[r]
            if size < min_sample_size:
                self.num_skipped_short += 1
            elif labels is not None and max_sample_size is not None and size > max_sample_size:
                self.num_skipped_long += 1
            else:
                self.rows.append(r)
        if self.num_skipped_short or self.num_skipped_long:
            log.info(
                "%s: kept %d rows, skipped %d shorter than %d samples and %d labelled rows longer than %s",
                self.manifest_path, len(self.rows), self.num_skipped_short, min_sample_size,
                self.num_skipped_long, max_sample_size,
            )
        raw = np.asarray([self.manifest.sizes[r] for r in self.rows], dtype=np.int64)
        self.sizes: np.ndarray = raw if max_sample_size is None else np.minimum(raw, max_sample_size)

        self.texts: list[str] | None = None
        self.label_ids: list[list[int]] | None = None
        if labels is not None:
            self.texts = [ltr_to_text(labels[r]) if is_ltr(self.labels_path) else labels[r] for r in self.rows]
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
            raise DatasetError(f"{self.labels_path}:{row + 1} (row of {self.manifest.paths[row]}): {e}") from None

    def set_epoch(self, epoch: int) -> None:
        """Crop offsets depend on (seed, epoch, index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, index: int) -> str:
        return str(self.manifest.full_path(self.rows[index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for a dataset of {len(self.rows)} items")
        path = self.path(index)
        wave = load_audio(path, sample_rate=self.sample_rate, mono=self.mono, resample=self.resample)
        if self.normalize:  # fairseq normalises the whole utterance, then crops
            wave = normalize_wave(wave)
        if self.max_sample_size is not None and len(wave) > self.max_sample_size:
            start = (
                crop_offset(len(wave), self.max_sample_size, seed=self.seed, epoch=self.epoch, index=index)
                if self.random_crop
                else 0
            )
            wave = wave[start : start + self.max_sample_size]
        item: dict[str, Any] = {"id": index, "path": path, "waveform": torch.from_numpy(np.ascontiguousarray(wave))}
        if self.label_ids is not None:
            item["labels"] = torch.tensor(self.label_ids[index], dtype=torch.long)
        if self.texts is not None:
            item["text"] = self.texts[index]
        return item
