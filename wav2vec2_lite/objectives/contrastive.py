"""wav2vec 2.0's objective (§3.2): pick the true target among distractors.

Targets: the layer-normed conv features of the masked frames and of every distractor they
point at go through dropout, the Gumbel product quantizer (``quantize_targets``, the
default; without it the continuous features are the targets) and ``project_q``. Each
masked frame's context vector goes through ``final_proj`` and is scored (cosine / κ)
against its positive and K distractors. Loss per masked frame: cross-entropy over those
1 + K candidates, plus α · diversity (codebook usage) and β · the L2 penalty on the conv
features (fairseq ``features_pen``; computed here only, so CTC and inference skip it).

With ``quantize_input`` the backbone quantizes the transformer's input
(:mod:`wav2vec2_lite.modules.input_quantizer`); the pretraining model hands that quantizer
to the objective (:meth:`ContrastiveObjective.use_input_quantizer`), which anneals its
temperature and, with ``same_quantizer``, uses it as the target quantizer. The diversity
loss follows fairseq: it uses the target quantizer's soft perplexity when targets are
quantized (also when the input is), else the input quantizer's (over every valid frame),
else there is none (``docs/objectives.md``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
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


@dataclass(kw_only=True)
class ContrastiveTargets:
    """The distractors of a batch and its target frames, laid out per utterance."""

    negatives: Tensor
    """(B, T, K) long, same-utterance distractor frames."""
    cross: Tensor | None
    """(B, T, Kc) long flat ``b·T + t`` cross-utterance distractors, or None."""
    candidates: Tensor
    """(N, 1 + K) frame of each masked frame's positive, then of its distractors."""
    needed: Tensor
    """(B, T) bool, frames whose targets were computed: the masked ones and every distractor."""
    slot: Tensor
    """(B, T) long, rank of each needed frame among its utterance's needed frames."""
    padded: Tensor
    """(B, Q, F) projected targets per utterance, zero in unused slots."""
    flat: Tensor
    """(sum of needed, F) the same targets in batch order."""
    target_ids: Tensor
    """(B, T, G') long, equal at two needed frames exactly when their targets are identical
    (quantized: the codes, G' = G; continuous: an id per distinct vector, G' = 1), -1 elsewhere;
    a distractor identical to the positive is masked out of the loss."""
    codes: Tensor
    """(B, T, G) long, the codes reported for the batch (:attr:`ObjectiveOutput.codes`)."""
    soft_probs: Tensor | None
    """(needed, G, V) target quantizer softmax without noise; None for continuous targets."""
    hard_codes: Tensor | None
    """(needed, G) target argmax codes without noise; None for continuous targets."""


@dataclass(kw_only=True)
class ContrastiveOutput(ObjectiveOutput):
    """The contrastive objective's result: the generic fields and its own parts."""

    contrastive_loss: Tensor
    """() summed over masked frames (as transformers reports it)."""
    diversity_loss: Tensor | None
    """() (G·V − soft perplexity) / (G·V) of the quantizer fairseq takes it from (the
    target quantizer's over masked frames, else the input quantizer's over valid frames);
    None without a codebook."""
    feature_penalty: Tensor
    """() mean squared conv-encoder activation over valid frames (the L2 penalty)."""
    prob_perplexity: Tensor | None
    """() soft code perplexity the diversity loss uses; None without a codebook."""
    negative_indices: Tensor
    """(B, T, K) long frame indices within each utterance: the distractors used."""
    cross_negative_indices: Tensor | None = None
    """(B, T, Kc) flat ``b·T + t`` indices of cross-utterance distractors, if configured."""


class ContrastiveObjective(PretrainingObjective):
    """Gumbel product quantizer (or continuous targets) + contrastive task + diversity loss +
    feature penalty."""

    name = "contrastive"
    main_loss = "contrastive_loss"

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.settings: ContrastiveConfig = config.contrastive
        s = self.settings
        self.dropout_features = nn.Dropout(s.dropout_features)
        own_quantizer = s.quantize_targets and not s.same_quantizer  # shared: the backbone's, attached later
        self.quantizer: GumbelProductQuantizer | None = (
            GumbelProductQuantizer(s, input_dim=config.conv_dim[-1]) if own_quantizer else None
        )
        self.project_q = nn.Linear(
            s.codevector_dim if s.quantize_targets else config.conv_dim[-1], s.final_dim
        )
        self.final_proj = nn.Linear(config.hidden_size, s.final_dim)
        self._input_quantizer: list[GumbelProductQuantizer] = []
        """The backbone's input quantizer (a list, so that it is not saved a second time here)."""

    def use_input_quantizer(self, quantizer: GumbelProductQuantizer) -> None:
        """Take the backbone's input quantizer (``quantize_input``; the pretraining model calls
        this): its temperature follows the same schedule, and with ``same_quantizer`` it is the
        target quantizer too (then saved under both names, one tensor)."""
        self._input_quantizer = [quantizer]
        if self.settings.same_quantizer:
            self.quantizer = quantizer

    @classmethod
    def health_reference(cls, config: Wav2Vec2Config) -> dict[str, float]:
        c = config.contrastive
        loss, acc = cls.chance(c.num_negatives + c.cross_sample_negatives + 1)
        has_codes = c.quantize_targets or c.quantize_input
        return {
            "chance_loss": loss,
            "chance_accuracy": acc,
            "codebook_frozen": 0.0,
            "code_groups": float(c.num_code_groups) if has_codes else 0.0,
            "codes_per_group": float(c.num_codes_per_group),
        }

    def _gumbel_quantizers(self) -> list[GumbelProductQuantizer]:
        """Every Gumbel quantizer this objective anneals, each once."""
        out = [self.quantizer] if self.quantizer is not None else []
        return out + [q for q in self._input_quantizer if q is not self.quantizer]

    def temperature_at(self, update: int) -> float:
        """The configured Gumbel annealing schedule at a given update."""
        return gumbel_temperature(update, *self.settings.gumbel_temperature)

    def set_temperature(self, temperature: float) -> None:
        """Fix the Gumbel temperature of every quantizer (e.g. for evaluation at a chosen point
        of the schedule)."""
        for q in self._gumbel_quantizers():
            q.temperature = float(temperature)

    def before_update(self, update: int) -> dict[str, float]:
        temp = self.temperature_at(update)
        self.set_temperature(temp)
        return {"gumbel_temp": temp}

    def _target_quantizer(self) -> GumbelProductQuantizer:
        if self.quantizer is None:
            raise RuntimeError(
                "contrastive.same_quantizer: the target quantizer is the backbone's input quantizer, "
                "which this objective has not been given; build it through Wav2Vec2ForPreTraining"
            )
        return self.quantizer

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
        """Draw (or check) the distractors, then compute the targets of only the frames some
        masked frame compares against: the masked frames and their distractors."""
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
        b_q, t_q = needed.nonzero(as_tuple=True)

        features = self.dropout_features(inputs.extract_features)  # (B, T, C)
        quant = None
        if self.settings.quantize_targets:
            quant = self._target_quantizer()(features[needed], generator=generator)
            flat = self.project_q(quant.codevectors)  # (Q, F)
            target_ids = self._scatter(mask.shape, b_q, t_q, quant.codes)
        else:  # continuous targets: identical only if equal vectors (fairseq compares them)
            flat = self.project_q(features[needed])  # (Q, F)
            ids = torch.unique(flat.detach(), dim=0, return_inverse=True)[1]
            target_ids = self._scatter(mask.shape, b_q, t_q, ids[:, None])
        padded = flat.new_zeros(mask.shape[0], int(needed.sum(1).max()), flat.shape[-1])
        padded = padded.index_put((b_q, slot[b_q, t_q]), flat)
        return ContrastiveTargets(
            negatives=negatives,
            cross=cross,
            candidates=candidates,
            needed=needed,
            slot=slot,
            padded=padded,
            flat=flat,
            target_ids=target_ids,
            codes=target_ids if quant is not None else self._input_codes(inputs),
            soft_probs=quant.soft_probs if quant is not None else None,
            hard_codes=quant.hard_codes if quant is not None else None,
        )

    @staticmethod
    def _scatter(shape: torch.Size, b: Tensor, t: Tensor, values: Tensor) -> Tensor:
        """(B, T, G) long: ``values`` (n, G) at frames (b, t), -1 elsewhere."""
        out = torch.full((*shape, values.shape[-1]), -1, dtype=torch.long, device=values.device)
        out[b, t] = values
        return out

    def _input_codes(self, inputs: ObjectiveInputs) -> Tensor:
        """(B, T, G) the input quantizer's codes at valid frames, -1 at padding; (B, T, 0) when
        nothing is quantized (no codebook: zero code groups)."""
        batch, frames = inputs.mask_indices.shape
        iq = inputs.input_quantization
        if iq is None:
            return torch.full((batch, frames, 0), -1, dtype=torch.long, device=inputs.mask_indices.device)
        codes = iq.codes.view(batch, frames, -1)
        if inputs.frame_padding is not None:
            codes = codes.masked_fill(inputs.frame_padding[..., None], -1)
        return codes

    @torch.no_grad()
    def frame_codes(self, inputs: ObjectiveInputs) -> Tensor:
        """(B, T, G): the target quantizer's most probable entry per group (its eval-mode choice);
        with only the input quantized, the input quantizer's (the units the context network saw)."""
        feats = inputs.extract_features
        groups = self.settings.num_code_groups
        if self.settings.quantize_targets:
            logits = self._target_quantizer().logits(feats.flatten(0, 1))
            return logits.view(-1, groups, logits.shape[-1] // groups).argmax(-1).view(*feats.shape[:2], -1)
        if inputs.input_quantization is not None:
            return inputs.input_quantization.hard_codes.view(*feats.shape[:2], -1)
        raise ValueError(
            "this model has no codebook (contrastive.quantize_targets=false and quantize_input=false): "
            "its targets are continuous features, so there are no discrete units"
        )

    # ------------------------------------------------------------------- loss
    def _diversity_source(
        self, inputs: ObjectiveInputs, tg: ContrastiveTargets
    ) -> tuple[Tensor, Tensor] | None:
        """(soft probs (n, G, V), argmax codes (n, G)) of the quantizer whose perplexity feeds the
        diversity loss, as fairseq: the target quantizer's over masked frames when targets are
        quantized, else the input quantizer's over valid frames; None without a codebook."""
        if tg.soft_probs is not None and tg.hard_codes is not None:
            masked_rows = inputs.mask_indices[tg.needed]  # which quantized rows are masked frames
            return tg.soft_probs[masked_rows], tg.hard_codes[masked_rows]
        return self._input_source(inputs)

    @staticmethod
    def _input_source(inputs: ObjectiveInputs) -> tuple[Tensor, Tensor] | None:
        """The input quantizer's (soft probs, argmax codes) at the valid frames, or None."""
        iq = inputs.input_quantization
        if iq is None:
            return None
        if inputs.frame_padding is None:
            return iq.soft_probs, iq.hard_codes
        valid = ~inputs.frame_padding.flatten()
        return iq.soft_probs[valid], iq.hard_codes[valid]

    def predict(self, inputs: ObjectiveInputs, targets: ContrastiveTargets) -> ContrastiveOutput:
        """Score each masked frame's context vector against its candidates; sum the losses."""
        cfg, mask, tg = self.settings, inputs.mask_indices, targets
        b_m, t_m = mask.nonzero(as_tuple=True)  # (N,) each
        cand_ids = tg.target_ids[b_m[:, None], tg.candidates]  # (N, 1 + K, G')
        same_as_pos = (cand_ids == cand_ids[:, :1]).all(-1)
        same_as_pos[:, 0] = False
        cross_targets = None
        if tg.cross is not None:
            cross_idx = tg.cross[b_m, t_m]  # (N, Kc) flat b·T + t
            cross_targets = tg.flat[(tg.needed.flatten().cumsum(0) - 1)[cross_idx]]
            flat_ids = tg.target_ids.view(-1, tg.target_ids.shape[-1])
            same_cross = (flat_ids[cross_idx] == cand_ids[:, :1]).all(-1)
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

        # reported at any weight; at weight 0 (LARGE) kept out of the graph: no backward through it
        with torch.no_grad() if cfg.feature_penalty_weight == 0 else contextlib.nullcontext():
            penalty = feature_penalty(inputs.conv_features, inputs.frame_padding)
        n_masked = mask.sum()
        n = n_masked.to(contrastive_sum.dtype)
        losses = {"contrastive_loss": contrastive_sum}
        weights = {"contrastive_loss": 1.0}
        metrics: dict[str, Tensor] = {}
        extra = cfg.feature_penalty_weight * penalty if cfg.feature_penalty_weight else 0.0
        div = soft_ppl = None
        source = self._diversity_source(inputs, tg)
        if source is not None:
            div, soft_ppl = diversity_loss(source[0])
            losses["diversity_loss"], weights["diversity_loss"] = n * div, cfg.diversity_loss_weight
            metrics["code_perplexity"] = perplexity(one_hot(source[1], cfg.num_codes_per_group))
            metrics["prob_perplexity"] = soft_ppl
            extra = cfg.diversity_loss_weight * div + extra
        if cfg.quantize_targets and cfg.quantize_input:  # the input codebook's health, logged only
            probs, codes = self._input_source(inputs)
            metrics["input_code_perplexity"] = perplexity(one_hot(codes, cfg.num_codes_per_group)).detach()
            metrics["input_prob_perplexity"] = perplexity(probs).detach()
        losses["feature_penalty"], weights["feature_penalty"] = n * penalty, cfg.feature_penalty_weight
        loss_sum = contrastive_sum + n * extra
        return ContrastiveOutput(
            loss_sum=loss_sum,
            num_masked=n_masked,
            num_correct=num_correct,
            logits=logits,
            losses=losses,
            weights=weights,
            metrics=metrics,
            codes=tg.codes,
            contrastive_loss=contrastive_sum,
            diversity_loss=div,
            feature_penalty=penalty,
            prob_perplexity=soft_ppl,
            negative_indices=tg.negatives,
            cross_negative_indices=tg.cross,
        )
