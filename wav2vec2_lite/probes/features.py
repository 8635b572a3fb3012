"""Frozen features of every layer, extracted once per model and kept in memory.

Layers of a wav2vec 2.0 backbone (:func:`extract_layer_features`), one utterance at a time
(no padding, so group-norm models see exactly their own samples), eval mode, no gradient:

* ``conv``: the layer-normed conv features (``extract_features``, dim C), what the
  feature projection reads;
* ``layer_0``: the transformer's input (projected features + positional conv, after its
  LayerNorm for post-LN models), ``hidden_states[0]``;
* ``layer_k``: the output of transformer block k (``hidden_states[k]``, k = 1 .. L; for
  pre-LN models the last one is before the final LayerNorm, as in transformers).

The log-mel front end (:func:`log_mel_features`): :class:`~wav2vec2_lite.modules.log_mel.LogMel`
frames (80 mel bins, 25 ms / 10 ms) stacked ``frame_stride / 160`` at a time onto the
encoder's 20 ms frames, as BEST-RQ does, so they have exactly the encoder's frame count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from wav2vec2_lite.data.audio import normalize as normalize_wave
from wav2vec2_lite.models import backbone_of
from wav2vec2_lite.modules.log_mel import LogMel

__all__ = ["FrameFeatures", "extract_layer_features", "layer_names", "log_mel_features"]


@dataclass
class FrameFeatures:
    """The frames of U utterances, concatenated: ``frames`` (N, D) float32 and ``lengths`` (U,),
    ``lengths.sum() == N``; utterance ``i`` is ``frames[offsets[i] : offsets[i] + lengths[i]]``."""

    frames: Tensor  # (N, D)
    lengths: Tensor  # (U,) long

    def __post_init__(self) -> None:
        if self.frames.dim() != 2:
            raise ValueError(f"frames must be (N, D), found shape {tuple(self.frames.shape)}")
        if int(self.lengths.sum()) != self.frames.shape[0]:
            raise ValueError(
                f"lengths sum to {int(self.lengths.sum())} but there are {self.frames.shape[0]} frames"
            )
        self.offsets = torch.cat([self.lengths.new_zeros(1), self.lengths.cumsum(0)[:-1]])

    @classmethod
    def from_list(cls, utterances: Sequence[Tensor]) -> FrameFeatures:
        """From U tensors (T_i, D)."""
        if not utterances:
            raise ValueError("no utterance")
        lengths = torch.tensor([u.shape[0] for u in utterances], dtype=torch.long)
        return cls(torch.cat([u.float() for u in utterances]), lengths)

    def __len__(self) -> int:
        return int(self.lengths.numel())

    @property
    def dim(self) -> int:
        return int(self.frames.shape[1])

    def utterance(self, i: int) -> Tensor:
        o = int(self.offsets[i])
        return self.frames[o : o + int(self.lengths[i])]

    def batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T_max, D)`` zero-padded frames and ``(B,)`` lengths of the utterances ``indices``."""
        idx = [int(i) for i in indices]
        return pad_sequence([self.utterance(i) for i in idx], batch_first=True), self.lengths[idx]

    def map_frames(self, fn: Callable[[Tensor], Tensor]) -> FrameFeatures:
        """The same utterances with ``fn`` applied to all frames (N, D) -> (N, D')."""
        return FrameFeatures(fn(self.frames), self.lengths.clone())


def layer_names(num_layers: int) -> list[str]:
    """``["conv", "layer_0", ..., "layer_L"]`` for a backbone of L transformer blocks."""
    return ["conv"] + [f"layer_{k}" for k in range(num_layers + 1)]


@torch.no_grad()
def extract_layer_features(
    model: nn.Module, waves: Sequence[Tensor], *, normalize: bool = False, device: str | torch.device = "cpu"
) -> dict[str, FrameFeatures]:
    """Every layer's frames for each wave (S_i,) -> ``{name: FrameFeatures}`` in :func:`layer_names` order.

    ``model`` is a backbone (``Wav2Vec2Model``) or a model holding one (``.wav2vec2``); it runs
    in eval mode (its mode is restored afterwards). ``normalize``: zero-mean unit-variance
    waves first (what models trained with ``data.normalize`` expect).
    """
    backbone = backbone_of(model)
    was_training = backbone.training
    backbone.eval()
    names = layer_names(backbone.config.num_layers)
    per_layer: dict[str, list[Tensor]] = {n: [] for n in names}
    try:
        for wave in waves:
            w = normalize_wave(wave.float()) if normalize else wave.float()
            out = backbone(w[None].to(device), output_hidden_states=True)
            for name in names:
                per_layer[name].append(out.layer(name)[0].float().cpu())  # (T, C) conv, (T, D) layers
    finally:
        backbone.train(was_training)
    return {n: FrameFeatures.from_list(per_layer[n]) for n in names}


@torch.no_grad()
def log_mel_features(
    waves: Sequence[Tensor], frames: Sequence[int], frame_stride: int, log_mel: LogMel | None = None
) -> FrameFeatures:
    """Log-mel frames stacked onto the encoder's: utterance i gets exactly ``frames[i]`` frames
    of ``stack · n_mels`` dims (``stack = frame_stride / hop``); see :meth:`LogMel.encoder_frames`."""
    log_mel = log_mel or LogMel()
    if len(waves) != len(frames):
        raise ValueError(f"{len(waves)} waves but {len(frames)} frame counts")
    return FrameFeatures.from_list(
        [log_mel.encoder_frames(w.float()[None], int(t), frame_stride)[0] for w, t in zip(waves, frames)]
    )
