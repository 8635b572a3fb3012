"""wav2vec 2.0's objective (§3.2): pick the true quantized latent among distractors.

Targets: the layer-normed conv features of the masked frames and of every distractor they
point at go through dropout and the Gumbel product quantizer, then ``project_q``. Each
masked frame's context vector goes through ``final_proj`` and is scored (cosine / κ)
against its positive and K distractors. Loss per masked frame: cross-entropy over those
1 + K candidates, plus α · diversity (codebook usage) and β · the L2 penalty on the conv
features (fairseq ``features_pen``; computed here only, so CTC and inference skip it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.precast import Linear
from wav2vec2_lite.modules.quantizer import GumbelProductQuantizer, gumbel_temperature, one_hot, perplexity
from wav2vec2_lite.objectives.base import ObjectiveInputs, ObjectiveOutput, PretrainingObjective, frame_counts
from wav2vec2_lite.objectives.configs import ContrastiveConfig
from wav2vec2_lite.objectives.losses import (
    contrastive_logits,
    contrastive_loss,
    diversity_loss,
    feature_penalty,
)
from wav2vec2_lite.objectives.masking import sample_cross_negatives, sample_negatives, validate_negatives

__all__ = ["ContrastiveObjective", "ContrastiveOutput", "ContrastiveTargets"]


@dataclass
class ContrastiveTargets:
    """The distractors of a batch and its quantized frames, laid out per utterance."""

    negatives: Tensor
    """(B, T, K) long, same-utterance distractor frames."""
    cross: Tensor | None
    """(B, T, Kc) long flat ``b·T + t`` cross-utterance distractors, or None."""
    candidates: Tensor
    """(N, 1 + K) frame of each masked frame's positive, then of its distractors."""
    needed: Tensor
    """(B, T) bool, frames that were quantized: the masked ones and every distractor."""
    slot: Tensor
    """(B, T) long, rank of each needed frame among its utterance's needed frames."""
    padded: Tensor
    """(B, Q, F) projected targets per utterance, zero in unused slots."""
    flat: Tensor
    """(sum of needed, F) the same targets in batch order."""
    codes: Tensor
    """(B, T, G) long, codes of the needed frames, -1 elsewhere."""
    soft_probs: Tensor
    """(needed, G, V) quantizer softmax without noise."""
    hard_codes: Tensor
    """(needed, G) argmax codes without noise."""


@dataclass(kw_only=True)
class ContrastiveOutput(ObjectiveOutput):
    """The contrastive objective's result: the generic fields and its own parts."""

    contrastive_loss: Tensor
    """() summed over masked frames (as transformers reports it)."""
    diversity_loss: Tensor
    """() (G·V − soft perplexity) / (G·V) over masked frames."""
    feature_penalty: Tensor
    """() mean squared conv-encoder activation over valid frames (the L2 penalty)."""
    prob_perplexity: Tensor
    """() soft code perplexity over masked frames (what the diversity loss uses)."""
    negative_indices: Tensor
    """(B, T, K) long frame indices within each utterance: the distractors used."""
    cross_negative_indices: Tensor | None = None
    """(B, T, Kc) flat ``b·T + t`` indices of cross-utterance distractors, if configured."""


class ContrastiveObjective(PretrainingObjective):
    """Gumbel product quantizer + contrastive task + diversity loss + feature penalty."""

    name = "contrastive"
    main_loss = "contrastive_loss"

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.settings: ContrastiveConfig = config.contrastive
        self.dropout_features = nn.Dropout(self.settings.dropout_features)
        self.quantizer = GumbelProductQuantizer(self.settings, input_dim=config.conv_dim[-1])
        self.project_q = Linear(self.settings.codevector_dim, self.settings.final_dim)
        self.final_proj = Linear(config.hidden_size, self.settings.final_dim)

    @classmethod
    def health_reference(cls, config: Wav2Vec2Config) -> dict[str, float]:
        c = config.contrastive
        loss, acc = cls.chance(c.num_negatives + c.cross_sample_negatives + 1)
        return {
            "chance_loss": loss,
            "chance_accuracy": acc,
            "codebook_frozen": 0.0,
            "code_groups": float(c.num_code_groups),
            "codes_per_group": float(c.num_codes_per_group),
        }

    def temperature_at(self, update: int) -> float:
        """The configured Gumbel annealing schedule at a given update."""
        return gumbel_temperature(update, *self.settings.gumbel_temperature)

    def set_temperature(self, temperature: float) -> None:
        """Fix the Gumbel temperature (e.g. for evaluation at a chosen point of the schedule)."""
        self.quantizer.temperature = float(temperature)

    def before_update(self, update: int) -> dict[str, float]:
        temp = self.temperature_at(update)
        self.quantizer.temperature = temp
        return {"gumbel_temp": temp}

    # ------------------------------------------------------------- distractors
    def distractors(
        self, inputs: ObjectiveInputs, negative_indices: Tensor | None, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor | None]:
        """(B, T, K) same-utterance frame indices and optional (B, T, Kc) flat cross-utterance ones."""
        cfg, mask = self.settings, inputs.mask_indices
        if negative_indices is None:
            negative_indices = sample_negatives(mask.cpu(), cfg.num_negatives, generator=generator).to(
                mask.device
            )
        else:
            negative_indices = negative_indices.to(device=mask.device, dtype=torch.long)
            validate_negatives(negative_indices, mask, inputs.frame_lengths)
        cross = None
        if cfg.cross_sample_negatives > 0:
            cross = sample_cross_negatives(mask.cpu(), cfg.cross_sample_negatives, generator=generator)
            cross = cross.to(mask.device)
        return negative_indices, cross

    # ----------------------------------------------------------------- targets
    def targets(
        self,
        inputs: ObjectiveInputs,
        *,
        generator: torch.Generator | None = None,
        negative_indices: Tensor | None = None,
    ) -> ContrastiveTargets:
        """Draw (or check) the distractors, then quantize only the frames some masked frame
        compares against: the masked frames and their distractors."""
        mask = inputs.mask_indices
        frame_counts(mask)
        negatives, cross = self.distractors(inputs, negative_indices, generator)
        b_m, t_m = mask.nonzero(as_tuple=True)  # (N,) each
        candidates = torch.cat([t_m[:, None], negatives[b_m, t_m]], dim=1)  # (N, 1 + K)
        needed = mask.clone()
        needed[b_m[:, None].expand_as(candidates), candidates] = True
        if cross is not None:
            needed.view(-1)[cross[b_m, t_m].flatten()] = True
        slot = needed.cumsum(1) - 1  # (B, T)

        features = self.dropout_features(inputs.extract_features)  # (B, T, C)
        quant = self.quantizer(features[needed], generator=generator)
        flat = self.project_q(quant.codevectors)  # (Q, F)
        b_q, t_q = needed.nonzero(as_tuple=True)
        padded = flat.new_zeros(mask.shape[0], int(needed.sum(1).max()), flat.shape[-1])
        padded = padded.index_put((b_q, slot[b_q, t_q]), flat)
        codes = torch.full(
            (*mask.shape, self.settings.num_code_groups), -1, dtype=torch.long, device=mask.device
        )
        codes[b_q, t_q] = quant.codes
        return ContrastiveTargets(
            negatives,
            cross,
            candidates,
            needed,
            slot,
            padded,
            flat,
            codes,
            quant.soft_probs,
            quant.hard_codes,
        )

    @torch.no_grad()
    def frame_codes(self, inputs: ObjectiveInputs) -> Tensor:
        """(B, T, G): the Gumbel quantizer's most probable entry per group (its eval-mode choice)."""
        feats = inputs.extract_features
        logits = self.quantizer.weight_proj(feats.flatten(0, 1)).float()
        groups = self.settings.num_code_groups
        return logits.view(-1, groups, logits.shape[-1] // groups).argmax(-1).view(*feats.shape[:2], -1)

    # ------------------------------------------------------------------- loss
    def predict(self, inputs: ObjectiveInputs, targets: ContrastiveTargets) -> ContrastiveOutput:
        """Score each masked frame's context vector against its candidates; sum the losses."""
        cfg, mask, tg = self.settings, inputs.mask_indices, targets
        b_m, t_m = mask.nonzero(as_tuple=True)  # (N,) each
        cand_codes = tg.codes[b_m[:, None], tg.candidates]  # (N, 1 + K, G)
        same_as_pos = (cand_codes == cand_codes[:, :1]).all(-1)
        same_as_pos[:, 0] = False
        cross_targets = None
        if tg.cross is not None:
            cross_idx = tg.cross[b_m, t_m]  # (N, Kc) flat b·T + t
            cross_targets = tg.flat[(tg.needed.flatten().cumsum(0) - 1)[cross_idx]]
            same_cross = (tg.codes.view(-1, cfg.num_code_groups)[cross_idx] == cand_codes[:, :1]).all(-1)
            same_as_pos = torch.cat([same_as_pos, same_cross], dim=1)

        predictions = self.final_proj(inputs.context[b_m, t_m])  # (N, F)
        pred_slot = mask.cumsum(1)[b_m, t_m] - 1
        logits = contrastive_logits(
            predictions,
            tg.padded,
            tg.slot[b_m[:, None], tg.candidates],
            same_as_pos,
            b_m,
            pred_slot,
            cfg.logit_temperature,
            cross_targets=cross_targets,
        )
        contrastive_sum, num_correct = contrastive_loss(logits)

        masked_rows = mask[tg.needed]  # which quantized rows are masked frames
        div, soft_ppl = diversity_loss(tg.soft_probs[masked_rows])
        hard_ppl = perplexity(one_hot(tg.hard_codes[masked_rows], cfg.num_codes_per_group))
        penalty = feature_penalty(inputs.conv_features, inputs.frame_padding)
        n_masked = mask.sum()
        n = n_masked.to(contrastive_sum.dtype)
        losses = {
            "contrastive_loss": contrastive_sum,
            "diversity_loss": n * div,
            "feature_penalty": n * penalty,
        }
        weights = {
            "contrastive_loss": 1.0,
            "diversity_loss": cfg.diversity_loss_weight,
            "feature_penalty": cfg.feature_penalty_weight,
        }
        loss_sum = contrastive_sum + n * (
            cfg.diversity_loss_weight * div + cfg.feature_penalty_weight * penalty
        )
        return ContrastiveOutput(
            loss_sum=loss_sum,
            num_masked=n_masked,
            num_correct=num_correct,
            logits=logits,
            losses=losses,
            weights=weights,
            metrics={"code_perplexity": hard_ppl, "prob_perplexity": soft_ppl},
            codes=tg.codes,
            contrastive_loss=contrastive_sum,
            diversity_loss=div,
            feature_penalty=penalty,
            prob_perplexity=soft_ppl,
            negative_indices=tg.negatives,
            cross_negative_indices=tg.cross,
        )
