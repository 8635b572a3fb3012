"""Output dataclasses of the models (tensor shapes in each field's docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from wav2vec2_lite.objectives.base import ObjectiveOutput

__all__ = ["Wav2Vec2ModelOutput", "PreTrainingOutput", "CTCOutput"]


@dataclass
class Wav2Vec2ModelOutput:
    last_hidden_state: Tensor
    """(B, T, D) context vectors c_t."""
    extract_features: Tensor
    """(B, T, C) layer-normed encoder features (the quantizer's input, before dropout)."""
    conv_features: Tensor
    """(B, C, T) conv feature-encoder output before its layer norm (the L2 penalty's input)."""
    frame_lengths: Tensor
    """(B,) valid frames per utterance."""
    padding_mask: Tensor | None = None
    """(B, T) bool, True = padded frame; None when nothing is padded."""
    mask_indices: Tensor | None = None
    """(B, T) bool, frames replaced by the learned mask embedding; None if none."""
    hidden_states: tuple[Tensor, ...] | None = None
    """First block's input, then every block's output, each (B, T, D), if requested."""

    def layer(self, name: str) -> Tensor:
        """The frames of one named layer: ``conv`` (= ``extract_features``), ``layer_k`` (the
        k-th of ``hidden_states``, which must have been requested) or ``last`` (c_t)."""
        if name == "conv":
            return self.extract_features
        if name == "last":
            return self.last_hidden_state
        if not name.startswith("layer_") or not name[6:].isdigit():
            raise ValueError(f"unknown layer name {name!r}: conv, layer_<k> or last")
        if self.hidden_states is None:
            raise ValueError(
                f"layer {name!r} needs the hidden states: call the model with output_hidden_states=True"
            )
        k = int(name[6:])
        if k >= len(self.hidden_states):
            raise ValueError(f"no {name}: this model has layer_0 .. layer_{len(self.hidden_states) - 1}")
        return self.hidden_states[k]


@dataclass
class PreTrainingOutput:
    """What ``Wav2Vec2ForPreTraining`` returns, for every objective; what only one objective
    produces is in ``objective``, that objective's own output type."""

    loss: Tensor
    """() per masked frame: ``loss_sum / num_masked`` (contrastive: contrastive_loss / num_masked
    + α·diversity_loss + β·feature_penalty; best_rq: the mean cross-entropy)."""
    loss_sum: Tensor
    """() = loss · num_masked; divide by the global masked count under data parallelism."""
    num_masked: Tensor
    """() long, masked frames in the batch."""
    num_correct: Tensor
    """() long, masked frames whose target scored highest."""
    accuracy: Tensor
    """() num_correct / num_masked."""
    logits: Tensor
    """contrastive: (num_masked, 1 + K [+ Kc]) cosine / κ, positive first; best_rq: (num_masked, V)."""
    mask_indices: Tensor
    """(B, T) bool, the masks used."""
    last_hidden_state: Tensor
    """(B, T, D) context vectors."""
    losses: dict[str, Tensor] = field(default_factory=dict)
    """The objective's unweighted loss parts, each summed over masked frames."""
    metrics: dict[str, Tensor] = field(default_factory=dict)
    """The objective's per-batch metrics (``code_perplexity``, ...)."""
    code_perplexity: Tensor | None = None
    """() contrastive: hard (argmax) code perplexity over masked frames, summed over groups;
    best_rq: usage perplexity of the masked frames' target codes."""
    codes: Tensor | None = None
    """(B, T, G) long, codes of the frames that were quantized (best_rq: the masked frames'
    targets, G = 1), −1 elsewhere."""
    objective: ObjectiveOutput | None = None
    """The objective's own result, of its own type: contrastive's
    :class:`~wav2vec2_lite.objectives.contrastive.ContrastiveOutput` holds ``contrastive_loss``,
    ``diversity_loss``, ``feature_penalty``, ``prob_perplexity``, ``negative_indices``."""
    hidden_states: tuple[Tensor, ...] | None = None
    """First block's input, then every block's output, if requested."""

    @classmethod
    def from_objective(cls, result: ObjectiveOutput, backbone: Wav2Vec2ModelOutput) -> "PreTrainingOutput":
        """Combine an objective's result with the backbone output it was computed from."""
        n = result.num_masked.to(result.loss_sum.dtype)
        return cls(
            loss=result.loss_sum / n,
            loss_sum=result.loss_sum,
            num_masked=result.num_masked,
            num_correct=result.num_correct,
            accuracy=result.num_correct.float() / n,
            logits=result.logits,
            mask_indices=backbone.mask_indices,
            last_hidden_state=backbone.last_hidden_state,
            losses=result.losses,
            metrics=result.metrics,
            code_perplexity=result.metrics.get("code_perplexity"),
            codes=result.codes,
            objective=result,
            hidden_states=backbone.hidden_states,
        )


@dataclass
class CTCOutput:
    logits: Tensor
    """(B, T, vocab) unnormalised scores, blank at index 0."""
    output_lengths: Tensor
    """(B,) valid frames per utterance."""
    loss: Tensor | None = None
    """() CTC loss with the config's reduction, when labels are given."""
    hidden_states: tuple[Tensor, ...] | None = None
    """First block's input, then every block's output, if requested."""
