"""From a :class:`DataConfig` to what the training loop iterates.

:class:`TrainingData` checks every row of the train and valid manifests (and labels) before
any loader exists (``data.validate``): problems raise one :class:`DatasetError` listing them
all, or with ``data.skip_invalid`` are dropped and counted. It then builds the datasets, the
length-bucketed samplers and the loaders, and yields the micro-batches of each update. A
file that becomes unreadable later is skipped when read and counted; more than
``data.max_unreadable_fraction`` of the training set stops the run. A small training set is
decoded once and kept in memory (``data.keep_decoded_mb``).

A validation set left with no usable row is an error (:func:`check_valid_set`); a run
without validation says so with ``data.valid_subset=null``. Audio that is silent or heavily
clipped is a warning (an ``audio_warnings`` event), not a skip: found by validation on the
files it decodes, and on the others as training first loads them (once per file).

Nothing here logs: what happened to the data (rows checked, rows dropped, files skipped)
is queued in :attr:`TrainingData.events` as records for ``metrics.jsonl``, and
:func:`describe` words the ones a user should see. The task (pretraining or fine-tuning)
supplies the files and datasets through the :class:`DatasetSource` protocol.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Protocol, Sequence

from torch.utils.data import DataLoader

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.collate import SeededCollate
from wav2vec2_lite.data.config import DataConfig
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.manifest import ManifestError
from wav2vec2_lite.data.sampler import BucketBatchSampler
from wav2vec2_lite.data.validate import validate_dataset

__all__ = ["DatasetSource", "TrainingData", "describe", "check_valid_set", "SUMMARY_EVENTS"]

SUMMARY_EVENTS = ("data_validated", "dataset_filtered")
"""Events that summarise (``data`` records); every other event reports a skip (``event`` records)."""


class DatasetSource(Protocol):
    """What a task provides: the files to check for a subset, and its dataset. A task with
    labels also has a ``tokenizer``, built with the unknown-symbol policy ``data.unk``."""

    crop_to_shortest: bool

    def data_files(self, subset: str) -> dict[str, Any]: ...

    def dataset(
        self, subset: str, train: bool, *, min_samples: int = 0, indices: Sequence[int] | None = None
    ) -> AudioDataset: ...


def validate_rows(
    cfg: DataConfig, source: DatasetSource, subsets: list[str], model: Wav2Vec2Config
) -> tuple[dict[str, list[int] | None], list[dict[str, Any]]]:
    """Rows of each subset to use (None: all) after ``validate_dataset``, and the events to log."""
    mode = cfg.validate
    if mode == "false":
        return {s: None for s in subsets}, []
    start = time.perf_counter()
    reports, fatal = {}, []
    for subset in subsets:
        files = source.data_files(subset)
        try:
            reports[subset] = validate_dataset(
                **files,
                sample_rate=cfg.sample_rate,
                min_sample_size=model.receptive_field,
                max_sample_size=cfg.max_sample_size if "labels_path" in files else None,
                max_duration_s=cfg.max_duration_s,
                skip_invalid=True,
                check_audio=mode,
                mono=cfg.mono,
                resample=cfg.resample,
                conv_kernel=model.conv_kernel,
                conv_stride=model.conv_stride,
                warn=False,
            )
        except (DatasetError, ManifestError) as e:  # e.g. labels that cannot be paired with rows
            fatal.append(f"  {e}")
    seconds = time.perf_counter() - start
    bad = [r for r in reports.values() if r.problems]
    if fatal or (bad and not cfg.skip_invalid):
        raise DatasetError(
            f"data validation (data.validate={mode}) found {sum(len(r.problems) for r in bad)} problem(s) in "
            f"{sum(r.num_invalid for r in bad)} row(s)"
            + (f" and {len(fatal)} unusable file(s)" if fatal else "")
            + "; nothing was trained. Fix or remove them"
            + ("" if fatal else ", or set data.skip_invalid=true to train on the valid rows")
            + " (data.validate=false turns this check off):\n"
            + "\n".join(fatal + [r.format() for r in bad])
        )
    events: list[dict[str, Any]] = []
    for subset, r in reports.items():
        where = {"subset": subset, "manifest": str(r.manifest_path)}
        events.append(
            {
                "event": "data_validated",
                **where,
                "mode": mode,
                "rows": r.num_rows,
                "invalid": r.num_invalid,
                "warnings": len(r.warnings),
                "seconds": round(seconds, 3),
            }
        )
        if r.warnings:
            events.append(
                {
                    "event": "audio_warnings",
                    **where,
                    "count": len(r.warnings),
                    "found_by": "validation",
                    "warnings": [f"{r.manifest_path}:{p.line_no}: {p.path}: {p.message}" for p in r.warnings],
                    "paths": sorted({p.path for p in r.warnings}),
                }
            )
        if r.problems:
            events.append(
                {
                    "event": "skipped_invalid",
                    **where,
                    "count": r.num_invalid,
                    "problems": [f"{r.manifest_path}:{p.line_no}: {p.path}: {p.message}" for p in r.problems],
                }
            )
    return {s: r.valid_indices for s, r in reports.items()}, events


def dataset_events(
    cfg: DataConfig, subset: str, ds: AudioDataset, rows: list[int] | None, receptive_field: int
) -> list[dict[str, Any]]:
    """Rows the dataset drops: unusable ones (shorter than the receptive field, longer than
    ``data.max_duration_s``, labelled and longer than ``max_sample_size``, empty transcript)
    are skip events; the rest of the short ones (``data.min_sample_size``, by design) a summary."""
    sizes = ds.manifest.sizes
    below_rf = sum(1 for r in (range(len(sizes)) if rows is None else rows) if sizes[r] < receptive_field)
    where = {"subset": subset, "manifest": str(ds.manifest_path)}
    events = [
        {"event": name, **where, "count": count, **extra}
        for name, count, extra in (
            ("skipped_too_short", below_rf, {"min_samples": receptive_field}),
            ("skipped_too_long", ds.num_skipped_duration, {"max_duration_s": cfg.max_duration_s}),
            ("skipped_labelled_too_long", ds.num_skipped_long, {"max_sample_size": cfg.max_sample_size}),
            ("skipped_empty_transcript", ds.num_skipped_empty, {}),
        )
        if count
    ]
    if ds.num_skipped_short > below_rf:
        events.append(
            {
                "event": "dataset_filtered",
                **where,
                "rows": len(ds),
                "shorter_than_min_sample_size": ds.num_skipped_short - below_rf,
                "min_sample_size": ds.min_sample_size,
            }
        )
    return events


def check_valid_set(
    cfg: DataConfig, vset: AudioDataset, sampler: BucketBatchSampler, events: list[dict[str, Any]]
) -> None:
    """A validation set with no usable row is an error, not a run without validation or ``best``
    checkpoint; switching validation off is explicit (``data.valid_subset=null``)."""
    if len(sampler) > 0:
        return
    gone = [
        f"{e['count']} {e['event'].removeprefix('skipped_').replace('_', ' ')}"
        for e in events
        if e.get("manifest") == str(vset.manifest_path) and e["event"].startswith("skipped_")
    ]
    if sampler.num_skipped_long:
        gone.append(f"{sampler.num_skipped_long} longer than max_tokens_valid")
    raise DatasetError(
        f"data.valid_subset={cfg.valid_subset}: {vset.manifest_path} has no usable row "
        f"({len(vset.manifest)} in the manifest"
        + (f"; dropped: {', '.join(gone)}" if gone else "")
        + "); nothing was trained. Fix the "
        "validation set, choose another with data.valid_subset=NAME, or set data.valid_subset=null to train "
        "without validation (no best checkpoint)"
    )


_MESSAGES = {
    "skipped_too_short": "{manifest}: skipping {count} row(s) shorter than the "
    "{min_samples}-sample receptive field",
    "skipped_too_long": "{manifest}: skipping {count} row(s) longer than "
    "data.max_duration_s={max_duration_s}",
    "skipped_labelled_too_long": "{manifest}: skipping {count} labelled row(s) longer than "
    "data.max_sample_size={max_sample_size} (a crop would cut the transcript)",
    "skipped_empty_transcript": "{manifest}: skipping {count} row(s) with an empty transcript",
    "skipped_unreadable": "skipped {path}: {reason} ({unreadable_total} unreadable so far)",
    "train_rows_changed": "resuming with {rows} training rows, the checkpoint was written with "
    "{checkpoint_rows}: files changed since; the data order differs from an uninterrupted run",
}


# the loader's errors give their remedies as Python keywords; a run is configured with data.* keys
_CONFIG_HINTS = {"pass mono='mix'": "set data.mono=mix", "pass resample='soxr'": "set data.resample=soxr"}


def _config_hints(reason: str) -> str:
    for python, key in _CONFIG_HINTS.items():
        reason = reason.replace(python, key)
    return reason


def _listing(lines: list[str], limit: int = 20) -> str:
    """The first ``limit`` lines, indented, then ``...`` if there are more."""
    return "\n  " + "\n  ".join(lines[:limit]) + ("\n  ..." if len(lines) > limit else "")


def describe(e: dict[str, Any]) -> str:
    """One terminal message for a skip or warning event."""
    if e["event"] == "skipped_invalid":
        return f"{e['manifest']}: skipping {e['count']} invalid row(s) (data.skip_invalid=true):" + _listing(
            e["problems"]
        )
    if e["event"] == "audio_warnings":
        when = " on loading" if e.get("found_by") == "loading" else ""
        return f"{e['manifest']}: {e['count']} warning(s){when}, training on them anyway:" + _listing(
            e["warnings"]
        )
    template = _MESSAGES.get(e["event"])
    return template.format(**e) if template else f"{e.get('manifest', 'train set')}: {e}"


class TrainingData:
    """Checked datasets, samplers and loaders of a run, and its place in the data (resumable).

    Args:
        cfg: the ``data`` config.
        source: the task's files and datasets.
        model: the model config (receptive field and conv geometry: no utterance, or crop,
            may give zero frames).
        seed, rank, world_size: the sampler's shuffling and DDP shard.
    """

    def __init__(
        self,
        cfg: DataConfig,
        source: DatasetSource,
        model: Wav2Vec2Config,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
    ) -> None:
        """``pin_memory``: batches in page-locked memory (for a CUDA device: copies that overlap compute)."""
        self.cfg = cfg
        subsets = [cfg.train_subset] + ([cfg.valid_subset] if cfg.valid_subset else [])
        rows, self.events = validate_rows(cfg, source, subsets, model)
        rf = model.receptive_field
        sampler_kw = dict(
            max_batch_size=cfg.max_batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            too_long=cfg.too_long,
        )

        self.train_set = source.dataset(
            cfg.train_subset, train=True, min_samples=rf, indices=rows[cfg.train_subset]
        )
        self.train_set.check_levels = cfg.validate != "full"  # "full" decoded and checked every file already
        if cfg.num_workers == 0:  # a worker is a new process each epoch: what it kept would be lost
            self.train_set.keep_decoded(int(cfg.keep_decoded_mb * 2**20))
        self.events += dataset_events(cfg, "train", self.train_set, rows[cfg.train_subset], rf)
        self.sampler = BucketBatchSampler(
            self.train_set.sizes,
            max_tokens=cfg.max_tokens,
            shuffle=True,
            num_buckets=cfg.num_buckets,
            **sampler_kw,
        )
        self.collate = SeededCollate(source.crop_to_shortest, seed)
        loading = {"num_workers": cfg.num_workers, "pin_memory": pin_memory}
        self.loader = DataLoader(
            self.train_set, batch_sampler=self.sampler, collate_fn=self.collate, **loading
        )
        self.valid_loader = None
        if cfg.valid_subset:
            vset = source.dataset(
                cfg.valid_subset, train=False, min_samples=rf, indices=rows[cfg.valid_subset]
            )
            vset.check_levels = self.train_set.check_levels
            self.events += dataset_events(cfg, "valid", vset, rows[cfg.valid_subset], rf)
            vsampler = BucketBatchSampler(
                vset.sizes, max_tokens=cfg.max_tokens_valid or cfg.max_tokens, shuffle=False, **sampler_kw
            )
            check_valid_set(cfg, vset, vsampler, self.events)
            self.valid_loader = DataLoader(
                vset, batch_sampler=vsampler, collate_fn=SeededCollate(False, seed), **loading
            )
        self.epoch = 0
        self.consumed = 0  # batches of this rank processed in self.epoch
        self.unreadable_total = 0  # utterances skipped because their file could not be read
        self.unreadable_ids: set[int] = set()  # distinct training-set indices among them
        # files found silent or clipped, each reported once (by validation or when first loaded)
        self.level_warned: set[str] = {
            p for e in self.events if e["event"] == "audio_warnings" for p in e["paths"]
        }

    # ------------------------------------------------------------------ iteration
    def groups(self, update_freq: int, max_epochs: int | None) -> Iterator[list[dict]]:
        """Groups of ``update_freq`` usable batches (a shorter one at the end of an epoch),
        epoch after epoch until ``max_epochs``."""
        while max_epochs is None or self.epoch < max_epochs:
            self.sampler.set_epoch(self.epoch)
            self.train_set.set_epoch(self.epoch)
            self.collate.epoch = self.epoch
            fresh, produced = self.sampler.consumed == 0, False
            group: list[dict] = []
            for batch in self.loader:
                self.consumed += 1  # saved only between updates, when every batch read has been used
                self._note_unreadable(batch["skipped"], "train")
                self._note_level_warnings(batch.get("warned", ()), "train")
                if "waveform" not in batch:  # every utterance of the batch was unreadable
                    continue
                produced = True
                group.append(batch)
                if len(group) == update_freq:
                    yield group
                    group = []
            if group:
                yield group
            if fresh and not produced:
                raise DatasetError(
                    f"epoch {self.epoch} gave no usable batch: {len(self.train_set)} training "
                    f"utterances, none readable or none fits the batch size"
                )
            self.epoch += 1
            self.consumed = 0

    def valid_batches(self, limit: int | None = None) -> Iterator[dict]:
        """The usable validation batches (at most ``limit`` read); none at all, every file
        unreadable, is an error (a run without validation is asked for with data.valid_subset=null)."""
        usable = False
        if self.valid_loader is not None:  # the same batches every time, however many a limit read last time
            self.valid_loader.batch_sampler.restart()
        for i, batch in enumerate(self.valid_loader or ()):
            if limit is not None and i >= limit:
                break
            self._note_unreadable(batch["skipped"], "valid")
            self._note_level_warnings(batch.get("warned", ()), "valid")
            if "waveform" in batch:
                usable = True
                yield batch
        if self.valid_loader is not None and not usable:
            raise DatasetError(
                f"validation gave no usable batch: every file of "
                f"data.valid_subset={self.cfg.valid_subset} read was unreadable "
                f"(is the storage still there?). Fix the files and rerun the same command, or set "
                f"data.valid_subset=null to train without validation"
            )

    def _note_unreadable(self, skipped: list[dict], subset: str) -> None:
        """Count and queue an event per utterance whose file could not be read; stop if too many."""
        for item in skipped:
            self.unreadable_total += 1
            if subset == "train":
                self.unreadable_ids.add(item["id"])
            self.events.append(
                {
                    "event": "skipped_unreadable",
                    "subset": subset,
                    "path": item["path"],
                    "reason": _config_hints(item["reason"]),
                    "unreadable_total": self.unreadable_total,
                }
            )
        limit = self.cfg.max_unreadable_fraction * len(self.train_set)
        if skipped and len(self.unreadable_ids) > limit:
            last = skipped[-1]
            raise DatasetError(
                f"{len(self.unreadable_ids)} of {len(self.train_set)} training files became unreadable "
                f"during the run, more than "
                f"data.max_unreadable_fraction={self.cfg.max_unreadable_fraction}; stopping "
                f"(is the storage still there?). Last: {last['path']}: {_config_hints(last['reason'])}. "
                f"Fix the files and rerun the same command."
            )

    def _note_level_warnings(self, warned: Sequence[dict], subset: str) -> None:
        """Queue an ``audio_warnings`` event for loaded files found silent or clipped, once per file."""
        new = [w for w in warned if w["path"] not in self.level_warned]
        if not new:
            return
        self.level_warned.update(w["path"] for w in new)
        dataset = self.train_set if subset == "train" else self.valid_loader.dataset
        self.events.append(
            {
                "event": "audio_warnings",
                "subset": subset,
                "manifest": str(dataset.manifest_path),
                "count": len(new),
                "found_by": "loading",
                "warnings": [f"{w['path']}: {m}" for w in new for m in w["warnings"]],
                "paths": sorted(w["path"] for w in new),
            }
        )

    def take_events(self) -> list[dict[str, Any]]:
        """The queued events, oldest first; the queue is emptied."""
        events, self.events = self.events, []
        return events

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Entries of the training state (the checkpoint's format: sampler position and counts)."""
        return {
            "epoch": self.epoch,
            "sampler": {**self.sampler.state_dict(), "epoch": self.epoch, "consumed": self.consumed},
            "unreadable_total": self.unreadable_total,
            "unreadable_ids": sorted(self.unreadable_ids),
            "level_warned": sorted(self.level_warned),
            "train_rows": len(self.train_set),
        }

    def load_state_dict(self, state: dict[str, Any], rank: int = 0) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["sampler"]["consumed"])
        self.sampler.load_state_dict({**state["sampler"], "rank": rank})
        self.unreadable_total = int(state.get("unreadable_total", 0))
        self.unreadable_ids = {int(i) for i in state.get("unreadable_ids", [])}
        self.level_warned |= set(state.get("level_warned", []))
        rows = state.get("train_rows")
        if rows is not None and int(rows) != len(self.train_set):
            self.events.append(
                {"event": "train_rows_changed", "checkpoint_rows": int(rows), "rows": len(self.train_set)}
            )
