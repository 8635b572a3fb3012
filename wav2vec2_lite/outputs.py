"""Output dataclasses of the models (tensor shapes in each field's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Wav2Vec2ModelOutput", "PreTrainingOutput", "CTCOutput"]


@dataclass
class Wav2Vec2ModelOutput:
    last_hidden_state: Tensor
    """(B, T, D) context vectors c_t."""
    extract_features: Tensor
    """(B, T, C) layer-normed encoder features (the quantizer's input, before dropout)."""
    feature_penalty: Tensor
    """() mean squared conv-encoder activation over valid frames."""
    frame_lengths: Tensor
    """(B,) valid frames per utterance."""
    padding_mask: Tensor | None = None
    """(B, T) bool, True = padded frame; None when nothing is padded."""
    mask_indices: Tensor | None = None
    """(B, T) bool, frames replaced by the learned mask embedding; None if none."""
    hidden_states: tuple[Tensor, ...] | None = None
    """First block's input, then every block's output, each (B, T, D), if requested."""


@dataclass
class PreTrainingOutput:
    loss: Tensor
    """() per masked frame: contrastive_loss / num_masked + α·diversity_loss + β·feature_penalty."""
    loss_sum: Tensor
    """() = loss · num_masked; divide by the global masked count under data parallelism."""
    contrastive_loss: Tensor
    """() summed over masked frames (as transformers reports it)."""
    diversity_loss: Tensor
    """() (G·V − soft perplexity) / (G·V) over masked frames."""
    feature_penalty: Tensor
    """() L2 penalty on the conv encoder output."""
    code_perplexity: Tensor
    """() hard (argmax) code perplexity over masked frames, summed over groups."""
    prob_perplexity: Tensor
    """() soft code perplexity over masked frames (what the diversity loss uses)."""
    num_masked: Tensor
    """() long, masked frames in the batch."""
    num_correct: Tensor
    """() long, masked frames whose positive scored highest."""
    accuracy: Tensor
    """() num_correct / num_masked."""
    logits: Tensor
    """(num_masked, 1 + K [+ Kc]) contrastive logits (cosine / κ), positive first."""
    mask_indices: Tensor
    """(B, T) bool, the masks used."""
    negative_indices: Tensor
    """(B, T, K) long frame indices within each utterance, the distractors used."""
    codes: Tensor
    """(B, T, G) long, quantizer codes of the frames that were quantized, −1 elsewhere."""
    last_hidden_state: Tensor
    """(B, T, D) context vectors."""
    cross_negative_indices: Tensor | None = None
    """(B, T, Kc) flat ``b·T + t`` indices of cross-utterance distractors, if configured."""
    hidden_states: tuple[Tensor, ...] | None = None
    """First block's input, then every block's output, if requested."""


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
