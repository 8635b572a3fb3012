"""The training loop shared by pretraining and CTC fine-tuning.

One update = ``update_freq`` micro-batches per process, all processes together (DDP).
Each micro-batch's loss is *summed* over its sample-size units; after accumulation the
gradients are scaled by ``world_size / global_sample_size`` (fairseq's normalisation,
the global count all-reduced), clipped, and applied, unless the loss or gradient is
non-finite: then the update is skipped and counted, and ``max_consecutive_nonfinite``
skips in a row stop the run with :class:`NonFiniteError`.

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
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from wav2vec2_lite.data.collate import collate
from wav2vec2_lite.data.sampler import BucketBatchSampler
from wav2vec2_lite.health import HealthMonitor
from wav2vec2_lite.train import distributed as dist_utils
from wav2vec2_lite.train.checkpoint import (
    CheckpointError, capture_rng_state, load_checkpoint, resolve_checkpoint, restore_rng_state, save_checkpoint,
)
from wav2vec2_lite.train.logging import MetricsLogger, peak_memory_mb, write_run_info
from wav2vec2_lite.train.precision import Precision
from wav2vec2_lite.train.schedules import build_schedule
from wav2vec2_lite.train.tasks import build_task

__all__ = ["Trainer", "NonFiniteError", "derive_seed", "param_groups", "train"]


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def param_groups(model: nn.Module, weight_decay: float, decay_bias_and_norm: bool) -> list[dict]:
    """AdamW groups: no weight decay on biases, norm weights and other 1-D parameters (unless asked)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if decay_bias_and_norm or p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class _Collate:
    """Picklable collate whose crop offsets depend only on (seed, epoch, utterance ids)."""

    def __init__(self, crop_to_shortest: bool, seed: int) -> None:
        self.crop_to_shortest, self.seed, self.epoch = crop_to_shortest, seed, 0

    def __call__(self, items: list[dict]) -> dict:
        gen = None
        if self.crop_to_shortest:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, *[int(i["id"]) for i in items]))
        return collate(items, crop_to_shortest=self.crop_to_shortest, generator=gen)


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

        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        import random

        random.seed(t.seed)
        self.task = build_task(cfg)
        self.model = self.task.build_model().to(self.device)
        if t.gradient_checkpointing:
            self._backbone().context.gradient_checkpointing = True
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.optim.weight_decay, cfg.optim.decay_bias_and_norm),
            lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
            foreach=False if self.device.type == "cpu" else None)
        self.schedule = build_schedule(cfg.schedule, cfg.optim.lr, t.max_updates)
        self.precision = Precision(t.precision, self.device.type)
        self.generator = torch.Generator()  # masks / distractors / Gumbel noise (drawn on CPU by the model)

        # data
        self.train_set = self.task.dataset(cfg.data.train_subset, train=True)
        self.sampler = BucketBatchSampler(
            self.train_set.sizes, max_tokens=cfg.data.max_tokens, max_batch_size=cfg.data.max_batch_size,
            num_buckets=cfg.data.num_buckets, shuffle=True, seed=t.seed, rank=self.dist.rank,
            world_size=self.dist.world_size, too_long=cfg.data.too_long)
        self.collate = _Collate(self.task.crop_to_shortest, t.seed)
        self.loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=self.collate,
                                 num_workers=cfg.data.num_workers)
        self.valid_loader = None
        if cfg.data.valid_subset:
            vset = self.task.dataset(cfg.data.valid_subset, train=False)
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
        self.best: float | None = None
        self.best_metric = t.best_metric or self.task.default_best_metric

        cfg_model = self.model.config
        self.health = HealthMonitor(cfg.health, task=self.task.name, num_negatives=cfg_model.num_negatives,
                                    num_codes_per_group=cfg_model.num_codes_per_group,
                                    num_code_groups=cfg_model.num_code_groups,
                                    warmup_updates=cfg.schedule.warmup_updates)

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

    # ------------------------------------------------------------------ setup helpers
    def _backbone(self) -> nn.Module:
        return self.model.wav2vec2

    def _check_writable(self) -> None:
        """Fail before training, not at the first checkpoint, if outputs cannot be written."""
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            probe = self.ckpt_dir / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise RuntimeError(f"run directory {self.run_dir} is not writable ({e}); set run_dir to a writable "
                               f"folder") from e

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

        return save_checkpoint(self.ckpt_dir, name, self.model, self._state(), save_weights=weights)

    def _maybe_resume(self) -> bool:
        folder = resolve_checkpoint(self.ckpt_dir, "last")
        if folder is None:
            return False
        state = load_checkpoint(folder, self.model)
        if state.get("task") != self.task.name:
            raise CheckpointError(f"{folder}: is a {state.get('task')!r} checkpoint, this run is {self.task.name!r}")
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
            group: list[dict] = []
            for batch in self.loader:
                group.append(batch)
                if len(group) == uf:
                    yield group
                    group = []
            if group:
                yield group
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
            with self.precision.autocast():
                stats = self.task.eval_batch(model, _to_device(batch, self.device), gen)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v.detach().float().cpu()
        model.train(was_training)
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
