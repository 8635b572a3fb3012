"""The training loop shared by pretraining and CTC fine-tuning.

One update = ``update_freq`` micro-batches per process, all processes together (DDP).
Each micro-batch's loss is *summed* over its sample-size units; after accumulation the
gradients are scaled by ``world_size / global_sample_size`` (fairseq's normalisation,
the global count all-reduced), clipped, and applied, unless the loss or gradient is
non-finite: then the update is skipped and counted, and ``max_consecutive_nonfinite``
skips in a row stop the run with :class:`NonFiniteError`.

Bad data. Before any loader is built, every row of the train and valid manifests (and
labels) is checked (``data.validate``); problems raise one :class:`DatasetError` listing
them all, or with ``data.skip_invalid`` are dropped, counted and logged. A file that
becomes unreadable later is skipped when read, counted, logged (an ``event`` record in
metrics.jsonl) and the run goes on, up to ``data.max_unreadable_fraction`` of the set.
The output folder is checked for write access and free space before training; a failed
save stops the run with the previous checkpoint intact (see docs/reliability.md).

Reproducibility. Every random draw of a micro-batch (masks, distractors, Gumbel noise
through the model's ``generator``; dropout and layerdrop through torch's global RNG)
comes from seeds derived from ``(seed, update, slot)`` where ``slot = rank *
update_freq + micro_index``; crops come from ``(seed, epoch, utterance)``. So a resumed
run repeats an uninterrupted one bit for bit, and 2 processes x 1 micro-batch draw
exactly what 1 process x 2 micro-batches draws. All RNG states are also checkpointed.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from wav2vec2_lite.data.collate import collate
from wav2vec2_lite.data.dataset import DatasetError, is_skipped
from wav2vec2_lite.data.manifest import ManifestError
from wav2vec2_lite.data.sampler import BucketBatchSampler
from wav2vec2_lite.data.validate import validate_dataset
from wav2vec2_lite.train.health import HealthMonitor
from wav2vec2_lite.train import distributed as dist_utils
from wav2vec2_lite.train.checkpoint import (
    CheckpointError, capture_rng_state, load_checkpoint, remove_stale_temps, resolve_checkpoint, restore_rng_state,
    save_checkpoint,
)
from wav2vec2_lite.train.config import flatten_lr_scale
from wav2vec2_lite.train.logging import MetricsLogger, peak_memory_mb, write_run_info
from wav2vec2_lite.train.precision import Precision
from wav2vec2_lite.train.schedules import build_schedule
from wav2vec2_lite.train.tasks import build_task

__all__ = ["Trainer", "NonFiniteError", "RunDirError", "DatasetError", "derive_seed", "param_groups", "train"]


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


class RunDirError(RuntimeError):
    """The run directory cannot hold the run's outputs (not writable, not enough free space)."""


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _under(name: str, prefix: str) -> bool:
    """Parameter ``name`` lies under module path ``prefix`` (``a.b`` covers ``a.b.w``, not ``a.bc``)."""
    return name == prefix or name.startswith(prefix + ".")


def param_groups(model: nn.Module, weight_decay: float, decay_bias_and_norm: bool,
                 lr_scale: dict[str, Any] | None = None) -> list[dict]:
    """AdamW groups of the trainable parameters, split by weight decay and learning-rate scale.

    No weight decay on biases, norm weights and other 1-D parameters (unless
    ``decay_bias_and_norm``). ``lr_scale`` maps parameter-name prefixes (``lm_head``,
    ``wav2vec2.context``; nested dicts are joined with dots) to multiples of the base lr; each
    parameter takes its longest matching prefix, 1.0 if none. Each group carries its
    ``lr_scale``, which :meth:`LRSchedule.step` applies. A prefix that matches no trainable
    parameter is an error (a typo would otherwise train everything at one lr, silently).
    """
    scales = {k: float(v) for k, v in flatten_lr_scale(lr_scale or {}).items()}
    named = list(model.named_parameters())
    for prefix in scales:
        hits = [p for n, p in named if _under(n, prefix)]
        if not hits:
            parts = sorted({".".join(n.split(".")[:2]) for n, _ in named})
            raise ValueError(f"optim.lr_scale: {prefix!r} names no parameter of this model; "
                             f"its parts include {', '.join(parts)}")
        if not any(p.requires_grad for p in hits):
            raise ValueError(f"optim.lr_scale: {prefix!r} names only frozen parameters "
                             f"(finetune.freeze_feature_encoder?)")
    by_key: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        matches = [k for k in scales if _under(name, k)]
        scale = scales[max(matches, key=len)] if matches else 1.0
        by_key.setdefault((scale, decay_bias_and_norm or p.ndim >= 2), []).append(p)
    groups = [{"params": ps, "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale}
              for (scale, decays), ps in by_key.items()]
    return sorted(groups, key=lambda g: (g["lr_scale"] != 1.0, g["weight_decay"] == 0.0))


class _Collate:
    """Picklable collate whose crop offsets depend only on (seed, epoch, utterance ids).

    Items the dataset could not read (``is_skipped``) are left out and listed in the batch's
    ``skipped`` (``[{"id", "path", "reason"}]``); a batch of only such items has no ``waveform``.
    """

    def __init__(self, crop_to_shortest: bool, seed: int) -> None:
        self.crop_to_shortest, self.seed, self.epoch = crop_to_shortest, seed, 0

    def __call__(self, items: list[dict]) -> dict:
        skipped = [{"id": int(i["id"]), "path": i["path"], "reason": i["error"]} for i in items if is_skipped(i)]
        items = [i for i in items if not is_skipped(i)]
        if not items:
            return {"skipped": skipped}
        gen = None
        if self.crop_to_shortest:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, *[int(i["id"]) for i in items]))
        batch = collate(items, crop_to_shortest=self.crop_to_shortest, generator=gen)
        batch["skipped"] = skipped
        return batch


def _describe_data_event(e: dict[str, Any]) -> str:
    """One terminal message for a data ``event`` record."""
    where = e.get("manifest", "train set")
    if e["event"] == "skipped_invalid":
        shown = e["problems"][:20]
        return (f"{where}: skipping {e['count']} invalid row(s) (data.skip_invalid=true):\n  " + "\n  ".join(shown)
                + ("\n  ..." if len(e["problems"]) > len(shown) else ""))
    if e["event"] == "skipped_too_short":
        return f"{where}: skipping {e['count']} row(s) shorter than the {e['min_samples']}-sample receptive field"
    if e["event"] == "skipped_too_long":
        return f"{where}: skipping {e['count']} row(s) longer than data.max_duration_s={e['max_duration_s']}"
    if e["event"] == "skipped_labelled_too_long":
        return (f"{where}: skipping {e['count']} labelled row(s) longer than data.max_sample_size="
                f"{e['max_sample_size']} (a crop would cut the transcript)")
    if e["event"] == "skipped_empty_transcript":
        return f"{where}: skipping {e['count']} row(s) with an empty transcript"
    if e["event"] == "train_rows_changed":
        return (f"resuming with {e['rows']} training rows, the checkpoint was written with {e['checkpoint_rows']}: "
                f"files changed since; the data order differs from an uninterrupted run")
    return f"{where}: {e}"


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Trainer:
    """Builds everything from a typed run config and runs :meth:`fit`."""

    def __init__(self, cfg, run_dir: str | os.PathLike | None = None) -> None:
        self.cfg = cfg
        t = cfg.trainer
        self.dist, self.device = dist_utils.init_distributed(t.dist_backend, t.device)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.run_dir = Path(run_dir or cfg.run_dir or os.getcwd()).resolve()
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.is_main = self.dist.is_main
        if self.is_main:
            self._check_writable()
            remove_stale_temps(self.ckpt_dir)  # left by a process killed while saving

        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        import random

        random.seed(t.seed)
        self.task = build_task(cfg)
        self.model = self.task.build_model().to(self.device)
        if t.gradient_checkpointing:
            self._backbone().context.gradient_checkpointing = True
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.optim.weight_decay, cfg.optim.decay_bias_and_norm, cfg.optim.lr_scale),
            lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
            foreach=False if self.device.type == "cpu" else None)
        self.schedule = build_schedule(cfg.schedule, cfg.optim.lr, t.max_updates)
        self.precision = Precision(t.precision, self.device.type)
        self.generator = torch.Generator()  # masks / distractors / Gumbel noise (drawn on CPU by the model)
        if self.is_main:
            self._check_free_space()

        # data: every row checked before any loader exists (one error listing all bad rows)
        self._data_events: list[dict[str, Any]] = []
        rows = self._validate_data()
        min_samples = self.model.config.receptive_field  # no utterance (or crop) gives zero frames
        self.train_set = self.task.dataset(cfg.data.train_subset, train=True, min_samples=min_samples,
                                           indices=rows.get(cfg.data.train_subset))
        self._note_dataset("train", self.train_set, rows.get(cfg.data.train_subset))
        self.sampler = BucketBatchSampler(
            self.train_set.sizes, max_tokens=cfg.data.max_tokens, max_batch_size=cfg.data.max_batch_size,
            num_buckets=cfg.data.num_buckets, shuffle=True, seed=t.seed, rank=self.dist.rank,
            world_size=self.dist.world_size, too_long=cfg.data.too_long)
        self.collate = _Collate(self.task.crop_to_shortest, t.seed)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self.collate,
                                 num_workers=cfg.data.num_workers)
        self.valid_loader = None
        if cfg.data.valid_subset:
            vset = self.task.dataset(cfg.data.valid_subset, train=False, min_samples=min_samples,
                                     indices=rows.get(cfg.data.valid_subset))
            self._note_dataset("valid", vset, rows.get(cfg.data.valid_subset))
            vsampler = BucketBatchSampler(vset.sizes, max_tokens=cfg.data.max_tokens_valid or cfg.data.max_tokens,
                                          max_batch_size=cfg.data.max_batch_size, shuffle=False, seed=t.seed,
                                          rank=self.dist.rank, world_size=self.dist.world_size,
                                          too_long=cfg.data.too_long)
            self.valid_loader = DataLoader(vset, batch_sampler=vsampler, collate_fn=_Collate(False, t.seed),
                                           num_workers=cfg.data.num_workers)

        # progress counters (all checkpointed)
        self.update = 0
        self.epoch = 0
        self.consumed = 0  # batches of this rank processed in self.epoch
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.overflow_total = 0  # fp16 overflows (skipped, not failures)
        self.unreadable_total = 0  # utterances skipped because their file could not be read
        self.unreadable_ids: set[int] = set()  # distinct training-set indices among them
        self.best: float | None = None
        self.best_metric = t.best_metric or self.task.default_best_metric

        cfg_model = self.model.config
        self.health = HealthMonitor(cfg.health, task=self.task.name, num_negatives=cfg_model.num_negatives,
                                    num_codes_per_group=cfg_model.num_codes_per_group,
                                    num_code_groups=cfg_model.num_code_groups,
                                    warmup_updates=self._warmup_updates())

        resumed = self._maybe_resume() if t.resume else False
        self.train_model = self._wrap()
        self.logger = MetricsLogger(self.run_dir, enabled=self.is_main, tensorboard=t.tensorboard,
                                    progress=t.progress, total_updates=t.max_updates,
                                    resume_update=self.update if resumed else None)
        if self.is_main:
            from omegaconf import OmegaConf

            write_run_info(self.run_dir, seed=t.seed, config_yaml=OmegaConf.to_yaml(OmegaConf.structured(cfg)),
                           device=str(self.device), extra={"world_size": self.dist.world_size,
                                                           "resumed_from_update": self.update if resumed else None,
                                                           "num_parameters": sum(p.numel() for p in self.model.parameters())})
        for event in self._data_events:  # skips of bad input are "event" records, summaries "data" records
            kind = "data" if event["event"] in ("data_validated", "dataset_filtered") else "event"
            self.logger.log(kind, self.update, event, epoch=self.epoch)
            if kind == "event":
                self.logger.write(_describe_data_event(event))

    # ------------------------------------------------------------------ setup helpers
    def _backbone(self) -> nn.Module:
        return self.model.wav2vec2

    def _check_writable(self) -> None:
        """Fail before training, not at the first checkpoint, if outputs cannot be written."""
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            for folder in (self.run_dir, self.ckpt_dir):
                probe = folder / f".write-probe-{os.getpid()}"
                with open(probe, "wb") as f:
                    f.write(b"ok")
                    f.flush()
                    os.fsync(f.fileno())
                probe.unlink()
        except OSError as e:
            raise RunDirError(f"run directory {self.run_dir} is not writable ({e}); set run_dir to a writable "
                              f"folder") from e

    def _check_free_space(self) -> None:
        """Fail before training if two checkpoints cannot fit (one is written in full before the
        previous one is deleted)."""
        weights = sum(v.numel() * v.element_size() for v in self.model.state_dict().values())
        moments = 2 * sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        need = 2 * (weights + moments)
        free = shutil.disk_usage(self.ckpt_dir).free
        if free < need:
            raise RunDirError(
                f"{self.ckpt_dir}: only {free / 2**20:.1f} MiB free; a checkpoint of this model takes about "
                f"{(weights + moments) / 2**20:.1f} MiB and two must fit while one replaces the other. Free some "
                f"space or set run_dir to a larger disk.")

    def _validate_data(self) -> dict[str, list[int] | None]:
        """Rows of each subset to use (None: all) after ``validate_dataset`` (``data.validate``)."""
        d, mode = self.cfg.data, self.cfg.data.validate
        subsets = [d.train_subset] + ([d.valid_subset] if d.valid_subset else [])
        if mode == "false":
            return {s: None for s in subsets}
        mc = self.model.config
        start = time.perf_counter()
        reports, fatal = {}, []
        for subset in subsets:
            files = self.task.data_files(subset)
            try:
                reports[subset] = validate_dataset(
                    **files, sample_rate=d.sample_rate, min_sample_size=mc.receptive_field,
                    max_sample_size=d.max_sample_size if "labels_path" in files else None,
                    max_duration_s=d.max_duration_s, skip_invalid=True, check_audio=mode, mono=d.mono,
                    resample=d.resample, conv_kernel=mc.conv_kernel, conv_stride=mc.conv_stride, warn=False)
            except (DatasetError, ManifestError) as e:  # e.g. labels that cannot be paired with rows
                fatal.append(f"  {e}")
        seconds = time.perf_counter() - start
        bad = [r for r in reports.values() if r.problems]
        if fatal or (bad and not d.skip_invalid):
            n_problems = sum(len(r.problems) for r in bad)
            n_rows = sum(r.num_invalid for r in bad)
            raise DatasetError(
                f"data validation (data.validate={mode}) found {n_problems} problem(s) in {n_rows} row(s)"
                + (f" and {len(fatal)} unusable file(s)" if fatal else "")
                + "; nothing was trained. Fix or remove them"
                + ("" if fatal else ", or set data.skip_invalid=true to train on the valid rows")
                + " (data.validate=false turns this check off):\n" + "\n".join(fatal + [r.format() for r in bad]))
        for subset, r in reports.items():
            self._data_events.append({"event": "data_validated", "subset": subset, "manifest": str(r.manifest_path),
                                      "mode": mode, "rows": r.num_rows, "invalid": r.num_invalid,
                                      "seconds": round(seconds, 3)})
            if r.problems:
                self._data_events.append({
                    "event": "skipped_invalid", "subset": subset, "manifest": str(r.manifest_path),
                    "count": r.num_invalid,
                    "problems": [f"{r.manifest_path}:{p.line_no}: {p.path}: {p.message}" for p in r.problems]})
        return {s: r.valid_indices for s, r in reports.items()}

    def _note_dataset(self, subset: str, ds, rows: list[int] | None) -> None:
        """Rows the dataset drops: unusable ones (shorter than the receptive field, longer than
        ``data.max_duration_s``, labelled and longer than ``max_sample_size``, empty transcript)
        are ``event`` records; the rest of the short ones (``data.min_sample_size``, by design)
        a ``data`` record."""
        rf = self.model.config.receptive_field
        sizes = ds.manifest.sizes
        below_rf = sum(1 for r in (range(len(sizes)) if rows is None else rows) if sizes[r] < rf)
        base = {"subset": subset, "manifest": str(ds.manifest_path)}
        for name, count, extra in (("skipped_too_short", below_rf, {"min_samples": rf}),
                                   ("skipped_too_long", ds.num_skipped_duration,
                                    {"max_duration_s": self.cfg.data.max_duration_s}),
                                   ("skipped_labelled_too_long", ds.num_skipped_long,
                                    {"max_sample_size": self.cfg.data.max_sample_size}),
                                   ("skipped_empty_transcript", ds.num_skipped_empty, {})):
            if count:
                self._data_events.append({"event": name, **base, "count": count, **extra})
        if ds.num_skipped_short > below_rf:
            self._data_events.append({"event": "dataset_filtered", **base, "rows": len(ds),
                                      "shorter_than_min_sample_size": ds.num_skipped_short - below_rf,
                                      "min_sample_size": ds.min_sample_size})

    def _count_unreadable(self, skipped: list[dict], subset: str) -> None:
        """Count, log and record utterances whose file could not be read; stop if too many."""
        for item in skipped:
            self.unreadable_total += 1
            if subset == "train":
                self.unreadable_ids.add(item["id"])
            self.logger.log("event", self.update, {"event": "skipped_unreadable", "subset": subset,
                                                   "path": item["path"], "reason": item["reason"],
                                                   "unreadable_total": self.unreadable_total}, epoch=self.epoch)
            self.logger.write(f"update {self.update}: skipped {item['path']}: {item['reason']} "
                              f"({self.unreadable_total} unreadable so far)")
        limit = self.cfg.data.max_unreadable_fraction * len(self.train_set)
        if skipped and len(self.unreadable_ids) > limit:
            last = skipped[-1]
            raise DatasetError(
                f"{len(self.unreadable_ids)} of {len(self.train_set)} training files became unreadable during the "
                f"run, more than data.max_unreadable_fraction={self.cfg.data.max_unreadable_fraction}; stopping "
                f"(is the storage still there?). Last: {last['path']}: {last['reason']}. The last checkpoint "
                f"{self.ckpt_dir / 'last'} is intact: fix the files and rerun the same command to resume.")

    def _wrap(self) -> nn.Module:
        model: nn.Module = self.model
        if self.cfg.trainer.compile:
            model = torch.compile(model, dynamic=True)
        if self.dist.world_size > 1:
            find_unused = self.cfg.trainer.find_unused_parameters
            if find_unused is None:
                freeze = getattr(getattr(self.cfg, "finetune", None), "freeze_finetune_updates", 0)
                find_unused = self.model.config.layerdrop > 0 or freeze > self.update
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused)
        return model

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        from omegaconf import OmegaConf

        return {
            "update": self.update, "epoch": self.epoch, "task": self.task.name,
            "sampler": {**self.sampler.state_dict(), "epoch": self.epoch, "consumed": self.consumed},
            "optimizer": self.optimizer.state_dict(), "precision": self.precision.state_dict(),
            "rng": capture_rng_state(self.generator), "best": self.best, "best_metric": self.best_metric,
            "nonfinite_total": self.nonfinite_total, "nonfinite_in_row": self.nonfinite_in_row,
            "overflow_total": self.overflow_total,
            "unreadable_total": self.unreadable_total, "unreadable_ids": sorted(self.unreadable_ids),
            "train_rows": len(self.train_set),
            "config": OmegaConf.to_container(OmegaConf.structured(self.cfg)),
        }

    def save(self, name: str = "last") -> Path | None:
        if not self.is_main:
            return None

        def weights(model: nn.Module, directory: Path) -> None:
            from wav2vec2_lite.serialization import save_model

            save_model(model, directory)
            if hasattr(self.task, "save_extras"):
                self.task.save_extras(directory)

        try:
            return save_checkpoint(self.ckpt_dir, name, self.model, self._state(), save_weights=weights)
        except CheckpointError as e:
            raise CheckpointError(f"{e}. Training stopped at update {self.update}; once the cause is fixed, rerun "
                                  f"the same command to resume from the last checkpoint written.") from e

    def _maybe_resume(self) -> bool:
        folder = resolve_checkpoint(self.ckpt_dir, "last")
        if folder is None:
            return False
        state = load_checkpoint(folder, self.model)
        if state.get("task") != self.task.name:
            raise CheckpointError(f"{folder}: is a {state.get('task')!r} checkpoint, this run is {self.task.name!r}")
        saved_scale = flatten_lr_scale((state.get("config") or {}).get("optim", {}).get("lr_scale") or {})
        wanted_scale = flatten_lr_scale(self.cfg.optim.lr_scale)
        if saved_scale != wanted_scale:
            raise CheckpointError(f"{folder}: was written with optim.lr_scale={saved_scale}, this run asks for "
                                  f"{wanted_scale}; resume with the same per-part "
                                  f"learning rates, or start a new run directory")
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state["precision"])
        restore_rng_state(state["rng"], self.generator)
        self.update, self.epoch = int(state["update"]), int(state["epoch"])
        self.consumed = int(state["sampler"]["consumed"])
        self.sampler.load_state_dict({**state["sampler"], "rank": self.dist.rank})
        self.best = state.get("best")
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.nonfinite_in_row = int(state.get("nonfinite_in_row", 0))
        self.overflow_total = int(state.get("overflow_total", 0))
        self.unreadable_total = int(state.get("unreadable_total", 0))
        self.unreadable_ids = {int(i) for i in state.get("unreadable_ids", [])}
        rows = state.get("train_rows")
        if rows is not None and int(rows) != len(self.train_set):
            self._data_events.append({"event": "train_rows_changed", "checkpoint_rows": int(rows),
                                      "rows": len(self.train_set)})
        return True

    # ------------------------------------------------------------------ one update
    def _micro_batches(self) -> Iterator[list[dict]]:
        """Groups of ``update_freq`` batches; a shorter group at the end of an epoch."""
        uf = self.cfg.trainer.update_freq
        max_epochs = self.cfg.trainer.max_epochs
        while max_epochs is None or self.epoch < max_epochs:
            self.sampler.set_epoch(self.epoch)
            self.train_set.set_epoch(self.epoch)
            self.collate.epoch = self.epoch
            fresh, produced = self.sampler.consumed == 0, False
            group: list[dict] = []
            for batch in self.loader:
                if batch["skipped"]:
                    self._count_unreadable(batch["skipped"], "train")
                if "waveform" not in batch:  # every utterance of the batch was unreadable
                    self.consumed += 1
                    continue
                produced = True
                group.append(batch)
                if len(group) == uf:
                    yield group
                    group = []
            if group:
                yield group
            if fresh and not produced:
                raise DatasetError(f"epoch {self.epoch} gave no usable batch: {len(self.train_set)} training "
                                   f"utterances, none readable or none fits the batch size")
            self.epoch += 1
            self.consumed = 0

    def train_step(self, group: list[dict]) -> dict[str, float] | None:
        """Forward/backward over the micro-batches of one update; returns stats or None if skipped."""
        t = self.cfg.trainer
        model, ddp = self.model, self.train_model
        model.train()
        extra = self.task.before_update(model, self.update)
        lr = self.schedule.step(self.optimizer, self.update)
        totals: dict[str, torch.Tensor] = {}
        nonfinite_loss = torch.zeros(())
        for i, batch in enumerate(group):
            slot = self.dist.rank * t.update_freq + i
            torch.manual_seed(derive_seed(t.seed, self.update, slot, 0))
            self.generator.manual_seed(derive_seed(t.seed, self.update, slot, 1))
            batch = _to_device(batch, self.device)
            sync = i == len(group) - 1 or not isinstance(ddp, nn.parallel.DistributedDataParallel)
            with (contextlib.nullcontext() if sync else ddp.no_sync()):
                with self.precision.autocast():
                    loss_sum, stats = self.task.loss(ddp, batch, self.generator)
                if not torch.isfinite(loss_sum.detach()):
                    nonfinite_loss += 1
                self.precision.scale(loss_sum.float()).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, torch.zeros(())) + v.detach().float().cpu()
            totals["samples"] = totals.get("samples", torch.zeros(())) + float(batch["lengths"].sum())
            self.consumed += 1
        totals["nonfinite_loss"] = nonfinite_loss
        keys = sorted(totals)
        flat = dist_utils.all_reduce_sum(torch.stack([totals[k] for k in keys]).to(self.device)).cpu()
        totals = {k: float(v) for k, v in zip(keys, flat)}

        params = [p for p in model.parameters() if p.grad is not None]
        self.precision.unscale_(self.optimizer)
        n = totals["sample_size"]
        if n > 0:
            scale = self.dist.world_size / n
            for p in params:
                p.grad.mul_(scale)
        if totals["nonfinite_loss"] > 0 or n <= 0:
            grad_norm = float("nan")
        elif self.cfg.optim.clip_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_norm))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params])) if params else 0.0
        if not math.isfinite(grad_norm) and self.precision.uses_scaler and totals["nonfinite_loss"] == 0:
            # fp16 gradient overflow with a finite loss: routine, back off the loss scale and retry
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.skip()
            self.overflow_total += 1
            if self.precision.loss_scale < self.precision.min_scale:
                raise NonFiniteError(
                    f"fp16 loss scale fell below {self.precision.min_scale} at update {self.update}: gradients "
                    f"overflow even unscaled. Try trainer.precision=bf16 or 32, a lower optim.lr, optim.clip_norm.")
            return None
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.skip()
            self.nonfinite_total += 1
            self.nonfinite_in_row += 1
            self.logger.log("event", self.update, {"event": "skipped_nonfinite", "nonfinite_in_row": self.nonfinite_in_row,
                                                   "nonfinite_total": self.nonfinite_total,
                                                   "loss_sum": totals["loss_sum"], "loss_scale": self.precision.loss_scale},
                            epoch=self.epoch)
            self.logger.write(f"update {self.update}: non-finite loss/gradient, update skipped "
                              f"({self.nonfinite_in_row} in a row, {self.nonfinite_total} in total)")
            if self.nonfinite_in_row >= t.max_consecutive_nonfinite:
                raise NonFiniteError(
                    f"{self.nonfinite_in_row} updates in a row had a non-finite loss or gradient (last at update "
                    f"{self.update}); stopping. The last good checkpoint is {self.ckpt_dir / 'last'}. Try a lower "
                    f"optim.lr, a longer schedule.warmup_updates, optim.clip_norm, or trainer.precision=bf16/32.")
            return None
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_row = 0
        self.update += 1
        out = {**totals, "lr": lr, "grad_norm": grad_norm, **extra}
        if self.precision.uses_scaler:
            out["loss_scale"] = self.precision.loss_scale
            out["fp16_overflows"] = self.overflow_total
        return out

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        if self.valid_loader is None:
            return None
        model = self.model
        was_training = model.training
        model.eval()
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.trainer.seed, 7919, self.dist.rank))
        totals: dict[str, torch.Tensor] = {}
        limit = self.cfg.trainer.max_valid_batches
        for i, batch in enumerate(self.valid_loader):
            if limit is not None and i >= limit:
                break
            if batch["skipped"]:
                self._count_unreadable(batch["skipped"], "valid")
            if "waveform" not in batch:
                continue
            with self.precision.autocast():
                stats = self.task.eval_batch(model, _to_device(batch, self.device), gen)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v.detach().float().cpu()
        model.train(was_training)
        if not totals:
            return None
        for k in sorted(totals):
            totals[k] = dist_utils.all_reduce_sum(torch.as_tensor(totals[k]).to(self.device)).cpu()
        return self.task.summarize(totals)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        t = self.cfg.trainer
        last_valid: dict[str, float] | None = None
        window: dict[str, float] = {}
        window_time, window_updates = 0.0, 0
        step_start = time.perf_counter()
        try:
            if self.update >= t.max_updates:
                return {"update": self.update, "valid": self.validate()}
            for group in self._micro_batches():
                out = self.train_step(group)
                now = time.perf_counter()
                elapsed, step_start = now - step_start, now
                if out is None:
                    self._health_log(self.health.check_train(self.update, {"nonfinite": 1.0}))
                    continue
                window_time += elapsed
                window_updates += 1
                for k, v in out.items():
                    if isinstance(v, (int, float)):
                        window[k] = window.get(k, 0.0) + v if k not in ("lr", "grad_norm", "gumbel_temp", "loss_scale",
                                                                        "encoder_frozen", "fp16_overflows") else v
                summary = self.task.summarize(out)
                self._health_log(self.health.check_train(self.update, {
                    **summary, "grad_norm": out["grad_norm"], "loss_scale": out.get("loss_scale"),
                    "nonfinite": 0.0, "ctc_inf": out.get("ctc_inf", 0.0)}))
                audio_s = out["samples"] / self.cfg.data.sample_rate
                self.logger.progress(1, loss=summary["loss"], lr=out["lr"], audio_s_per_s=audio_s / max(elapsed, 1e-9))
                if self.update % t.log_interval == 0 or self.update == t.max_updates:
                    rec = self.task.summarize(window)
                    rec.update({k: window[k] for k in ("lr", "grad_norm", "gumbel_temp", "loss_scale", "encoder_frozen",
                                                       "fp16_overflows")
                                if k in window})
                    rec.update(step_time_s=window_time / window_updates,
                               audio_s_per_s=window["samples"] / self.cfg.data.sample_rate / max(window_time, 1e-9),
                               samples_per_s=window["samples"] / max(window_time, 1e-9),
                               nonfinite_total=self.nonfinite_total, **peak_memory_mb(self.device))
                    self.logger.log("train", self.update, rec, epoch=self.epoch)
                    window, window_time, window_updates = {}, 0.0, 0
                do_valid = (t.valid_interval and self.update % t.valid_interval == 0
                            and self.update >= t.valid_after_updates)
                if do_valid or self.update == t.max_updates:
                    last_valid = self._validate_and_keep_best()
                if self.update % t.save_interval == 0 or self.update == t.max_updates:
                    self.save("last")
                    dist_utils.barrier()
                if self.update >= t.max_updates:
                    break
                step_start = time.perf_counter()
            else:  # max_epochs reached
                last_valid = self._validate_and_keep_best()
                self.save("last")
        finally:
            self.logger.close()
        return {"update": self.update, "epoch": self.epoch, "valid": last_valid,
                "nonfinite_total": self.nonfinite_total, "run_dir": str(self.run_dir)}

    def _warmup_updates(self) -> int:
        """Updates of lr warmup (the health monitor's grace period starts after them)."""
        sch, total = self.cfg.schedule, self.cfg.schedule.total_updates or self.cfg.trainer.max_updates
        if sch.name == "tri_stage":
            return int(sch.phase_ratio[0] * total)
        return min(sch.warmup_updates, total) if sch.name == "polynomial" else 0

    def _health_log(self, warnings: list) -> None:
        """Health warnings go to the terminal once and to metrics.jsonl as ``health`` records."""
        for w in warnings:
            record = w.record()
            del record["kind"], record["update"]
            self.logger.log("health", w.update, record, epoch=self.epoch)
            self.logger.write(w.message)

    def _validate_and_keep_best(self) -> dict[str, float] | None:
        metrics = self.validate()
        if metrics is None:
            return None
        self.logger.log("valid", self.update, metrics, epoch=self.epoch)
        self._health_log(self.health.check_valid(self.update, metrics))
        self.logger.write(f"valid @ {self.update}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        value = metrics.get(self.best_metric)
        if value is None:
            raise KeyError(f"trainer.best_metric={self.best_metric!r} is not a validation metric; "
                           f"choose one of {sorted(metrics)}")
        better = self.best is None or (value < self.best if self.cfg.trainer.best_mode == "min" else value > self.best)
        if better:
            self.best = value
            self.save("best")
        return metrics


def train(cfg, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from a typed config (see ``train.config.to_run_config``) and fit it."""
    try:
        return Trainer(cfg, run_dir).fit()
    finally:
        dist_utils.destroy()
