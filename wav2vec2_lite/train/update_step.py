"""One update's numerics: gradients scaled to the global mean and clipped, or the update skipped.

A mixin of :class:`~wav2vec2_lite.train.trainer.Trainer`: an fp16 overflow backs off the loss
scale; a non-finite loss or gradient is counted, and too many in a row stop the run; an update
with nothing to learn from is dropped and logged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from wav2vec2_lite.train.logging import MetricsLogger
from wav2vec2_lite.train.precision import Precision

__all__ = ["NonFiniteError", "UpdateNumerics"]


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


class UpdateNumerics:
    """``_normalize_and_clip``, ``_skip`` and ``_skip_empty``, over the attributes the Trainer sets up."""

    # the Trainer's, set in its __init__
    cfg: Any
    dist: Any
    optimizer: torch.optim.Optimizer
    precision: Precision
    logger: MetricsLogger
    update: int
    epoch: int
    nonfinite_total: int
    nonfinite_in_row: int
    overflow_total: int
    checkpoint_status: Callable[[], str]

    def _normalize_and_clip(
        self, params: list[nn.Parameter], sample_size: float, nonfinite_loss: bool
    ) -> float:
        """Gradients of the global mean, clipped; their norm before clipping (NaN: non-finite loss,
        or no units at all: the trainer skips an empty update before it gets here)."""
        if sample_size > 0:
            scale = self.dist.world_size / sample_size
            for p in params:
                p.grad.mul_(scale)
        if nonfinite_loss or sample_size <= 0:
            return float("nan")
        if self.cfg.optim.clip_norm > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_norm))
        return float(torch.nn.utils.get_total_norm([p.grad for p in params])) if params else 0.0

    def _skip_empty(self) -> None:
        """An update with no units to learn from (``sample_size`` 0 over every rank, e.g. no frame
        masked): dropped and logged, neither an fp16 overflow (the scale stays) nor a failure."""
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.forget()
        self.logger.log("event", self.update, {"event": "skipped_empty"}, epoch=self.epoch)
        self.logger.write(
            f"update {self.update}: the batch has nothing to learn from (sample size 0), skipped"
        )

    def _skip(self, loss_sum: float, *, overflow: bool) -> None:
        """An update not applied: an fp16 overflow (routine: the loss scale backs off and the update is
        retried) or a non-finite loss or gradient (counted; too many in a row stop the run)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.skip()
        if overflow:
            self.overflow_total += 1
            if self.precision.loss_scale < self.precision.min_scale:
                raise NonFiniteError(
                    f"fp16 loss scale fell below {self.precision.min_scale} at update {self.update}: "
                    f"gradients overflow even unscaled. Try trainer.precision=bf16 or 32, a lower "
                    f"optim.lr, optim.clip_norm."
                )
            return
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        self.logger.log(
            "event",
            self.update,
            {
                "event": "skipped_nonfinite",
                "nonfinite_in_row": self.nonfinite_in_row,
                "nonfinite_total": self.nonfinite_total,
                "loss_sum": loss_sum,
                "loss_scale": self.precision.loss_scale,
            },
            epoch=self.epoch,
        )
        self.logger.write(
            f"update {self.update}: non-finite loss/gradient, update skipped "
            f"({self.nonfinite_in_row} in a row, {self.nonfinite_total} in total)"
        )
        if self.nonfinite_in_row >= self.cfg.trainer.max_consecutive_nonfinite:
            raise NonFiniteError(
                f"{self.nonfinite_in_row} updates in a row had a non-finite loss or gradient (last at update "
                f"{self.update}); stopping. {self.checkpoint_status()} Try a lower optim.lr, a longer "
                f"schedule.warmup_updates, optim.clip_norm, or trainer.precision=bf16/32."
            )
