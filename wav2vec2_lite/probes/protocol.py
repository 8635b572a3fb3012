"""The probing protocol: one fixed recipe for every layer of every model, recorded in the output."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ProbeError", "ProbeProtocol"]


class ProbeError(ValueError):
    """A probing run cannot start: a bad option, a missing split or label file, an unusable model;
    the message says what was expected and what was found."""


@dataclass(frozen=True)
class ProbeProtocol:
    """How every linear CTC probe is trained and scored (the same for all layers and models).

    Each probe is ``Linear(dim, vocab)`` over frozen frames, initialised to zero (uniform
    output), trained with Adam for ``steps`` updates of ``batch_size`` training utterances
    (drawn without replacement, reshuffled each epoch from ``seed``) at learning rate ``lr``
    decayed to 0 by a half cosine, on the CTC loss (blank = index 0, each utterance's loss
    divided by its label length, averaged over the batch). With ``standardize`` every feature
    dimension is shifted and scaled by the mean and standard deviation of the training frames
    (the same statistics applied to the validation frames). Nothing is selected on the
    validation split: its CER and loss are measured once, after the last update.
    """

    steps: int = 2000
    """Updates per probe."""
    lr: float = 3e-2
    """Peak Adam learning rate (half-cosine decay to 0 over ``steps``)."""
    batch_size: int = 8
    """Training utterances per update."""
    standardize: bool = True
    """Per-dimension mean/std of the training frames applied to train and valid frames."""
    seed: int = 0
    """Seeds every probe's batch order; random-init models use seeds ``seed, seed + 1, ...``."""
    probe_seeds: int = 1
    """Probes per layer, trained with seeds ``seed, seed + 1, ...`` and averaged (a probe's result
    can depend on its batch order: conv features of a tiny model gave CER 0.67-0.78 over 3 seeds)."""
    random_init_seeds: int = 2
    """Randomly initialised copies of the architecture to probe and average (0: none)."""
    log_mel: bool = False
    """Also probe the log-mel front end (80 mel bins, stacked onto the encoder's frames)."""
    max_train_utterances: int | None = None
    """Use only the first N training utterances (None: all)."""
    max_valid_utterances: int | None = None
    """Use only the first N validation utterances (None: all)."""
    eval_batch_size: int = 32
    """Validation utterances per forward (does not change the numbers)."""

    def validate(self) -> ProbeProtocol:
        """Raise :class:`ProbeError` naming the first field out of range; return self."""

        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise ProbeError(
                    f"probe protocol: {field} must be {expected}, found {getattr(self, field)!r}"
                )

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        need(
            isinstance(self.lr, (int, float))
            and not isinstance(self.lr, bool)
            and math.isfinite(self.lr)
            and self.lr > 0,
            "lr",
            "a finite number > 0",
        )
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(isinstance(self.standardize, bool), "standardize", "true or false")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(is_int(self.probe_seeds) and self.probe_seeds >= 1, "probe_seeds", "an integer >= 1")
        need(
            is_int(self.random_init_seeds) and self.random_init_seeds >= 0,
            "random_init_seeds",
            "an integer >= 0",
        )
        need(isinstance(self.log_mel, bool), "log_mel", "true or false")
        for name in ("max_train_utterances", "max_valid_utterances"):
            v = getattr(self, name)
            need(v is None or (is_int(v) and v >= 1), name, "None or an integer >= 1")
        need(is_int(self.eval_batch_size) and self.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeProtocol:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProbeError(f"probe protocol: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data).validate()
