"""The trainer's state in ``checkpoints/``: saved, restored on resume, and named in error messages.

A mixin of :class:`~wav2vec2_lite.train.trainer.Trainer`, so that what is saved and what is
restored sit side by side: a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wav2vec2_lite.data.pipeline import TrainingData
from wav2vec2_lite.serialization import save_model
from wav2vec2_lite.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    restore_rng_state,
    save_checkpoint,
)
from wav2vec2_lite.train.config import config_container
from wav2vec2_lite.train.precision import Precision
from wav2vec2_lite.train.run_dir import RunDir
from wav2vec2_lite.train.task import Task

__all__ = ["Checkpointing"]


class Checkpointing:
    """``save``, ``_resume`` and ``checkpoint_status``, over the attributes the Trainer sets up."""

    # the Trainer's, set in its __init__
    cfg: Any
    run: RunDir
    ckpt_dir: Path
    is_main: bool
    model: nn.Module
    task: Task
    data: TrainingData
    optimizer: torch.optim.Optimizer
    precision: Precision
    generator: torch.Generator
    dist: Any
    # progress: checkpointed, and restored on resume
    update: int
    saved_update: int | None
    best: float | None
    best_metric: str
    nonfinite_total: int
    nonfinite_in_row: int
    overflow_total: int

    def _resume(self) -> bool:
        state = self.run.resume_state(self.model, self.task.name, self.cfg.optim.lr_scale)
        if state is None:
            return False
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state["precision"])
        restore_rng_state(state["rng"], self.generator)
        self.update, self.best = int(state["update"]), state.get("best")
        self.saved_update = self.update
        for counter in ("nonfinite_total", "nonfinite_in_row", "overflow_total"):
            setattr(self, counter, int(state.get(counter, 0)))
        self.data.load_state_dict(state, rank=self.dist.rank)
        return True

    def save(self, name: str = "last") -> Path | None:
        """Write ``checkpoints/NAME`` (rank 0): weights, the task's extras and the training state."""
        if not self.is_main:
            return None

        def weights(model: nn.Module, directory: Path) -> None:
            save_model(model, directory)
            self.task.save_extras(directory)

        state = {
            "update": self.update,
            "task": self.task.name,
            **self.data.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "precision": self.precision.state_dict(),
            "rng": capture_rng_state(self.generator),
            "best": self.best,
            "best_metric": self.best_metric,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
            "overflow_total": self.overflow_total,
            "config": config_container(self.cfg),
        }
        try:
            path = save_checkpoint(self.ckpt_dir, name, self.model, state, save_weights=weights)
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}. Training stopped at update {self.update}. {self.checkpoint_status()} "
                f"Fix the cause first."
            ) from e
        if name == "last":
            self.saved_update = self.update
        return path

    def checkpoint_status(self) -> str:
        """What a rerun of the same command resumes from; true whether or not a checkpoint exists."""
        if self.saved_update is None:
            return "No checkpoint was written: rerunning the same command starts again from update 0."
        last = f"The last checkpoint is {self.ckpt_dir / 'last'} (update {self.saved_update})"
        if not self.cfg.trainer.resume:
            return f"{last}; with trainer.resume=false rerunning the same command starts again from update 0."
        return f"{last}: rerunning the same command resumes from update {self.saved_update}."
