"""What the trainer needs of a task: the contract :class:`Task`.

The trainer knows nothing of what it trains: pretraining and CTC fine-tuning
(:mod:`wav2vec2_lite.train.tasks`) give it a model and datasets, set their per-update
state, turn a batch into a summed loss with its :class:`~wav2vec2_lite.train.stats.Sums`,
and turn summed statistics into metrics. Whatever reads one task's config (the objective's
codebook for the health monitor, the frozen-encoder updates, the vocabulary saved with each
checkpoint) stays behind this contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from wav2vec2_lite.data.pipeline import DatasetSource
from wav2vec2_lite.train.health import HealthConfig, HealthMonitor
from wav2vec2_lite.train.stats import Sums

__all__ = ["Task"]


@runtime_checkable
class Task(DatasetSource, Protocol):
    """A training task; its datasets and files come through :class:`DatasetSource`."""

    name: str
    """``pretrain`` or ``finetune``: each checkpoint records it and a resume checks it."""
    default_best_metric: str
    """The validation metric that picks ``checkpoints/best`` unless ``trainer.best_metric`` names one."""

    def build_model(self) -> nn.Module:
        """A new model (fine-tuning: a pretrained backbone under a new CTC head)."""

    def health_monitor(self, config: HealthConfig, *, warmup_updates: int) -> HealthMonitor:
        """The health monitor with this task's rules and its objective's reference numbers."""

    def frozen_encoder(self, update: int) -> bool:
        """Whether the encoder is frozen at ``update``: its parameters then get no gradient,
        which DDP must be told to expect."""

    def before_update(self, model: nn.Module, update: int) -> dict[str, float]:
        """Set the model's state for ``update`` (a temperature schedule, a frozen encoder) and
        return it as numbers to log."""

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[Tensor, Sums]:
        """The loss summed over the batch's ``sample_size`` units, and the batch's statistics."""

    def eval_batch(self, model: nn.Module, batch: dict, generator: torch.Generator) -> Sums:
        """A validation batch's statistics (what ``loss`` reports and the held-out metrics' counts)."""

    def summarize(self, sums: Sums) -> dict[str, float]:
        """The metrics logged for statistics summed over any batches: an update, a log
        window, a validation set."""

    def save_extras(self, directory: Path) -> None:
        """Write what a checkpoint folder needs beside the weights."""
