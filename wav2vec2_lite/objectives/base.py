"""The pretraining-objective seam: what an objective receives, what it returns, what it declares.

A pretraining model is three steps (``models.Wav2Vec2ForPreTraining``)::

    features = backbone(wave, mask)                  # conv features, context vectors c_t
    targets  = objective.targets(...)                # what each masked frame must predict
    loss     = objective(...)                        # predict the masked targets

Everything that is specific to one objective (its target network, which frames it needs,
its index bookkeeping, its losses and metrics) lives in one :class:`PretrainingObjective`
subclass, and its settings in one typed config (:mod:`wav2vec2_lite.objectives.configs`).
Adding an objective = a new file with a subclass, its config class with a field of that
name on ``Wav2Vec2Config``, and one line in :mod:`wav2vec2_lite.objectives.registry`
(see ``docs/objectives.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.quantizer import QuantizerOutput

__all__ = ["ObjectiveInputs", "ObjectiveOutput", "PretrainingObjective", "frame_counts"]


@dataclass
class ObjectiveInputs:
    """What the backbone hands to an objective (right padding everywhere)."""

    waveform: Tensor
    """(B, S) float, the model's input."""
    sample_padding: Tensor | None
    """(B, S) bool, True at padded samples; None when nothing is padded."""
    conv_features: Tensor
    """(B, C, T) conv feature-encoder output (before its layer norm)."""
    extract_features: Tensor
    """(B, T, C) layer-normed conv features (the contrastive quantizer's input)."""
    context: Tensor
    """(B, T, D) context vectors c_t (the transformer's output)."""
    mask_indices: Tensor
    """(B, T) bool, masked frames (at least one); never True at a padded frame."""
    frame_padding: Tensor | None
    """(B, T) bool, True at padded frames; None when nothing is padded."""
    frame_lengths: Tensor
    """(B,) long, valid frames per utterance."""
    input_quantization: QuantizerOutput | None = None
    """The backbone's input quantizer over all B·T frames, padded ones included (contrastive
    ``quantize_input``); None when the transformer input is not quantized."""


@dataclass(kw_only=True)
class ObjectiveOutput:
    """What an objective returns. Losses are *summed* over the masked frames (the sample size).
    An objective with outputs of its own returns a subclass holding them as typed fields
    (:class:`~wav2vec2_lite.objectives.contrastive.ContrastiveOutput`)."""

    loss_sum: Tensor
    """() weighted total: ``sum(weights[k] * losses[k])``; the model's loss is ``loss_sum / num_masked``."""
    num_masked: Tensor
    """() long, masked frames: the sample size the trainer divides by."""
    num_correct: Tensor
    """() long, masked frames whose target got the highest score."""
    logits: Tensor
    """(num_masked, ...) the scores of each masked frame's candidates or classes."""
    losses: dict[str, Tensor]
    """Unweighted loss parts, each summed over the masked frames (``contrastive_loss``, ...)."""
    weights: dict[str, float]
    """The weight of each loss part in ``loss_sum``."""
    metrics: dict[str, Tensor] = field(default_factory=dict)
    """Per-batch numbers that are not sums over frames (``code_perplexity``, ...)."""
    codes: Tensor | None = None
    """(B, T, G) long, the discrete unit of each frame that has one (contrastive: the quantized
    frames, or with only the input quantized every valid frame's input code; best_rq: the
    masked frames' targets, G = 1), −1 elsewhere; G = 0 when the objective has no codebook."""


def frame_counts(mask: Tensor) -> Tensor:
    """() long, masked frames; a ``ValueError`` if there are none (nothing to predict)."""
    n = mask.sum()
    if int(n) == 0:
        raise ValueError(
            "no frame was masked: pretraining needs mask_time_prob > 0 or mask_indices with "
            "at least one True at a valid frame"
        )
    return n


class PretrainingObjective(nn.Module):
    """Base class of the pretraining objectives: ``ObjectiveInputs -> ObjectiveOutput``.

    Subclasses set ``name`` and ``main_loss`` and implement :meth:`targets` (what each
    masked frame must predict) and :meth:`predict` (the losses); they may override

    * :meth:`health_reference` -- the chance level of the main loss and the accuracy, and
      the size of the code inventory, for the training health monitor;
    * :meth:`before_update` -- per-update schedules (the Gumbel temperature), returning the
      numbers to log.

    ``targets(inputs, *, generator=None, negative_indices=None)``: ``generator`` draws every
    random choice (distractors, Gumbel noise) so that runs are reproducible;
    ``negative_indices`` (B, T, K) are given distractors, only meaningful to the contrastive
    objective (others refuse them). ``predict`` raises ``ValueError`` when no frame is
    masked (:func:`frame_counts`). Parameters the objective owns are saved with the model
    under ``objective.``; frozen tensors (random projections, codebooks) are buffers.
    """

    name: ClassVar[str] = ""
    main_loss: ClassVar[str] = ""
    """The key in ``losses`` whose per-frame value is compared with ``chance_loss``."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        """The whole model config (shapes: ``hidden_size``, ``conv_dim``, ``frame_stride``); the
        objective's own settings are ``config.<name>`` (subclasses keep them as ``settings``)."""

    @classmethod
    def health_reference(cls, config: Wav2Vec2Config) -> dict[str, float]:
        """Numbers the training task and health monitor need: ``chance_loss`` (nats per masked
        frame) and ``chance_accuracy`` of a uniform guess, ``code_groups`` and
        ``codes_per_group`` (the shape of the ``codes`` histogram; ``code_groups`` 0: no
        codebook, so no code rules), and ``codebook_frozen``
        (1.0 when the codes come from a frozen random codebook, so a low code perplexity is
        the data's, not a collapse of a learned codebook)."""
        raise NotImplementedError

    def before_update(self, update: int) -> dict[str, float]:
        """Per-update schedule hook (called by the training task); returns numbers to log."""
        return {}

    def targets(
        self,
        inputs: ObjectiveInputs,
        *,
        generator: torch.Generator | None = None,
        negative_indices: Tensor | None = None,
    ) -> Any:
        """What the masked frames must predict (any structure :meth:`predict` understands)."""
        raise NotImplementedError

    def predict(self, inputs: ObjectiveInputs, targets: Any) -> ObjectiveOutput:
        """Predict ``targets`` from the context vectors of the masked frames: losses and metrics."""
        raise NotImplementedError

    def frame_codes(self, inputs: ObjectiveInputs) -> Tensor:
        """(B, T, G) long: the discrete unit of every frame in each of G code groups, as the
        objective's quantizer assigns it without noise (the units ``w2v2-extract --units`` writes;
        ``mask_indices`` is not used). ``ValueError`` when the objective has no codebook."""
        raise NotImplementedError

    def forward(
        self,
        inputs: ObjectiveInputs,
        *,
        generator: torch.Generator | None = None,
        negative_indices: Tensor | None = None,
    ) -> ObjectiveOutput:
        """:meth:`targets` then :meth:`predict`."""
        return self.predict(
            inputs, self.targets(inputs, generator=generator, negative_indices=negative_indices)
        )

    @staticmethod
    def chance(num_classes: int) -> tuple[float, float]:
        """(ln n, 1/n): cross-entropy and accuracy of a uniform guess among n candidates."""
        return math.log(num_classes), 1.0 / num_classes
