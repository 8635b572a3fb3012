"""Pretraining objectives by name: ``Wav2Vec2Config.objective`` selects one of :data:`OBJECTIVES`.

Adding an objective: a new module with a :class:`~wav2vec2_lite.objectives.base.PretrainingObjective`
subclass, and one line below naming it (``docs/objectives.md``). Entries are import paths,
imported when first used, so importing the registry loads no objective.
"""

from __future__ import annotations

import importlib

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.objectives.base import PretrainingObjective

__all__ = ["OBJECTIVES", "objective_class", "build_objective"]

OBJECTIVES: dict[str, str | type[PretrainingObjective]] = {
    "contrastive": "wav2vec2_lite.objectives.contrastive:ContrastiveObjective",
    "best_rq": "wav2vec2_lite.objectives.best_rq:BestRQObjective",
}


def objective_class(name: str) -> type[PretrainingObjective]:
    """The class registered as ``name`` (imported on first use); otherwise ``KeyError`` naming the
    valid names."""
    if name not in OBJECTIVES:
        raise KeyError(f"unknown pretraining objective {name!r}; valid names: {sorted(OBJECTIVES)}")
    entry = OBJECTIVES[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = OBJECTIVES[name] = getattr(importlib.import_module(module), attr)
    return entry


def build_objective(config: Wav2Vec2Config) -> PretrainingObjective:
    """The objective ``config.objective`` names, built from ``config``."""
    return objective_class(config.objective)(config)
