"""The statistics the trainer and a task exchange, as typed records.

A task reports each batch as a :class:`Sums` record: every field is a sum over the batch
(the loss over its ``sample_size`` units, counts, per-batch metrics with the number of
batches), so records add up over micro-batches, ranks and updates without the trainer
knowing their fields; the task alone divides each sum by its own count
(``Task.summarize``). One applied update is an :class:`UpdateStats`; the updates between two
``train`` records of ``metrics.jsonl`` are an :class:`UpdateWindow`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

from torch import Tensor

__all__ = ["Sums", "UpdateStats", "UpdateWindow"]

S = TypeVar("S", bound="Sums")
Number = Tensor | float
"""A sum: a tensor while the batches are being added (micro-batches, validation), then a float."""


def _apply(value: Any, fn: Callable[[Number], Number]) -> Any:
    """``fn`` on a field: a number, a dict of numbers, or None (not collected here)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: fn(v) for k, v in value.items()}
    return fn(value)


def _numbers(value: Any) -> Iterator[Number]:
    if isinstance(value, dict):
        yield from value.values()
    elif value is not None:
        yield value


def _add(a: Any, b: Any) -> Any:
    if a is None or b is None:  # collected on one side only (validation's code histogram)
        return b if a is None else a
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return a + b


@dataclass
class Sums:
    """A task's statistics of some batches, every field summed over them.

    Subclasses add their own fields: numbers, dicts of numbers (named loss parts or metrics
    that differ between objectives) or ``None`` where a field is collected only sometimes.
    ``sum(records)`` adds records (it starts from 0, as the trainer's running totals do).
    """

    sample_size: Number
    """The units the loss is summed over (masked frames, sentences or characters); the
    gradients are divided by its global total."""
    loss_sum: Number
    """The loss summed over ``sample_size`` units."""

    def map(self: S, fn: Callable[[Number], Number]) -> S:
        """This record with ``fn`` applied to each number (detach, move, all-reduce)."""
        fields = dataclasses.fields(self)
        return dataclasses.replace(self, **{f.name: _apply(getattr(self, f.name), fn) for f in fields})

    def numbers(self) -> list[Number]:
        """Every number, in field order: what one all-reduce of the record carries."""
        return [v for f in dataclasses.fields(self) for v in _numbers(getattr(self, f.name))]

    def with_numbers(self: S, values: list[Number]) -> S:
        """This record with its numbers replaced, in :meth:`numbers` order."""
        it = iter(values)
        return self.map(lambda _: next(it))

    def health_numbers(self) -> dict[str, float]:
        """Numbers the health monitor judges each update besides the task's summary (none here)."""
        return {}

    def __add__(self: S, other: S) -> S:
        return dataclasses.replace(
            self,
            **{f.name: _add(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)},
        )

    def __radd__(self: S, other: int) -> S:  # sum() and a running total start from 0
        return self.map(lambda v: other + v)


@dataclass
class UpdateStats:
    """One applied update: the task's sums over its micro-batches and ranks, and the trainer's state."""

    sums: Sums
    samples: float
    """Audio samples read, for throughput."""
    lr: float
    grad_norm: float
    """Before clipping."""
    task_state: dict[str, float] = field(default_factory=dict)
    """What the task set for this update (the Gumbel temperature, whether the encoder is frozen)."""
    loss_scale: float | None = None
    """fp16 only: the loss scale after the update."""
    fp16_overflows: int | None = None
    """fp16 only: overflowed (skipped) updates so far."""

    def state(self) -> dict[str, float]:
        """The numbers that are a state, not a count: a log window reports its last update's."""
        fp16 = (
            {}
            if self.loss_scale is None
            else {"loss_scale": self.loss_scale, "fp16_overflows": self.fp16_overflows}
        )
        return {"lr": self.lr, "grad_norm": self.grad_norm, **self.task_state, **fp16}


class UpdateWindow:
    """The updates between two ``train`` records: their sums added, the last update's state,
    and their wall time."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.updates: list[UpdateStats] = []
        self.seconds = 0.0

    def add(self, stats: UpdateStats, seconds: float) -> None:
        self.updates.append(stats)
        self.seconds += seconds

    def record(self, summarize: Callable[[Sums], dict[str, float]], sample_rate: int) -> dict[str, Any]:
        """``summarize`` of the summed stats, the last state, throughput; then the window starts over."""
        samples, seconds = sum(u.samples for u in self.updates), max(self.seconds, 1e-9)
        rec = {
            **summarize(sum(u.sums for u in self.updates)),
            **self.updates[-1].state(),
            "step_time_s": self.seconds / len(self.updates),
            "audio_s_per_s": samples / sample_rate / seconds,
            "samples_per_s": samples / seconds,
        }
        self.reset()
        return rec
