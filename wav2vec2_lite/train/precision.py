"""Mixed precision: ``precision = 32 | bf16 | fp16`` on CPU or CUDA.

* ``32``   float32 everywhere, no autocast.
* ``bf16`` autocast to bfloat16 (weights and optimizer state stay float32); no scaler
  is needed since bf16 has float32's exponent range (CPUs emulate bf16 where they lack it).
  :meth:`Precision.attach` applies the speed transform (``low_precision_speed``: the weights
  cast in one op per forward; on a CPU with native bf16 (AMX or ``avx512_bf16``) also bf16
  unfolded convs and bf16 attention with dropout), chosen for this device and CPU.
* ``fp16`` autocast to float16 with a :class:`torch.amp.GradScaler` (supported on CPU
  since torch 2.3, so the scaled path is tested here; it is meant for GPUs).

The scaler also detects non-finite gradients: after ``unscale_`` the trainer checks
the gradient norm itself, so a skipped step is counted the same way in every mode.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from wav2vec2_lite.low_precision_speed import TrainingSpeedup, speed_up_training

__all__ = ["Precision", "parse_precision"]

_ALIASES = {
    "32": "32",
    "fp32": "32",
    "float32": "32",
    "32-true": "32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "bf16-mixed": "bf16",
    "16": "fp16",
    "fp16": "fp16",
    "float16": "fp16",
    "16-mixed": "fp16",
}


def parse_precision(value: object) -> str:
    """``32``, ``bf16`` or ``fp16`` from the usual spellings (e.g. ``16-mixed``); errors name the key."""
    key = str(value).lower()
    if key not in _ALIASES:
        raise ValueError(f"trainer.precision: expected one of 32, bf16, fp16 (got {value!r})")
    return _ALIASES[key]


@dataclass
class Precision:
    """Autocast context + optional grad scaler for one device type."""

    mode: str
    device_type: str  # "cpu" | "cuda"
    init_scale: float = 2.0**7  # fairseq fp16_init_scale; losses are sums, so large scales overflow
    min_scale: float = 1e-4  # fairseq min_loss_scale
    growth_interval: int = 2000

    def __post_init__(self) -> None:
        self.mode = parse_precision(self.mode)
        self.scaler = torch.amp.GradScaler(
            self.device_type,
            init_scale=self.init_scale,
            growth_interval=self.growth_interval,
            enabled=self.mode == "fp16",
        )
        self.speedup: TrainingSpeedup | None = None

    def attach(self, model: torch.nn.Module, flat_weights: bool = True) -> None:
        """In bf16/fp16, swap ``model``'s fast modules in for this device and CPU
        (:func:`~wav2vec2_lite.low_precision_speed.speed_up_training`); ``flat_weights=False``
        keeps autocast's per-weight casts (DDP with LayerDrop: a skipped block's weights would
        reach the one cast op without a gradient). Call once the model is on its device."""
        if self.mode != "32":
            self.speedup = speed_up_training(model, self.dtype, flat_weights=flat_weights)

    @property
    def dtype(self) -> torch.dtype:
        return {"32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.mode]

    @property
    def uses_scaler(self) -> bool:
        return self.mode == "fp16"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast region for the forward pass and loss (a no-op in ``32``)."""
        if self.mode == "32":
            yield
            return
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            with self.speedup.cast() if self.speedup is not None else contextlib.nullcontext():
                yield

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.uses_scaler else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.uses_scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Optimizer step (through the scaler in fp16: it skips the step on inf/nan grads)."""
        if self.uses_scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def skip(self) -> None:
        """The trainer found non-finite grads and skips this update: back off the scale and restart
        the count of clean updates towards growing it, as an overflowing ``GradScaler.update`` does."""
        if self.uses_scaler:
            self._drop_update(self.scaler.get_backoff_factor())
            # _drop_update keeps the clean-update count: without the restart the scale grew straight
            # back after an overflow
            self.scaler.load_state_dict({**self.scaler.state_dict(), "_growth_tracker": 0})

    def forget(self) -> None:
        """The trainer drops this update for a reason that says nothing about the scale (no units to
        learn from): clear ``unscale_``'s record of it, keeping the scale and its growth count."""
        if self.uses_scaler:
            self._drop_update(1.0)

    def _drop_update(self, factor: float) -> None:
        """Forget ``unscale_``'s record of this update and multiply the scale by ``factor``
        (``update(new_scale)`` does both, keeping the clean-update count)."""
        self.scaler.scale(torch.zeros((), device=self.device_type))  # initialises the scale if unused yet
        self.scaler.update(self.scaler.get_scale() * factor)

    @property
    def loss_scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.uses_scaler else None

    def state_dict(self) -> dict:
        return {"mode": self.mode, "scaler": self.scaler.state_dict() if self.uses_scaler else {}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.mode:
            raise ValueError(
                f"checkpoint was trained with precision={state.get('mode')!r}, "
                f"this run uses {self.mode!r}; resume with the same precision"
            )
        if self.uses_scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
