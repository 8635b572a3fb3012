"""The ``data`` part of a run config: where the manifests are and how to read and batch them.

Each field says what it does next to it; :meth:`DataConfig.check` checks the values
(errors name the key and the valid values). :mod:`wav2vec2_lite.data.pipeline` builds the
datasets, samplers and loaders from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Optional, get_args

from omegaconf import MISSING

from wav2vec2_lite.data.audio import MonoPolicy, ResamplePolicy
from wav2vec2_lite.data.sampler import TooLongPolicy
from wav2vec2_lite.data.tokenizer import UnkPolicy

__all__ = ["DataConfig", "Mono", "Resample", "TooLong", "Unk", "validation_mode"]

# The loaders' policies as enums (OmegaConf checks them on every override; a wrong value is
# an error naming the key and the valid values). Members are strings: Mono.mix == "mix".
Mono = StrEnum("Mono", get_args(MonoPolicy), module=__name__)
Resample = StrEnum("Resample", get_args(ResamplePolicy), module=__name__)
TooLong = StrEnum("TooLong", get_args(TooLongPolicy), module=__name__)
Unk = StrEnum("Unk", get_args(UnkPolicy), module=__name__)

_VALIDATION_MODES = ("header", "full", "false")


def validation_mode(value: Any) -> str:
    """``data.validate`` as ``"header"``, ``"full"`` or ``"false"`` (YAML booleans accepted:
    true = header)."""
    v = str(value).strip().lower()
    v = {
        "true": "header",
        "on": "header",
        "yes": "header",
        "off": "false",
        "no": "false",
        "none": "false",
    }.get(v, v)
    if v not in _VALIDATION_MODES:
        raise ValueError(f"data.validate: 'header', 'full' or false (got {value!r})")
    return v


@dataclass
class DataConfig:
    """fairseq-style manifests: ``{manifest_dir}/{subset}.tsv`` (+ ``.ltr``, ``dict.ltr.txt``)."""

    manifest_dir: str = MISSING
    """Folder of the ``{subset}.tsv`` manifests (``w2v2-manifest``)."""
    train_subset: str = "train"
    """Manifest to train on."""
    valid_subset: Optional[str] = "valid"
    """Manifest to validate on; null switches validation off (no ``best`` checkpoint). A
    validation set left with no usable row is an error."""
    labels: str = "ltr"
    """Label extension for fine-tuning (``ltr`` or ``wrd``)."""
    unk: Unk = Unk.error
    """Fine-tuning transcripts with a symbol outside ``dict.ltr.txt``: ``error`` (the row is
    invalid, naming the symbol), or ``map`` it to ``<unk>`` and train on the row."""
    sample_rate: int = 16000
    """Hz the model expects; other rates are errors or resampled (``resample``)."""
    resample: Resample = Resample.error
    """Files at another rate: ``error``, or ``soxr`` to resample them."""
    mono: Mono = Mono.error
    """Multi-channel files: ``error``, or ``mix`` to average the channels."""
    normalize: bool = False
    """Zero-mean unit-variance per utterance (fairseq ``normalize``; LARGE / layer-norm models)."""
    max_sample_size: Optional[int] = 250000
    """Training crops are at most this many samples (null: no crop; labelled rows longer than it
    are dropped)."""
    min_sample_size: int = 32000
    """Training rows shorter than this are dropped (fairseq; always at least the receptive field)."""
    max_tokens: int = 1400000
    """Samples per batch per GPU (padded size ``max_len * batch``)."""
    max_tokens_valid: Optional[int] = None
    """``max_tokens`` for validation (null: the same)."""
    max_batch_size: Optional[int] = None
    """At most this many utterances per batch (null: only ``max_tokens`` bounds it)."""
    crop_to_shortest: bool = True
    """Pretraining: crop every batch to its shortest utterance (fairseq ``pad=False``: no
    padding); fine-tuning always pads."""
    num_buckets: int = 0
    """Shuffle within this many length buckets (0: sort by length, ties shuffled)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    keep_decoded_mb: float = 256.0
    """With ``num_workers=0``: a training set whose decoded audio (float32) fits in this many MB
    (256: about 1 h at 16 kHz, a labelled set) is decoded once and kept in memory, each epoch
    cropping the kept waves (the same batches as reading the files; a file that changes or
    disappears after its first read is then not noticed). 0 reads every file every epoch."""
    too_long: TooLong = TooLong.error
    """An utterance longer than ``max_tokens``: ``error``, or ``skip`` it (counted)."""
    validate: str = "header"
    """Check every row of the train and valid manifests (and labels) before training:
    ``header`` reads file headers and decodes only float files (NaN/inf), ``full`` decodes
    every file, ``false`` skips the pass. Problems stop the run before any update with one
    error listing every bad row (``manifest:line: file: reason``), unless ``skip_invalid``."""
    skip_invalid: bool = False
    """Drop the rows the validation pass rejects (counted, logged, an ``event`` record in
    metrics.jsonl) and train on the rest."""
    max_duration_s: Optional[float] = 600.0
    """Longer files are invalid (validation) or dropped and counted (``validate=false``);
    null = no limit. A whole file is read to crop it, so hour-long files make training crawl."""
    max_unreadable_fraction: float = 0.1
    """Files that become unreadable during the run are skipped, counted and logged; when more
    than this fraction of the training set has been skipped the run stops (storage gone?)."""

    def check(self) -> None:
        """Normalise ``validate`` and raise ``ValueError`` naming the first bad key."""
        self.validate = validation_mode(self.validate)
        for key in ("sample_rate", "max_tokens"):
            if getattr(self, key) <= 0:
                raise ValueError(f"data.{key}: must be > 0 (got {getattr(self, key)})")
        if self.max_duration_s is not None and self.max_duration_s <= 0:
            raise ValueError(f"data.max_duration_s: > 0 or null (got {self.max_duration_s})")
        if self.keep_decoded_mb < 0:
            raise ValueError(f"data.keep_decoded_mb: >= 0 (got {self.keep_decoded_mb})")
        if not 0.0 <= self.max_unreadable_fraction <= 1.0:
            raise ValueError(f"data.max_unreadable_fraction: in [0, 1] (got {self.max_unreadable_fraction})")
