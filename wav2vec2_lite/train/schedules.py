"""Learning-rate schedules as pure functions of the update number.

A schedule maps ``update`` (0-based index of the optimizer step about to run) to a
learning rate. Being a pure function, it needs no state of its own to resume: the
trainer's update counter is enough. Both schedules follow fairseq:

* ``polynomial``  linear warmup to ``lr`` over ``warmup_updates``, then polynomial decay
  (``power`` 1 = linear) to ``end_lr`` at ``total_updates`` (fairseq
  ``polynomial_decay``; wav2vec 2.0 pretraining).
* ``tri_stage``   warmup from ``init_lr_scale * lr`` to ``lr`` (linear), hold, then
  exponential decay to ``final_lr_scale * lr``; stage lengths are ``phase_ratio`` of
  ``total_updates`` (fairseq ``tri_stage``; wav2vec 2.0 fine-tuning).
* ``constant``    ``lr`` after an optional linear warmup.

One deliberate difference from fairseq: the first warmup update uses ``lr / warmup``
(fairseq also uses that for the first two updates), so no update runs with lr 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["LRSchedule", "polynomial_decay", "tri_stage", "constant", "build_schedule"]


def polynomial_decay(update: int, *, lr: float, warmup_updates: int, total_updates: int,
                     end_lr: float = 0.0, power: float = 1.0) -> float:
    """fairseq ``polynomial_decay``: warmup then ``(lr - end) * (1 - progress)**power + end``."""
    if warmup_updates > 0 and update < warmup_updates:
        return lr * (update + 1) / warmup_updates
    if update >= total_updates:
        return end_lr
    span = max(total_updates - warmup_updates, 1)
    progress = (update - warmup_updates) / span
    return (lr - end_lr) * (1.0 - progress) ** power + end_lr


def tri_stage(update: int, *, lr: float, total_updates: int,
              phase_ratio: Sequence[float] = (0.1, 0.4, 0.5),
              init_lr_scale: float = 0.01, final_lr_scale: float = 0.05) -> float:
    """fairseq ``tri_stage``: linear warmup, hold at ``lr``, exponential decay, then constant."""
    warmup = int(phase_ratio[0] * total_updates)
    hold = int(phase_ratio[1] * total_updates)
    decay = int(phase_ratio[2] * total_updates)
    init_lr, final_lr = init_lr_scale * lr, final_lr_scale * lr
    if update < warmup:
        return init_lr + (lr - init_lr) * (update + 1) / warmup
    update -= warmup
    if update < hold:
        return lr
    update -= hold
    if update <= decay:
        return lr * math.exp(math.log(final_lr_scale) * update / max(decay, 1))
    return final_lr


def constant(update: int, *, lr: float, warmup_updates: int = 0) -> float:
    """Constant ``lr`` after an optional linear warmup."""
    if warmup_updates > 0 and update < warmup_updates:
        return lr * (update + 1) / warmup_updates
    return lr


@dataclass
class LRSchedule:
    """Sets the learning rate of every param group of ``optimizer`` for each update.

    ``lr_at(update)`` is pure; :meth:`step` writes it into the optimizer (call it before
    ``optimizer.step()`` with the index of the update about to run).
    """

    name: str
    lr: float
    total_updates: int
    warmup_updates: int = 0
    end_lr: float = 0.0
    power: float = 1.0
    phase_ratio: tuple[float, float, float] = (0.1, 0.4, 0.5)
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05

    def __post_init__(self) -> None:
        if self.name not in ("polynomial", "tri_stage", "constant"):
            raise ValueError(f"schedule.name: expected 'polynomial', 'tri_stage' or 'constant', got {self.name!r}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr: must be > 0 (got {self.lr})")
        if self.total_updates <= 0:
            raise ValueError(f"schedule.total_updates: must be > 0 (got {self.total_updates})")
        if self.warmup_updates < 0:
            raise ValueError(f"schedule.warmup_updates: must be >= 0 (got {self.warmup_updates})")
        self.phase_ratio = tuple(float(r) for r in self.phase_ratio)  # type: ignore[assignment]
        if self.name == "tri_stage":
            if len(self.phase_ratio) != 3 or abs(sum(self.phase_ratio) - 1.0) > 1e-6 or min(self.phase_ratio) < 0:
                raise ValueError(f"schedule.phase_ratio: three non-negative fractions summing to 1 (got {self.phase_ratio})")
            if not (0 < self.final_lr_scale <= 1 and 0 <= self.init_lr_scale <= 1):
                raise ValueError("schedule.init_lr_scale / final_lr_scale: must be in (0, 1]")

    def lr_at(self, update: int) -> float:
        if self.name == "polynomial":
            return polynomial_decay(update, lr=self.lr, warmup_updates=self.warmup_updates,
                                    total_updates=self.total_updates, end_lr=self.end_lr, power=self.power)
        if self.name == "tri_stage":
            return tri_stage(update, lr=self.lr, total_updates=self.total_updates, phase_ratio=self.phase_ratio,
                             init_lr_scale=self.init_lr_scale, final_lr_scale=self.final_lr_scale)
        return constant(update, lr=self.lr, warmup_updates=self.warmup_updates)

    def step(self, optimizer: torch.optim.Optimizer, update: int) -> float:
        """Set the lr of ``update`` on every param group (keeping per-group ``lr_scale``)."""
        lr = self.lr_at(update)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def build_schedule(cfg, lr: float, max_updates: int) -> LRSchedule:
    """From a :class:`~wav2vec2_lite.train.config.ScheduleConfig`; ``total_updates`` defaults to ``max_updates``."""
    total = cfg.total_updates if cfg.total_updates else max_updates
    return LRSchedule(name=cfg.name, lr=lr, total_updates=total, warmup_updates=cfg.warmup_updates,
                      end_lr=cfg.end_lr, power=cfg.power, phase_ratio=tuple(cfg.phase_ratio),
                      init_lr_scale=cfg.init_lr_scale, final_lr_scale=cfg.final_lr_scale)
