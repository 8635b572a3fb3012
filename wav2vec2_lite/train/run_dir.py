"""The run folder: checked before training, and where a run resumes from.

``RUN/checkpoints/{last,best}`` hold the checkpoints (:mod:`wav2vec2_lite.train.checkpoint`).
Before the first update the folder must be writable (a probe file is written, fsync'ed and
removed) and have room for three checkpoints (``last``, ``best``, and the temporary copy a save
writes in full before it replaces the previous one), so a run fails at once rather than at a
save. Temporary folders left by a process killed while saving are removed. :meth:`RunDir.resume_state` finds
``checkpoints/last`` (recovering one interrupted mid-swap), loads its weights and refuses a
checkpoint of another task or with other per-part learning rates.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from wav2vec2_lite.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temps,
    resolve_checkpoint,
)
from wav2vec2_lite.train.config import flatten_lr_scale

__all__ = ["RunDir", "RunDirError"]


class RunDirError(RuntimeError):
    """The run directory cannot hold the run's outputs (not writable, not enough free space)."""


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files directly in ``folder`` (0 if it does not exist)."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0


class RunDir:
    """``path`` and its ``checkpoints`` folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).resolve()
        self.checkpoints = self.path / "checkpoints"

    def check_folder(self, key: str = "run_dir") -> None:
        """RunDirError if the path, or a folder above it, is an existing file (``key`` names the setting)."""
        for p in (self.path, *self.path.parents):
            if p.exists() and not p.is_dir():
                what = "it is" if p == self.path else f"it is inside {p}, which is"
                raise RunDirError(
                    f"run directory {self.path} is not writable: {what} a file, not a folder; set "
                    f"{key} to a folder for the run's outputs"
                )

    def prepare(self) -> None:
        """Create the folders, check that they are writable, remove stale temporary saves."""
        self.check_folder()
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            for folder in (self.path, self.checkpoints):
                probe = folder / f".write-probe-{os.getpid()}"
                with open(probe, "wb") as f:
                    f.write(b"ok")
                    f.flush()
                    os.fsync(f.fileno())
                probe.unlink()
        except OSError as e:
            raise RunDirError(
                f"run directory {self.path} is not writable ({e}); set run_dir to a writable folder"
            ) from e
        remove_stale_temps(self.checkpoints)  # left by a process killed while saving

    def check_free_space(self, model: nn.Module) -> None:
        """Room for the checkpoints of ``model`` (weights and AdamW moments) still to be written:
        ``last``, ``best`` and a save's temporary copy, less what ``last`` and ``best`` hold already."""
        weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
        moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        one = weights + moments
        held = sum(_folder_bytes(self.checkpoints / name) for name in ("last", "best"))
        free = shutil.disk_usage(self.checkpoints).free
        if free < 3 * one - held:
            raise RunDirError(
                f"{self.checkpoints}: only {free / 2**20:.1f} MiB free; a checkpoint of this model takes "
                f"about {one / 2**20:.1f} MiB and three must fit (last, best, and the temporary copy a "
                f"save writes before it replaces the previous one)"
                + (f", of which {held / 2**20:.1f} MiB are on disk already" if held else "")
                + ". Free some space or set run_dir to a larger disk."
            )

    def resume_state(self, model: nn.Module, task: str, lr_scale: dict) -> dict[str, Any] | None:
        """The training state of ``checkpoints/last`` with its weights loaded into ``model``; None if none."""
        folder = resolve_checkpoint(self.checkpoints, "last")
        if folder is None:
            return None
        state = load_checkpoint(folder, model)
        if state.get("task") != task:
            raise CheckpointError(f"{folder}: is a {state.get('task')!r} checkpoint, this run is {task!r}")
        saved = flatten_lr_scale((state.get("config") or {}).get("optim", {}).get("lr_scale") or {})
        wanted = flatten_lr_scale(lr_scale)
        if saved != wanted:
            raise CheckpointError(
                f"{folder}: was written with optim.lr_scale={saved}, this run asks for "
                f"{wanted}; resume with the same per-part learning rates, or start a new "
                f"run directory"
            )
        return state
