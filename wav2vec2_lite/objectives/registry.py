"""Pretraining objectives by name: ``Wav2Vec2Config.objective`` selects one of :data:`OBJECTIVES`.

Adding an objective: a new module with a :class:`~wav2vec2_lite.objectives.base.PretrainingObjective`
subclass, and one line below (``docs/objectives.md``).
"""

from __future__ import annotations

from typing import Any

from wav2vec2_lite.objectives.base import PretrainingObjective
from wav2vec2_lite.objectives.best_rq import BestRQObjective
from wav2vec2_lite.objectives.contrastive import ContrastiveObjective

__all__ = ["OBJECTIVES", "objective_class", "build_objective"]

OBJECTIVES: dict[str, type[PretrainingObjective]] = {
    "contrastive": ContrastiveObjective,
    "best_rq": BestRQObjective,
}


def objective_class(name: str) -> type[PretrainingObjective]:
    """The class registered as ``name``; ``KeyError`` naming the valid names otherwise."""
    if name not in OBJECTIVES:
        raise KeyError(f"unknown pretraining objective {name!r}; valid names: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def build_objective(config: Any) -> PretrainingObjective:
    """The objective ``config.objective`` names, built from ``config``."""
    return objective_class(config.objective)(config)
