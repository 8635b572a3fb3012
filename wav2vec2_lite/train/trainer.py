"""The training loop shared by pretraining and CTC fine-tuning.

One update = ``update_freq`` micro-batches per process, all processes together (DDP).
Each micro-batch's loss is *summed* over its sample-size units; after accumulation the
gradients are scaled by ``world_size / global_sample_size`` (fairseq's normalisation,
the global count all-reduced), clipped, and applied, unless the loss or gradient is
non-finite: then the update is skipped and counted, and ``max_consecutive_nonfinite``
skips in a row stop the run with :class:`NonFiniteError`.

What the loop iterates comes from :class:`~wav2vec2_lite.data.pipeline.TrainingData`
(every manifest row checked before any loader exists, unreadable files skipped and
counted); the run folder is checked and resumed by :class:`~wav2vec2_lite.train.run_dir.RunDir`;
what differs between pretraining and fine-tuning is the task (:class:`~wav2vec2_lite.train.task.Task`).

Reproducibility. Every random draw of a micro-batch (masks, distractors, Gumbel noise
through the model's ``generator``; dropout and layerdrop through torch's global RNG)
comes from seeds derived from ``(seed, update, slot)`` where ``slot = rank *
update_freq + micro_index``; crops come from ``(seed, epoch, utterance)``. So a resumed
run repeats an uninterrupted one bit for bit, and 2 processes x 1 micro-batch draw
exactly what 1 process x 2 micro-batches draws. All RNG states are also checkpointed.

Saving and resuming live in :mod:`~wav2vec2_lite.train.resume`; the gradients' scaling and
clipping, and skipped updates, in :mod:`~wav2vec2_lite.train.update_step`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from wav2vec2_lite.compile import compile_dense
from wav2vec2_lite.data.collate import derive_seed
from wav2vec2_lite.data.pipeline import SUMMARY_EVENTS, TrainingData, describe
from wav2vec2_lite.train import distributed as dist_utils
from wav2vec2_lite.train.checkpoint import CheckpointError
from wav2vec2_lite.train.config import config_container
from wav2vec2_lite.train.device import check_device
from wav2vec2_lite.train.logging import MetricsLogger, peak_memory_mb, write_run_info
from wav2vec2_lite.train.optim import build_optimizer
from wav2vec2_lite.train.precision import Precision
from wav2vec2_lite.train.resume import Checkpointing
from wav2vec2_lite.train.run_dir import RunDir
from wav2vec2_lite.train.schedules import build_schedule
from wav2vec2_lite.train.stats import Sums, UpdateStats, UpdateWindow
from wav2vec2_lite.train.task import Task
from wav2vec2_lite.train.tasks import build_task
from wav2vec2_lite.train.update_step import NonFiniteError, UpdateNumerics

__all__ = ["Trainer", "NonFiniteError", "train"]  # NonFiniteError: raised out of fit()


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _seed_draws(seed: int, device: torch.device) -> None:
    """Seed the generator ``device``'s dropout and LayerDrop draw from: on CPU the CPU one alone
    (``torch.manual_seed`` also queues accelerator seeds, formatting a traceback each call)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
    }


class Trainer(Checkpointing, UpdateNumerics):
    """Builds everything from a typed run config (``train.config.to_run_config``) and runs :meth:`fit`."""

    def __init__(self, cfg, run_dir: str | os.PathLike | None = None) -> None:
        self.cfg, t = cfg, cfg.trainer
        check_device(t.device)  # here, not in the config's check: a config may be composed on another machine
        self.dist, self.device = dist_utils.init_distributed(t.dist_backend, t.device)
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        self.run = RunDir(run_dir or cfg.run_dir or os.getcwd())
        self.run_dir, self.ckpt_dir, self.is_main = self.run.path, self.run.checkpoints, self.dist.is_main
        if self.is_main:
            self.run.prepare()  # writable, stale temporary saves removed

        _seed_everything(t.seed)
        self.task: Task = build_task(cfg)
        self.model = self.task.build_model().to(self.device)
        if t.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.precision = Precision(t.precision, self.device.type)
        # bf16/fp16: the fast modules for this CPU; the one-op weight cast not under DDP with
        # LayerDrop (a skipped block's weights would reach that op without a gradient, which DDP waits for)
        self.precision.attach(
            self.model, flat_weights=not (self.dist.world_size > 1 and self.model.config.layerdrop > 0)
        )
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.schedule = build_schedule(cfg.schedule, cfg.optim.lr, t.max_updates)
        self.generator = torch.Generator()  # masks / distractors / Gumbel noise (drawn on CPU by the model)
        if self.is_main:
            self.run.check_free_space(self.model)
        self.data = TrainingData(
            cfg.data,
            self.task,
            self.model.config,
            seed=t.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            pin_memory=self.device.type == "cuda",
        )

        # progress (all checkpointed, with the data's position)
        self.update = 0
        self.saved_update: int | None = None  # the update checkpoints/last holds, once one exists
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.overflow_total = 0  # fp16 overflows (skipped, not failures)
        self.best: float | None = None
        self.best_metric = t.best_metric or self.task.default_best_metric
        self.health = self.task.health_monitor(cfg.health, warmup_updates=self.schedule.warmup_updates)

        resumed = self._resume() if t.resume else False
        self.train_model = self._wrap()
        self.logger = MetricsLogger(
            self.run_dir,
            enabled=self.is_main,
            tensorboard=t.tensorboard,
            progress=t.progress,
            total_updates=t.max_updates,
            resume_update=self.update if resumed else None,
        )
        if resumed:
            self.logger.write(f"resuming from update {self.update} ({self.ckpt_dir / 'last'})")
        self._warn_long_warmup()
        if self.is_main:
            changed = write_run_info(
                self.run_dir,
                seed=t.seed,
                config_yaml=OmegaConf.to_yaml(config_container(cfg)),
                device=str(self.device),
                extra={
                    "world_size": self.dist.world_size,
                    "resumed_from_update": self.update if resumed else None,
                    "num_parameters": sum(p.numel() for p in self.model.parameters()),
                },
            )
            if changed and resumed:
                self.logger.log("event", self.update, {"event": "config_changed", "changes": changed})
                self.logger.write(
                    f"warning: the config differs from the earlier run's in {len(changed)} key(s) "
                    f"(config.yaml now holds the new one; run.json keeps the changes): " + "; ".join(changed)
                )
        self._log_data_events()

    def _warn_long_warmup(self) -> None:
        """A counted warning (an ``event`` and a line) when the warm-up is longer than the run: the
        learning rate would never reach ``optim.lr``."""
        warmup, total = getattr(self.cfg.schedule, "warmup_updates", 0), self.schedule.total_updates
        if warmup <= total:
            return
        peak = self.schedule.lr_at(total - 1)
        self.logger.log(
            "event",
            self.update,
            {
                "event": "warmup_longer_than_run",
                "warmup_updates": warmup,
                "total_updates": total,
                "peak_lr": peak,
            },
        )
        self.logger.write(
            f"warning: schedule.warmup_updates={warmup} is longer than the run ({total} updates): the "
            f"learning rate only rises to {peak:.3g}, {total / warmup:.1%} of optim.lr={self.schedule.lr:g}; "
            f"lower schedule.warmup_updates (the paper warms up over 8 % of the run) or raise "
            f"trainer.max_updates"
        )

    # the data's position, read by tests and tools
    train_set = property(lambda self: self.data.train_set)
    epoch = property(lambda self: self.data.epoch)
    consumed = property(lambda self: self.data.consumed)

    def _wrap(self) -> nn.Module:
        model: nn.Module = self.model
        if self.cfg.trainer.compile:
            compile_dense(self.model)  # in place: projection, context network, CTC head
        if self.dist.world_size > 1:
            find_unused = self.cfg.trainer.find_unused_parameters
            if find_unused is None:
                cfg = self.model.config  # layers skipped, a frozen encoder, or an unused mask embedding
                find_unused = (
                    cfg.layerdrop > 0 or self.task.frozen_encoder(self.update) or cfg.mask_time_prob <= 0
                )
            model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=find_unused,
            )
        return model

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``trainer.max_updates`` (or ``max_epochs``), validating, logging and saving on
        the way; a run already there only validates. Returns where it ended and its last validation."""
        start_update = self.update
        try:
            valid = self.validate() if self.update >= self.cfg.trainer.max_updates else self._train()
        except (Exception, KeyboardInterrupt) as e:
            e.updates_run = self.update - start_update  # type: ignore[attr-defined]  # the CLI's exit status
            if not isinstance(e, (NonFiniteError, CheckpointError)):  # those say it in their message
                e.add_note(self.checkpoint_status())
            raise
        finally:
            self._log_data_events()  # what the data pipeline reported before an error, too
            self.logger.close()
        return {
            "update": self.update,
            "epoch": self.epoch,
            "valid": valid,
            "nonfinite_total": self.nonfinite_total,
            "run_dir": str(self.run_dir),
        }

    def _train(self) -> dict[str, float] | None:
        """Each update, then what is due: a report, a validation, a save. Returns the last validation."""
        t = self.cfg.trainer
        window, valid = UpdateWindow(), None
        clock = time.perf_counter()
        for group in self.data.groups(t.update_freq, t.max_epochs):
            self._log_data_events()
            stats = self.train_step(group)
            now = time.perf_counter()
            seconds, clock = now - clock, now
            if stats is None:  # skipped: a non-finite loss or gradient, or an fp16 overflow
                self.logger.health(self.health.check_train(self.update, {"nonfinite": 1.0}), epoch=self.epoch)
                continue
            self._report(stats, seconds, window)
            if self._due(t.valid_interval, after=t.valid_after_updates):
                valid = self._validate_and_keep_best()
            if self._due(t.save_interval):
                self.save("last")
                dist_utils.barrier()
            if self.update >= t.max_updates:
                break
            clock = time.perf_counter()  # validating and saving are not the update's time
        else:  # max_epochs reached
            valid = self._validate_and_keep_best()
            self.save("last")
        return valid

    def _due(self, interval: int, *, after: int = 0) -> bool:
        """Every ``interval`` updates (0: never) from update ``after`` on, and at the last update."""
        every = bool(interval) and self.update % interval == 0 and self.update >= after
        return every or self.update == self.cfg.trainer.max_updates

    def _report(self, stats: UpdateStats, seconds: float, window: UpdateWindow) -> None:
        """An applied update to the health monitor and the progress bar; when due, a ``train`` record."""
        window.add(stats, seconds)
        summary = self.task.summarize(stats.sums)
        self.logger.health(
            self.health.check_train(
                self.update,
                {
                    **summary,
                    "grad_norm": stats.grad_norm,
                    "loss_scale": stats.loss_scale,
                    "nonfinite": 0.0,
                    **stats.sums.health_numbers(),
                },
            ),
            epoch=self.epoch,
        )
        audio_s = stats.samples / self.cfg.data.sample_rate
        self.logger.progress(1, loss=summary["loss"], lr=stats.lr, audio_s_per_s=audio_s / max(seconds, 1e-9))
        if self._due(self.cfg.trainer.log_interval):
            record = window.record(self.task.summarize, self.cfg.data.sample_rate)
            self.logger.log(
                "train",
                self.update,
                {**record, "nonfinite_total": self.nonfinite_total, **peak_memory_mb(self.device)},
                epoch=self.epoch,
            )

    def _log_data_events(self) -> None:
        """What the data pipeline reported: summaries as ``data`` records, skips as ``event``
        records and a line on the terminal."""
        for event in self.data.take_events():
            kind = "data" if event["event"] in SUMMARY_EVENTS else "event"
            self.logger.log(kind, self.update, event, epoch=self.epoch)
            if kind == "event":
                prefix = f"update {self.update}: " if event["event"] == "skipped_unreadable" else ""
                self.logger.write(prefix + describe(event))

    # ------------------------------------------------------------------ one update
    def train_step(self, group: list[dict]) -> UpdateStats | None:
        """Forward/backward over the micro-batches of one update; returns its stats, or None if skipped."""
        self.model.train()
        task_state = self.task.before_update(self.model, self.update)
        lr = self.schedule.step(self.optimizer, self.update)
        sums, samples, nonfinite_loss = self._accumulate(group)
        params = [p for p in self.model.parameters() if p.grad is not None]
        self.precision.unscale_(self.optimizer)
        if sums.sample_size <= 0 and nonfinite_loss == 0:  # e.g. no frame masked: nothing to learn from
            self._skip_empty()
            return None
        grad_norm = self._normalize_and_clip(params, sums.sample_size, nonfinite_loss > 0)
        if not math.isfinite(grad_norm):
            self._skip(sums.loss_sum, overflow=self.precision.uses_scaler and nonfinite_loss == 0)
            return None
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_row = 0
        self.update += 1
        fp16 = {"loss_scale": self.precision.loss_scale, "fp16_overflows": self.overflow_total}
        return UpdateStats(
            sums, samples, lr, grad_norm, task_state, **(fp16 if self.precision.uses_scaler else {})
        )

    def _accumulate(self, group: list[dict]) -> tuple[Sums, float, float]:
        """Backward of each micro-batch (gradients summed). Returns the task's sums, the audio samples
        and the non-finite losses, each summed over micro-batches and ranks. The totals stay on the
        device until the one all-reduce: a GPU waits for the host once an update, not per micro-batch."""
        t, ddp = self.cfg.trainer, self.train_model
        sums: Sums | int = 0  # a running total, as sum() starts
        samples, nonfinite_loss = torch.zeros(()), torch.zeros((), device=self.device)
        for i, batch in enumerate(group):
            slot = self.dist.rank * t.update_freq + i
            _seed_draws(derive_seed(t.seed, self.update, slot, 0), self.device)
            self.generator.manual_seed(derive_seed(t.seed, self.update, slot, 1))
            samples += float(batch["lengths"].sum())  # on the host still
            batch = _to_device(batch, self.device)
            sync = i == len(group) - 1 or not isinstance(ddp, nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else ddp.no_sync():
                with self.precision.autocast():
                    loss_sum, batch_sums = self.task.loss(ddp, batch, self.generator)
                nonfinite_loss += (~torch.isfinite(loss_sum.detach())).float()
                self.precision.scale(loss_sum.float()).backward()
            sums = sums + batch_sums.map(lambda v: v.detach().float())
        numbers = [v.to(self.device) for v in sums.numbers()] + [samples.to(self.device), nonfinite_loss]
        flat = dist_utils.all_reduce_sum(torch.stack(numbers)).cpu().tolist()
        return sums.with_numbers(flat[:-2]), flat[-2], flat[-1]

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """The task's metrics over the validation set (masks from a fixed generator); None without one."""
        if self.data.valid_loader is None:
            return None
        was_training = self.model.training
        self.model.eval()
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.trainer.seed, 7919, self.dist.rank))
        total: Sums | int = 0  # a running total, as sum() starts
        for batch in self.data.valid_batches(self.cfg.trainer.max_valid_batches):
            with self.precision.autocast():
                sums = self.task.eval_batch(self.model, _to_device(batch, self.device), gen)
            total = total + sums.map(lambda v: v.detach().float().cpu())
        self.model.train(was_training)
        if not isinstance(total, Sums):
            return None
        return self.task.summarize(total.map(lambda v: dist_utils.all_reduce_sum(v.to(self.device)).cpu()))

    def _validate_and_keep_best(self) -> dict[str, float] | None:
        metrics = self.validate()
        self._log_data_events()
        if metrics is None:
            return None
        self.logger.log("valid", self.update, metrics, epoch=self.epoch)
        self.logger.health(self.health.check_valid(self.update, metrics), epoch=self.epoch)
        self.logger.write(f"valid @ {self.update}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        value = metrics.get(self.best_metric)
        if value is None:
            raise KeyError(
                f"trainer.best_metric={self.best_metric!r} is not a validation metric; "
                f"choose one of {sorted(metrics)}"
            )
        if self.best is None or (
            value < self.best if self.cfg.trainer.best_mode == "min" else value > self.best
        ):
            self.best = value
            self.save("best")
        return metrics


def train(cfg, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from a typed config (see ``train.config.to_run_config``) and fit it."""
    try:
        return Trainer(cfg, run_dir).fit()
    finally:
        dist_utils.destroy()
