"""``Linear`` and ``Conv1d``: torch's own layers, under the names ``models.py`` and ``objectives/``
import them by.

A bf16 training step's one-op weight cast used to live here as a slot on these layers; it is
now part of the speed transform (:mod:`wav2vec2_lite.low_precision_speed`), which swaps in its
own layers. New code should use ``nn.Linear`` / ``nn.Conv1d`` directly.
"""

from __future__ import annotations

from torch import nn

__all__ = ["Linear", "Conv1d"]

Linear = nn.Linear
Conv1d = nn.Conv1d
