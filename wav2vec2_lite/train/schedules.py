"""Learning-rate schedules: each one declared once, its config fields and its lr function together.

A schedule is a dataclass registered under its ``name`` (the ``schedule.name`` key; the
``configs/schedule/*.yaml`` files list each one's fields, overridable as ``schedule.FIELD``).
``lr_at(update, lr=, total=)`` maps ``update`` (0-based index of the optimizer step about to
run) to a learning rate; being a pure function, it needs no state of its own to resume: the
trainer's update counter is enough. ``warmup(total)`` is its number of warmup updates (the
health monitor's grace period starts after them). Both fairseq schedules are here:

* ``polynomial``  linear warmup to ``lr`` over ``warmup_updates``, then polynomial decay
  (``power`` 1 = linear) to ``end_lr`` at ``total_updates`` (fairseq ``polynomial_decay``;
  wav2vec 2.0 pretraining).
* ``tri_stage``   warmup from ``init_lr_scale * lr`` to ``lr`` (linear), hold, then
  exponential decay to ``final_lr_scale * lr``; stage lengths are ``phase_ratio`` of
  ``total_updates`` (fairseq ``tri_stage``; wav2vec 2.0 fine-tuning).
* ``constant``    ``lr`` after an optional linear warmup.

A new schedule is one more ``@register``-ed subclass of :class:`Schedule` (and a yaml file).
One deliberate difference from fairseq: the first warmup update uses ``lr / warmup``
(fairseq also uses that for the first two updates), so no update runs with lr 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "Schedule",
    "Polynomial",
    "TriStage",
    "Constant",
    "SCHEDULES",
    "register",
    "make_schedule",
    "LRSchedule",
    "build_schedule",
]

SCHEDULES: dict[str, type[Schedule]] = {}


def register(cls: type[Schedule]) -> type[Schedule]:
    """Make ``cls`` selectable as ``schedule.name=<its name default>``."""
    SCHEDULES[cls.name] = cls
    return cls


@dataclass(kw_only=True)
class Schedule:
    """Fields every schedule has; subclasses add theirs and define :meth:`lr_at` and :meth:`warmup`."""

    name: str
    total_updates: Optional[int] = None
    """Updates the schedule spans; None = trainer.max_updates."""

    def lr_at(self, update: int, *, lr: float, total: int) -> float:
        raise NotImplementedError

    def warmup(self, total: int) -> int:
        return 0

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad ``schedule.*`` key."""
        if self.total_updates is not None and self.total_updates <= 0:
            raise ValueError(f"schedule.total_updates: must be > 0 or null (got {self.total_updates})")


def _linear_warmup(update: int, lr: float, warmup_updates: int) -> float:
    return lr * (update + 1) / warmup_updates


def _check_warmup(warmup_updates: int) -> None:
    if warmup_updates < 0:
        raise ValueError(f"schedule.warmup_updates: must be >= 0 (got {warmup_updates})")


@register
@dataclass(kw_only=True)
class Polynomial(Schedule):
    """fairseq ``polynomial_decay``: warmup then ``(lr - end) * (1 - progress)**power + end``."""

    name: str = "polynomial"
    warmup_updates: int = 32000
    """Updates of linear warmup from 0 to ``optim.lr`` (the paper: 8 % of pretraining)."""
    end_lr: float = 0.0
    """Learning rate reached at ``total_updates``."""
    power: float = 1.0
    """Exponent of the decay (1: linear)."""

    def lr_at(self, update: int, *, lr: float, total: int) -> float:
        if 0 < self.warmup_updates and update < self.warmup_updates:
            return _linear_warmup(update, lr, self.warmup_updates)
        if update >= total:
            return self.end_lr
        progress = (update - self.warmup_updates) / max(total - self.warmup_updates, 1)
        return (lr - self.end_lr) * (1.0 - progress) ** self.power + self.end_lr

    def warmup(self, total: int) -> int:
        return min(self.warmup_updates, total)

    def check(self) -> None:
        super().check()
        _check_warmup(self.warmup_updates)


@register
@dataclass(kw_only=True)
class TriStage(Schedule):
    """fairseq ``tri_stage``: linear warmup, hold at ``lr``, exponential decay, then constant."""

    name: str = "tri_stage"
    phase_ratio: list[float] = field(default_factory=lambda: [0.1, 0.4, 0.5])
    """Fractions of ``total_updates`` for warmup, hold and decay (they sum to 1)."""
    init_lr_scale: float = 0.01
    """Warmup starts at ``init_lr_scale * lr``."""
    final_lr_scale: float = 0.05
    """Decay ends at ``final_lr_scale * lr``, kept to the end."""

    def lr_at(self, update: int, *, lr: float, total: int) -> float:
        warmup, hold, decay = (int(r * total) for r in self.phase_ratio)
        init_lr = self.init_lr_scale * lr
        if update < warmup:
            return init_lr + (lr - init_lr) * (update + 1) / warmup
        update -= warmup
        if update < hold:
            return lr
        update -= hold
        if update <= decay:
            return lr * math.exp(math.log(self.final_lr_scale) * update / max(decay, 1))
        return self.final_lr_scale * lr

    def warmup(self, total: int) -> int:
        return int(self.phase_ratio[0] * total)

    def check(self) -> None:
        super().check()
        r = self.phase_ratio
        if len(r) != 3 or abs(sum(r) - 1.0) > 1e-6 or min(r) < 0:
            raise ValueError(
                f"schedule.phase_ratio: three non-negative fractions summing to 1 (got {list(r)})"
            )
        if not (0 < self.final_lr_scale <= 1 and 0 <= self.init_lr_scale <= 1):
            raise ValueError("schedule.init_lr_scale / final_lr_scale: must be in (0, 1]")


@register
@dataclass(kw_only=True)
class Constant(Schedule):
    """Constant ``lr`` after an optional linear warmup."""

    name: str = "constant"
    warmup_updates: int = 0
    """Updates of linear warmup from 0 to ``optim.lr``."""

    def lr_at(self, update: int, *, lr: float, total: int) -> float:
        if 0 < self.warmup_updates and update < self.warmup_updates:
            return _linear_warmup(update, lr, self.warmup_updates)
        return lr

    def warmup(self, total: int) -> int:
        return min(self.warmup_updates, total)

    def check(self) -> None:
        super().check()
        _check_warmup(self.warmup_updates)


def make_schedule(node: Any) -> Schedule:
    """The registered schedule a ``schedule`` config node names, its fields type-checked and
    validated; a field the chosen schedule does not have is an error naming it."""
    if isinstance(node, Schedule):
        node.check()
        return node
    values = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    name = values.get("name")
    if name not in SCHEDULES:
        raise ValueError(f"schedule.name: one of {', '.join(SCHEDULES)} (got {name!r})")
    cls = SCHEDULES[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"schedule.{unknown[0]}: not a field of the {name!r} schedule (its fields: "
            f"{', '.join(sorted(known))}); switch schedules with schedule={name}, not schedule.name"
        )
    typed = OmegaConf.merge(
        OmegaConf.structured({"schedule": cls}), {"schedule": values}
    )  # errors name schedule.KEY
    schedule = OmegaConf.to_object(typed)["schedule"]
    schedule.check()
    return schedule


@dataclass
class LRSchedule:
    """A schedule bound to a peak lr and a length: sets every param group's lr for each update."""

    schedule: Schedule
    lr: float
    total_updates: int

    @property
    def warmup_updates(self) -> int:
        return self.schedule.warmup(self.total_updates)

    def lr_at(self, update: int) -> float:
        return self.schedule.lr_at(update, lr=self.lr, total=self.total_updates)

    def step(self, optimizer: torch.optim.Optimizer, update: int) -> float:
        """Set the lr of ``update`` on every param group (times its ``lr_scale``); call it before
        ``optimizer.step()`` with the index of the update about to run."""
        lr = self.lr_at(update)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr


def build_schedule(schedule: Schedule, lr: float, max_updates: int) -> LRSchedule:
    """``schedule`` over ``schedule.total_updates`` updates, else ``max_updates``."""
    return LRSchedule(schedule, lr, schedule.total_updates or max_updates)
