"""BEST-RQ targets (Chiu et al. 2022, arXiv 2202.01855): predict a frozen random quantizer's codes.

Targets: 80-dim log-mel frames (25 ms window, 10 ms hop) of the *unmasked* wave, two
stacked per 20 ms encoder frame (:meth:`LogMel.encoder_frames`), normalised to zero mean
and unit variance per dimension, projected by a frozen Xavier-uniform matrix A
(input_dim × d) and assigned to the nearest entry of a frozen codebook of V L2-normalised
Gaussian vectors (nearest in L2 after normalising the projection = highest cosine). A and
the codebook are drawn from ``torch.Generator().manual_seed(seed)`` and stored as buffers:
saved with the model, never trained.

Normalisation (``best_rq.normalization``):

* ``"global"`` (default): one per-dimension mean and variance
  (:class:`~wav2vec2_lite.modules.log_mel.FrozenNormalization`, buffers
  ``objective.normalization.{mean,var,frames,frozen}``), accumulated over the valid frames
  of the training batches (train mode) until ``normalization_frames`` frames (default
  2000 = 40 s of audio) have been seen, each batch merged in before its own targets are
  computed; then frozen: never updated again, saved and loaded with the model (training
  checkpoints too), so from then on the codes of an utterance never change.
  :meth:`BestRQObjective.fit_normalization` estimates them on given audio and freezes
  them at once (call it before training to have the same targets from the first update).
  Eval mode never updates them; an eval forward before any statistics exist is an error.
  Under DDP each rank accumulates its own frames; DDP's buffer broadcast (on by default)
  overwrites them with rank 0's at every synchronised forward, so once rank 0's are
  frozen every rank uses them (not tested: no multi-process test).
* ``"utterance"``: each utterance by its own valid frames (SpeechBrain's recipe,
  ``InputNormalization(norm_type="sentence")``); no statistics.

Loss: a linear head maps each masked frame's context vector to V logits; cross-entropy
with the target code, summed over masked frames. Chance level: ln V nats per frame.
Metrics: accuracy (the target code ranked first) and the code-usage perplexity of the
masked frames' targets (exp of the entropy of their histogram; at most V).

Defaults follow the paper and SpeechBrain's ``BEST-RQ.yaml`` (d = 16, V = 8192,
80 mel bins); ``configs/model/tiny_best_rq.yaml`` uses V = 1024 at tiny scale. Settings:
:class:`~wav2vec2_lite.objectives.configs.BestRQConfig` (``Wav2Vec2Config.best_rq``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.log_mel import (
    FrozenNormalization,
    LogMel,
    normalize_per_utterance,
)
from wav2vec2_lite.modules.quantizer import perplexity
from wav2vec2_lite.objectives.base import (
    ObjectiveInputs,
    ObjectiveOutput,
    PretrainingObjective,
    frame_counts,
)
from wav2vec2_lite.objectives.configs import BestRQConfig

__all__ = ["BestRQObjective", "RandomProjectionQuantizer", "usage_perplexity"]


def usage_perplexity(codes: Tensor, num_codes: int) -> Tensor:
    """exp(entropy) of the histogram of ``codes`` (any shape, values in [0, num_codes))."""
    counts = torch.bincount(codes.flatten(), minlength=num_codes).float()
    return perplexity((counts / counts.sum().clamp(min=1.0))[None, None])  # one "frame" holding the histogram


class RandomProjectionQuantizer(nn.Module):
    """``(N, input_dim) -> (N,)`` codes: nearest L2-normalised codebook entry to the projected,
    L2-normalised input. Frozen: the projection and the codebook are buffers."""

    def __init__(self, input_dim: int, codebook_dim: int, codebook_size: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / (input_dim + codebook_dim))  # Xavier (Glorot) uniform
        projection = torch.rand(input_dim, codebook_dim, generator=g) * (2 * bound) - bound
        codebook = F.normalize(torch.randn(codebook_size, codebook_dim, generator=g), dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", codebook)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            z = F.normalize(x.float() @ self.projection.float(), dim=-1)  # (N, d)
            return (z @ self.codebook.float().T).argmax(-1)  # max cosine = min L2 between unit vectors


class BestRQObjective(PretrainingObjective):
    """Log-mel -> frozen random-projection codes; a linear head predicts them at masked frames."""

    name = "best_rq"
    main_loss = "cross_entropy_loss"

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)  # the config validated its settings and the frame stride
        self.settings: BestRQConfig = config.best_rq
        o = self.settings
        self.log_mel = LogMel(n_mels=o.num_mel_bins)
        stack = config.frame_stride // self.log_mel.hop
        self.quantizer = RandomProjectionQuantizer(
            stack * o.num_mel_bins, o.codebook_dim, o.codebook_size, o.seed
        )
        self.normalization = (
            FrozenNormalization(stack * o.num_mel_bins, limit=o.normalization_frames)
            if o.normalization == "global"
            else None
        )
        self.head = nn.Linear(config.hidden_size, o.codebook_size)

    @classmethod
    def health_reference(cls, config: Wav2Vec2Config) -> dict[str, float]:
        v = config.best_rq.codebook_size
        loss, acc = cls.chance(v)
        return {
            "chance_loss": loss,
            "chance_accuracy": acc,
            "code_groups": 1.0,
            "codes_per_group": float(v),
            "codebook_frozen": 1.0,
        }

    def _features(self, waveform: Tensor, sample_padding: Tensor | None, frames: int) -> Tensor:
        """(B, T, stack · n_mels) log-mel frames on the encoder's frames, not normalised."""
        return self.log_mel.encoder_frames(waveform, frames, self.config.frame_stride, sample_padding)

    def _frame_lengths(self, samples: Tensor) -> Tensor:
        """(B,) encoder frames of utterances of ``samples`` samples: floor((S - R) / J) + 1, at least 0."""
        r, j = self.config.receptive_field, self.config.frame_stride
        return torch.div(samples - r, j, rounding_mode="floor").add(1).clamp(min=0)

    @torch.no_grad()
    def fit_normalization(
        self, waveform: Tensor | Sequence[Tensor], sample_padding: Tensor | None = None
    ) -> int:
        """Estimate the normalisation statistics on ``waveform`` alone and freeze them.

        ``waveform``: a (B, S) batch with ``sample_padding`` (True at padded samples), or a
        list of 1-D waves. Call it before training (every code computed earlier is then
        stale). Returns the number of frames used. Only for ``normalization="global"``.
        """
        if self.normalization is None:
            raise ValueError(
                "fit_normalization: this objective normalises each utterance by its own frames "
                "(normalization='utterance'); there are no statistics to estimate"
            )
        if not isinstance(waveform, Tensor):
            waves = [torch.as_tensor(w).flatten() for w in waveform]
            longest = max(w.shape[0] for w in waves)
            sample_padding = torch.stack([torch.arange(longest) >= w.shape[0] for w in waves])
            waveform = torch.stack([F.pad(w.float(), (0, longest - w.shape[0])) for w in waves])
        device = self.quantizer.codebook.device
        waveform = waveform.to(device)
        samples = torch.full((waveform.shape[0],), waveform.shape[1], device=device)
        if sample_padding is not None:
            sample_padding = sample_padding.to(device)
            samples = samples - sample_padding.sum(1)
        lengths = self._frame_lengths(samples)
        frames = int(self._frame_lengths(samples.new_tensor(waveform.shape[1])))
        mel = self._features(waveform, sample_padding, frames)
        self.normalization.fit(mel, lengths)
        return int(self.normalization.frames)

    @torch.no_grad()
    def frame_codes(self, inputs: ObjectiveInputs) -> Tensor:
        """(B, T, 1): the random-projection code of every frame (normalisation statistics untouched)."""
        mel = self._features(inputs.waveform, inputs.sample_padding, inputs.conv_features.shape[-1])
        if self.normalization is None:
            mel = normalize_per_utterance(mel, inputs.frame_lengths)
        else:
            mel = self.normalization(mel, inputs.frame_lengths)
        return self.quantizer(mel.flatten(0, 1)).view(*mel.shape[:2], 1)

    @torch.no_grad()
    def targets(
        self,
        inputs: ObjectiveInputs,
        *,
        generator: torch.Generator | None = None,
        negative_indices: Tensor | None = None,
    ) -> Tensor:
        """(B, T) long codes of every frame (padded frames too; only masked ones are used).

        With ``normalization="global"`` in train mode, this batch's valid frames are merged
        into the normalisation statistics first, until they are frozen.
        """
        if negative_indices is not None:
            raise ValueError(
                "negative_indices are distractors of the contrastive objective; the best_rq "
                "objective has none"
            )
        frame_counts(inputs.mask_indices)
        mel = self._features(
            inputs.waveform, inputs.sample_padding, inputs.conv_features.shape[-1]
        )  # (B, T, stack · n_mels)
        if self.normalization is None:
            mel = normalize_per_utterance(mel, inputs.frame_lengths)
        else:
            if self.training:
                self.normalization.update(mel, inputs.frame_lengths)  # a no-op once frozen
            mel = self.normalization(mel, inputs.frame_lengths)
        return self.quantizer(mel.flatten(0, 1)).view(mel.shape[:2])

    def predict(self, inputs: ObjectiveInputs, targets: Tensor) -> ObjectiveOutput:
        """Cross-entropy of the head's V logits against each masked frame's target code."""
        mask = inputs.mask_indices
        target = targets[mask]  # (N,)
        logits = self.head(inputs.context[mask]).float()  # (N, V)
        ce_sum = F.cross_entropy(logits, target, reduction="sum")
        num_correct = (logits.detach().argmax(-1) == target).sum()
        return ObjectiveOutput(
            loss_sum=ce_sum,
            num_masked=frame_counts(mask),
            num_correct=num_correct,
            logits=logits,
            losses={"cross_entropy_loss": ce_sum},
            weights={"cross_entropy_loss": 1.0},
            metrics={"code_perplexity": usage_perplexity(target, self.settings.codebook_size)},
            codes=targets.masked_fill(~mask, -1)[..., None],
        )
