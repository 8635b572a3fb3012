"""Kept for ``tools/benchmarking.py``: ``LowPrecisionWeights(model, dtype)`` applies the training
speed transform (:func:`wav2vec2_lite.low_precision_speed.speed_up_training`, as the trainer
does) and returns its handle, whose ``cast()`` goes around each forward pass. New code calls
``speed_up_training`` directly; the one-op weight cast is
:class:`~wav2vec2_lite.low_precision_speed.FlatWeights`.
"""

from __future__ import annotations

from wav2vec2_lite.low_precision_speed import speed_up_training

__all__ = ["LowPrecisionWeights"]

LowPrecisionWeights = speed_up_training
