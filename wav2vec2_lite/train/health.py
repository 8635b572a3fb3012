"""Training health: detect wav2vec 2.0's known failure modes while the run is going.

The reference implementations' issue trackers keep reporting the same few failures, each
found days late. :class:`HealthMonitor` watches the numbers the trainer already has and,
after a grace period, names the symptom with its numbers and the known remedies:

=========================  ===============================================================
symptom                    detected when (defaults in :class:`HealthConfig`)
=========================  ===============================================================
``stuck_at_chance``        the objective's loss per masked frame within 3 % of chance (nats)
                           while accuracy is below 2x chance
``low_accuracy``           accuracy below 1.25x chance
``codebook_collapse``      learned codebook: hard code perplexity of a group below 10 % of V
``few_target_codes``       frozen codebook (BEST-RQ): the validation targets' code perplexity
                           (over the whole set) below 1 % of V
``gradient_explosion``     gradient norm non-finite, or above 1e3 after the grace period
``vanishing_gradients``    gradient norm below 1e-7
``loss_scale_collapse``    fp16 loss scale below 1/128
``nonfinite_steps``        more than 5 % of recent steps skipped as non-finite
``ctc_infinite_loss``      infinite CTC losses (zeroed by zero_infinity) in a batch
``blank_only_outputs``     more than 90 % of validation transcripts empty
``short_outputs``          validation transcripts under 30 % of the reference length
=========================  ===============================================================

Chance depends on the objective, which the training task reports with each summary
(``target_loss``, ``chance_loss``, ``code_perplexity_max``, ``codebook_frozen``):
contrastive: ln(K+1) nats and accuracy 1/(K+1) among K distractors, a learned Gumbel
codebook of G x V codes; BEST-RQ: ln V nats and accuracy 1/V over a frozen codebook of V
codes, which cannot collapse — a low target perplexity there means the inputs (silence,
clipping, a broken normalisation) map to few codes. A model without a codebook (contrastive
with ``quantize_targets=false`` and ``quantize_input=false``: ``code_perplexity_max`` 0, no
``code_perplexity``) has no code rule; with only the input quantized, ``code_perplexity`` is
the input codebook's and ``codebook_collapse`` judges it. Without those keys the monitor
falls back to the contrastive numbers from its constructor (K, G, V; G = 0: no codebook).

Each symptom warns once, then again only if it persists ``repeat_every`` updates later.
Warnings go to :mod:`logging` and are returned as records for the run's metrics.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["HealthConfig", "HealthMonitor", "HealthWarning", "REMEDIES", "count_impossible_ctc"]

log = logging.getLogger("wav2vec2_lite.train.health")

REMEDIES: dict[str, str] = {
    "stuck_at_chance": "lower the learning rate or lengthen warmup (fairseq #3661/#3718); check the audio is "
    "16 kHz speech and normalised as the model expects; keep feature_grad_mult at 0.1",
    "low_accuracy": "as for a loss stuck at chance: lower lr, longer warmup; check masking (mask_time_prob) "
    "leaves unmasked context",
    "few_target_codes": "the frozen random-projection targets fall on few codes: check the audio (long "
    "silences, clipping, wrong sample rate) and that crops are long enough; a smaller "
    "model.best_rq.codebook_dim spreads the codes more evenly",
    "codebook_collapse": "raise model.contrastive.diversity_loss_weight, slow the Gumbel temperature decay "
    "(model.contrastive.gumbel_temperature), lower the learning rate (transformers #14471, "
    "#19588)",
    "gradient_explosion": "lower lr, enable gradient clipping (optim.clip_norm), use bf16 instead of fp16, "
    "longer warmup",
    "vanishing_gradients": "check the encoder is not frozen by mistake (freeze_finetune_updates, "
    "feature_grad_mult=0) and the lr schedule is not at zero",
    "loss_scale_collapse": "fp16 overflow (fairseq #1529/#2696): lower lr, clip gradients, or train in bf16",
    "nonfinite_steps": "lower lr, clip gradients, use bf16; look for bad audio (NaN/inf samples) in the data",
    "ctc_infinite_loss": "utterances shorter than their transcripts: keep ctc_zero_infinity=True, drop such "
    "utterances (validate the dataset) or use a smaller frame stride",
    "blank_only_outputs": "normal early in fine-tuning; if it persists: train only the CTC head for longer "
    "(finetune.freeze_finetune_updates) or give it a higher lr than the rest "
    "(+optim.lr_scale.lm_head=4), train longer, check labels "
    "(transformers #12956, #10884)",
    "short_outputs": "the model deletes most characters: train longer, check the tokenizer/dictionary, lower "
    "masking (mask_time_prob) during fine-tuning",
}


@dataclass(kw_only=True)
class HealthConfig:
    """Thresholds of the health monitor (all in the units the trainer logs)."""

    enabled: bool = True
    """Run the monitor (cheap: a few comparisons per logged update)."""
    grace_updates: int = 500
    """No warning before this many updates *after warmup*."""
    repeat_every: int = 2000
    """A persisting symptom is reported again after this many updates."""
    window: int = 20
    """Updates averaged before comparing against a threshold."""
    chance_margin: float = 0.03
    """stuck_at_chance: loss within this relative margin of ln(K+1)."""
    stuck_accuracy_factor: float = 2.0
    """stuck_at_chance also needs the accuracy (where logged) below this many times chance,
    1/(K+1): a run that picks the true target several times more often than chance is
    learning, however close its loss still is to ln(K+1) (docs/troubleshooting.md)."""
    accuracy_factor: float = 1.25
    """low_accuracy: accuracy below accuracy_factor / (K+1)."""
    collapse_fraction: float = 0.1
    """codebook_collapse: hard perplexity per group below this fraction of V."""
    few_codes_fraction: float = 0.01
    """few_target_codes: validation code perplexity below this fraction of V. Speech itself uses
    a small share of a frozen random codebook (docs/objectives.md), so this is set far lower."""
    grad_norm_max: float = 1e3
    """gradient_explosion threshold (a non-finite norm is flagged at once, a large one after the
    grace period)."""
    grad_norm_min: float = 1e-7
    """vanishing_gradients threshold."""
    min_loss_scale: float = 1.0 / 128
    """loss_scale_collapse threshold (fp16 only)."""
    nonfinite_fraction: float = 0.05
    """nonfinite_steps: fraction of skipped steps in the window."""
    blank_fraction: float = 0.9
    """blank_only_outputs: fraction of empty validation transcripts."""
    min_output_ratio: float = 0.3
    """short_outputs: hypothesis/reference character ratio on validation."""


@dataclass
class HealthWarning:
    symptom: str
    update: int
    message: str
    numbers: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """A flat record for ``metrics.jsonl`` (kind ``health``)."""
        return {"kind": "health", **asdict(self)}


class HealthMonitor:
    """Feed it the trainer's per-update and validation numbers; it returns new warnings.

    Args:
        config: thresholds.
        task: ``"pretrain"`` or ``"finetune"``.
        num_negatives: K (pretraining), for the chance level ln(K+1) when a summary carries no
            ``chance_loss`` (the training task's summaries always do, per objective).
        num_codes_per_group: V (pretraining), for the collapse threshold when a summary carries
            no ``code_perplexity_max``.
        num_code_groups: G (pretraining, learned codebook); 0 for a model without a codebook.
        warmup_updates: the grace period starts after warmup.
    """

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        task: str,
        num_negatives: int = 100,
        num_codes_per_group: int = 320,
        num_code_groups: int = 2,
        warmup_updates: int = 0,
    ) -> None:
        self.cfg = config or HealthConfig()
        self.task = task
        self.k = num_negatives
        self.v = num_codes_per_group
        self.g = num_code_groups
        self.start = warmup_updates + self.cfg.grace_updates
        self._recent: dict[str, deque[float]] = {}
        self._last_warned: dict[str, int] = {}
        self.history: list[HealthWarning] = []

    @property
    def chance_loss(self) -> float:
        """Contrastive: ln(K+1) nats per masked frame (fairseq logs it in bits: log2(K+1))."""
        return math.log(self.k + 1)

    def _mean(self, key: str, value: float | None) -> float | None:
        if value is None:
            return None
        q = self._recent.setdefault(key, deque(maxlen=self.cfg.window))
        q.append(float(value))
        return sum(q) / len(q) if len(q) == q.maxlen else None

    def _warn(self, symptom: str, update: int, what: str, numbers: dict[str, float]) -> HealthWarning | None:
        last = self._last_warned.get(symptom)
        if last is not None and update - last < self.cfg.repeat_every:
            return None
        self._last_warned[symptom] = update
        message = f"[health] {symptom} at update {update}: {what}. Known remedies: {REMEDIES[symptom]}"
        log.warning(message)
        w = HealthWarning(symptom, update, message, {k: float(v) for k, v in numbers.items()})
        self.history.append(w)
        return w

    def check_train(self, update: int, stats: dict[str, float]) -> list[HealthWarning]:
        """Per-update numbers: ``target_loss`` (the objective's main loss per masked frame, nats;
        else ``contrastive_loss``) with ``chance_loss``, ``code_perplexity_max`` and
        ``codebook_frozen`` (see the module docstring), ``accuracy``,
        ``code_perplexity`` (summed over groups), ``grad_norm``, ``loss_scale``, ``nonfinite``
        (1 if the step was skipped), ``ctc_inf`` (count of infinite CTC losses)."""
        if not self.cfg.enabled:
            return []
        out: list[HealthWarning | None] = []
        c = self.cfg
        skipped = self._mean("nonfinite", stats.get("nonfinite", 0.0))
        grad = stats.get("grad_norm")
        # immediate symptoms (no grace period: they are never normal) -- except a large finite
        # gradient norm, which is usual in the first updates of CTC (loss summed per sentence;
        # clipping handles it): that one is judged after the grace period
        if grad is not None and (
            not math.isfinite(grad) or (grad > c.grad_norm_max and update >= self.start)
        ):
            out.append(
                self._warn(
                    "gradient_explosion",
                    update,
                    f"gradient norm {grad:.3g} > {c.grad_norm_max:g}",
                    {"grad_norm": grad if math.isfinite(grad) else -1.0},
                )
            )
        scale = stats.get("loss_scale")
        if scale is not None and scale < c.min_loss_scale:
            out.append(
                self._warn(
                    "loss_scale_collapse",
                    update,
                    f"fp16 loss scale {scale:.3g} < {c.min_loss_scale:g}",
                    {"loss_scale": scale},
                )
            )
        if skipped is not None and skipped > c.nonfinite_fraction:
            out.append(
                self._warn(
                    "nonfinite_steps",
                    update,
                    f"{100 * skipped:.0f}% of the last {c.window} steps had non-finite loss or gradients",
                    {"nonfinite_fraction": skipped},
                )
            )
        if stats.get("ctc_inf", 0) > 0:
            out.append(
                self._warn(
                    "ctc_infinite_loss",
                    update,
                    f"{int(stats['ctc_inf'])} utterance(s) with infinite CTC loss (shorter than the label)",
                    {"ctc_inf": stats["ctc_inf"]},
                )
            )
        loss = self._mean("target_loss", stats.get("target_loss", stats.get("contrastive_loss")))
        acc = self._mean("accuracy", stats.get("accuracy"))
        ppl = self._mean("code_perplexity", stats.get("code_perplexity"))
        gmean = self._mean("grad_norm", grad if grad is not None and math.isfinite(grad) else None)
        if update < self.start:
            return [w for w in out if w]
        if gmean is not None and gmean < c.grad_norm_min:
            out.append(
                self._warn(
                    "vanishing_gradients",
                    update,
                    f"mean gradient norm {gmean:.3g} < {c.grad_norm_min:g}",
                    {"grad_norm": gmean},
                )
            )
        if self.task == "pretrain":
            out += self._pretrain_rules(update, stats, loss, acc, ppl)
        return [w for w in out if w]

    def _pretrain_rules(
        self, update: int, stats: dict[str, float], loss: float | None, acc: float | None, ppl: float | None
    ) -> list[HealthWarning | None]:
        """stuck_at_chance, low_accuracy and the codebook rule, with the objective's chance levels."""
        c, out = self.cfg, []
        chance = stats.get("chance_loss", self.chance_loss)
        chance_acc = math.exp(-chance)  # 1/(K+1) or 1/V: the uniform guess
        what = "contrastive" if "chance_loss" not in stats or "contrastive_loss" in stats else "target"
        learning = acc is not None and acc >= c.stuck_accuracy_factor * chance_acc
        if loss is not None and loss > chance * (1 - c.chance_margin) and not learning:
            out.append(
                self._warn(
                    "stuck_at_chance",
                    update,
                    f"{what} loss {loss:.3f} nats/frame vs chance {chance:.3f} "
                    f"({loss / math.log(2):.3f} vs {chance / math.log(2):.3f} bits, as fairseq logs it)",
                    {f"{what}_loss": loss, "chance": chance},
                )
            )
        if acc is not None and acc < c.accuracy_factor * chance_acc:
            out.append(
                self._warn(
                    "low_accuracy",
                    update,
                    f"{what} accuracy {acc:.4f} < {c.accuracy_factor:g} x chance = "
                    f"{c.accuracy_factor * chance_acc:.4f}",
                    {"accuracy": acc},
                )
            )
        most = stats.get("code_perplexity_max", float(self.g * self.v))
        # a frozen codebook is judged on the validation set; a model without one has no code rule
        if stats.get("codebook_frozen", 0.0) == 0 and self.g > 0 and most > 0:
            if ppl is not None and ppl / self.g < c.collapse_fraction * most / self.g:
                out.append(
                    self._warn(
                        "codebook_collapse",
                        update,
                        f"code perplexity {ppl:.1f} over {self.g} groups = {ppl / self.g:.1f} per "
                        f"group, < {c.collapse_fraction:g}·V = {c.collapse_fraction * most / self.g:.1f}",
                        {"code_perplexity": ppl, "codes_per_group": most / self.g},
                    )
                )
        return out

    def check_valid(self, update: int, stats: dict[str, float]) -> list[HealthWarning]:
        """Validation numbers: ``blank_only`` (fraction of empty transcripts), ``output_length_ratio``
        (hypothesis / reference characters); pretraining with a frozen codebook:
        ``code_perplexity_set``, ``code_perplexity_max``, ``codebook_frozen``."""
        if not self.cfg.enabled or update < self.start:
            return []
        out: list[HealthWarning | None] = []
        c = self.cfg
        blank = stats.get("blank_only")
        if blank is not None and blank > c.blank_fraction:
            out.append(
                self._warn(
                    "blank_only_outputs",
                    update,
                    f"{100 * blank:.0f}% of validation transcripts are empty (the blank-only plateau)",
                    {"blank_only": blank},
                )
            )
        used, most = stats.get("code_perplexity_set"), stats.get("code_perplexity_max")
        if (
            stats.get("codebook_frozen", 0.0) > 0
            and used is not None
            and most
            and used < c.few_codes_fraction * most
        ):
            out.append(
                self._warn(
                    "few_target_codes",
                    update,
                    f"the validation targets' code perplexity is {used:.1f} of {most:.0f} codes, "
                    f"< {c.few_codes_fraction:g}·V = {c.few_codes_fraction * most:.1f}",
                    {"code_perplexity_set": used, "codes": most},
                )
            )
        ratio = stats.get("output_length_ratio")
        if ratio is not None and (blank is None or blank <= c.blank_fraction) and ratio < c.min_output_ratio:
            out.append(
                self._warn(
                    "short_outputs",
                    update,
                    f"transcripts are {100 * ratio:.0f}% of the reference length",
                    {"output_length_ratio": ratio},
                )
            )
        return [w for w in out if w]


def count_impossible_ctc(output_lengths: Tensor, labels: Tensor) -> int:
    """Utterances whose CTC loss is infinite: fewer frames than labels plus the blanks that
    must separate repeated labels. output_lengths (B,); labels (B, L) padded with negatives."""
    valid = labels >= 0
    lengths = valid.sum(-1)
    repeats = ((labels[:, 1:] == labels[:, :-1]) & valid[:, 1:]).sum(-1)
    return int((output_lengths.to(lengths.device) < lengths + repeats).sum().item())
