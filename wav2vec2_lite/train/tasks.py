"""What differs between pretraining and CTC fine-tuning: model, data, loss and validation.

Both follow the trainer's contract :class:`~wav2vec2_lite.train.task.Task`. A task turns a
batch into ``(loss_sum, sums)``: the loss *summed* over the batch's sample-size units (masked
frames, or sentences/characters for CTC) and a :class:`~wav2vec2_lite.train.stats.Sums`
record of that batch (:class:`PretrainSums`, :class:`CtcTrainSums`, :class:`CtcEvalSums`). The
trainer adds the records over micro-batches and ranks and divides the gradients by the global
``sample_size``, as fairseq does, so the update is the same however the global batch is split.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wav2vec2_lite.asr.decode import greedy_decode
from wav2vec2_lite.asr.metrics import char_errors, word_errors
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.dataset import AudioDataset
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.interop.sources import CheckpointSource, detect, load_backbone
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.modules.input_quantizer import QuantizedFeatureProjection
from wav2vec2_lite.modules.quantizer import gumbel_temperature
from wav2vec2_lite.objectives.registry import objective_class
from wav2vec2_lite.pretrained import UnknownPretrainedError
from wav2vec2_lite.serialization import CheckpointError
from wav2vec2_lite.train.config import FinetuneRunConfig, PretrainRunConfig, build_model_config
from wav2vec2_lite.train.health import HealthConfig, HealthMonitor, count_impossible_ctc
from wav2vec2_lite.train.stats import Number, Sums
from wav2vec2_lite.train.task import Task

__all__ = [
    "PretrainTask",
    "FinetuneTask",
    "PretrainSums",
    "CtcSums",
    "CtcTrainSums",
    "CtcEvalSums",
    "build_task",
    "resolve_pretrained",
]

log = logging.getLogger(__name__)


def _manifest(cfg, subset: str) -> Path:
    d = cfg.data
    path = Path(d.manifest_dir) / f"{subset}.tsv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: manifest not found (data.manifest_dir={d.manifest_dir!r}, subset {subset!r})"
        )
    return path


def _dataset(
    cfg, subset: str, *, train: bool, min_samples: int, indices: Sequence[int] | None, **kw: Any
) -> AudioDataset:
    """Rows shorter than ``min_samples`` (the encoder's receptive field) are always dropped and
    counted, so no batch, even one cropped to its shortest utterance, gives zero frames;
    unreadable files become counted skips (``on_error="skip"``)."""
    d = cfg.data
    return AudioDataset(
        _manifest(cfg, subset),
        sample_rate=d.sample_rate,
        max_sample_size=d.max_sample_size,
        min_sample_size=max(d.min_sample_size if train else 0, min_samples),
        normalize=d.normalize,
        mono=d.mono,
        resample=d.resample,
        random_crop=train,
        seed=cfg.trainer.seed,
        indices=indices,
        max_duration_s=d.max_duration_s,
        on_error="skip",
        **kw,
    )


def _ratio(total: Number, count: Number) -> float:
    """``total`` per unit of ``count`` (at least 1, so an empty count gives the total)."""
    return float(total) / max(float(count), 1.0)


def _code_perplexity(counts: Tensor) -> float:
    """exp(entropy) of each group's code histogram (G, V), summed over groups."""
    probs = counts.float() / counts.sum(-1, keepdim=True).clamp(min=1)
    ent = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
    return float(ent.exp().sum())


@dataclass
class PretrainSums(Sums):
    """A pretraining batch: ``sample_size`` counts its masked frames."""

    num_correct: Number
    """Masked frames whose target the model picked."""
    batches: Number
    """Micro-batches summed: ``metrics`` are averaged over them."""
    losses: dict[str, Number]
    """Each part of the objective's loss (its own name) summed over masked frames."""
    metrics: dict[str, Number]
    """Per-batch metrics (``code_perplexity``, ...), one value per batch summed."""
    code_hist: Tensor | None = None
    """Validation only: the masked frames' codes counted, (G, V)."""


@dataclass
class CtcSums(Sums):
    """A CTC batch: ``sample_size`` counts its sentences (``finetune.sentence_avg``) or characters."""

    sentences: Number
    chars: Number
    """Reference characters (label symbols)."""


@dataclass
class CtcTrainSums(CtcSums):
    """A CTC training batch."""

    ctc_inf: Number
    """Utterances with an infinite CTC loss (shorter than their labels), zeroed by ``ctc_zero_infinity``."""

    def health_numbers(self) -> dict[str, float]:
        return {"ctc_inf": float(self.ctc_inf)}


@dataclass
class CtcEvalSums(CtcSums):
    """A CTC validation batch with its greedy transcripts' error counts."""

    wer_err: Number
    wer_ref: Number
    cer_err: Number
    cer_ref: Number
    blank_only: Number
    """Empty transcripts."""
    hyp_chars: Number
    ref_chars: Number


class PretrainTask(Task):
    """Self-supervised pretraining of :class:`Wav2Vec2ForPreTraining` with the objective its
    config names (``model.objective``: ``contrastive`` or ``best_rq``).

    Logged per objective: ``loss``, ``accuracy``, each loss part per masked frame under its
    own name (``contrastive_loss``, ``diversity_loss``, ``feature_penalty``;
    ``cross_entropy_loss``), the batch metrics (``code_perplexity``, ``prob_perplexity``),
    ``target_loss`` (the main part) with its ``chance_loss``, and what the health monitor
    needs to judge the codes (``code_perplexity_max``, ``codebook_frozen``).
    """

    name = "pretrain"
    default_best_metric = "loss"
    crop_to_shortest: bool

    def __init__(self, cfg: PretrainRunConfig) -> None:
        self.cfg = cfg
        self.model_config: Wav2Vec2Config = build_model_config(cfg.model)
        self.crop_to_shortest = cfg.data.crop_to_shortest
        self.objective = objective_class(self.model_config.objective)
        self.reference = self.objective.health_reference(self.model_config)

    def build_model(self) -> nn.Module:
        return Wav2Vec2ForPreTraining(self.model_config)

    def data_files(self, subset: str) -> dict[str, Any]:
        """What ``validate_dataset`` checks for ``subset``: the manifest (no labels)."""
        return {"manifest_path": _manifest(self.cfg, subset)}

    def dataset(
        self, subset: str, train: bool, *, min_samples: int = 0, indices: Sequence[int] | None = None
    ) -> AudioDataset:
        return _dataset(self.cfg, subset, train=train, min_samples=min_samples, indices=indices)

    def health_monitor(self, config: HealthConfig, *, warmup_updates: int) -> HealthMonitor:
        """The pretraining rules on the objective's codebook (each summary carries the chance levels)."""
        ref = self.reference
        return HealthMonitor(
            config,
            task=self.name,
            num_codes_per_group=int(ref["codes_per_group"]),
            num_code_groups=int(ref["code_groups"]),
            warmup_updates=warmup_updates,
        )

    def frozen_encoder(self, update: int) -> bool:
        """Never: pretraining trains every parameter."""
        return False

    def before_update(self, model: nn.Module, update: int) -> dict[str, float]:
        """The objective's per-update schedule (contrastive: the Gumbel temperature)."""
        return model.objective.before_update(update)

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[Tensor, PretrainSums]:
        out = model(batch["waveform"], batch["padding_mask"], generator=generator)
        return out.loss_sum, self._sums(out)

    @staticmethod
    def _sums(out) -> PretrainSums:
        detached = lambda parts: {k: v.detach().float() for k, v in parts.items()}  # noqa: E731
        return PretrainSums(
            sample_size=out.num_masked.float(),
            loss_sum=out.loss_sum.detach().float(),
            num_correct=out.num_correct.float(),
            batches=torch.ones(()),
            losses=detached(out.losses),
            metrics=detached(out.metrics),
        )

    @torch.no_grad()
    def eval_batch(self, model: nn.Module, batch: dict, generator: torch.Generator) -> PretrainSums:
        """Held-out masks from ``generator``; adds the histogram (G, V) of the masked frames' codes
        (contrastive: the argmax codes in eval mode; best_rq: the target codes)."""
        out = model(batch["waveform"], batch["padding_mask"], generator=generator)
        codes = out.codes[out.mask_indices]  # (N, G)
        hist = F.one_hot(codes, int(self.reference["codes_per_group"])).sum(0).float()
        return dataclasses.replace(self._sums(out), code_hist=hist)

    def summarize(self, s: PretrainSums) -> dict[str, float]:
        """Per masked frame: the loss, its parts, the accuracy; per batch: the metrics; and the
        objective's chance levels, which the health monitor judges against."""
        n, b = max(float(s.sample_size), 1.0), max(float(s.batches), 1.0)
        out = {"loss": s.loss_sum / n, "accuracy": s.num_correct / n}
        out.update({k: v / n for k, v in s.losses.items()})
        out.update({k: v / b for k, v in s.metrics.items()})
        out = {k: float(v) for k, v in out.items()}
        ref = self.reference
        out.update(
            masked_frames=float(s.sample_size),
            target_loss=out.get(self.objective.main_loss, math.nan),
            chance_loss=ref["chance_loss"],
            codebook_frozen=ref["codebook_frozen"],
            code_perplexity_max=ref["code_groups"] * ref["codes_per_group"],
        )
        if s.code_hist is not None:  # over the whole validation set, not per batch
            out["code_perplexity_set"] = _code_perplexity(torch.as_tensor(s.code_hist))
        return out

    def save_extras(self, directory: Path) -> None:
        """Nothing: a pretraining checkpoint is its weights and config."""


class FinetuneTask(Task):
    """CTC fine-tuning of :class:`Wav2Vec2ForCTC` with characters from ``dict.ltr.txt``."""

    name = "finetune"
    default_best_metric = "wer"
    crop_to_shortest = False

    def __init__(self, cfg: FinetuneRunConfig) -> None:
        self.cfg = cfg
        self.dict_path = Path(cfg.data.manifest_dir) / f"dict.{cfg.data.labels}.txt"
        if not self.dict_path.is_file():
            self.dict_path = Path(cfg.data.manifest_dir) / "dict.ltr.txt"
        self.tokenizer = CharTokenizer.from_dictionary(self.dict_path, unk=str(cfg.data.unk))  # data.unk
        ctc = {k: getattr(cfg.ctc, k) for k in cfg.ctc.__dataclass_fields__}
        self.overrides = {**ctc, "vocab_size": len(self.tokenizer), "ctc_loss_reduction": "sum"}
        self.pretrained = resolve_pretrained(cfg.finetune.pretrained) if cfg.finetune.pretrained else None
        if self.pretrained is None:
            if not cfg.model:
                raise ValueError(
                    "fine-tuning needs finetune.pretrained=RUN_DIR (a pretraining run or checkpoint "
                    "folder) or, to train from scratch, model=tiny|base|large"
                )
            self.model_config = build_model_config(cfg.model, **self.overrides)
        else:
            if cfg.model:
                raise ValueError(
                    "model=... and finetune.pretrained are exclusive: the architecture comes from the "
                    "pretrained checkpoint; change fine-tuning settings with ctc.*"
                )
            self.model_config = None

    def build_model(self) -> nn.Module:
        if self.pretrained is not None:
            loaded = load_backbone(self.pretrained.path, trust=self.cfg.finetune.trust_pickle)
            model = Wav2Vec2ForCTC.from_pretraining(loaded.model, **self.overrides)
            log.info(
                "fine-tuning the backbone of %s with a new CTC head over the %d symbols of %s",
                loaded.source,
                len(self.tokenizer),
                self.dict_path,
            )
            self.model_config = model.config
        else:
            model = Wav2Vec2ForCTC(self.model_config)
        if self.cfg.finetune.freeze_feature_encoder:
            model.freeze_feature_encoder()
        return model

    def _labels(self, subset: str) -> Path:
        return Path(self.cfg.data.manifest_dir) / f"{subset}.{self.cfg.data.labels}"

    def data_files(self, subset: str) -> dict[str, Any]:
        """What ``validate_dataset`` checks for ``subset``: manifest, labels and tokenizer."""
        return {
            "manifest_path": _manifest(self.cfg, subset),
            "labels_path": self._labels(subset),
            "tokenizer": self.tokenizer,
        }

    def dataset(
        self, subset: str, train: bool, *, min_samples: int = 0, indices: Sequence[int] | None = None
    ) -> AudioDataset:
        return _dataset(
            self.cfg,
            subset,
            train=train,
            min_samples=min_samples,
            indices=indices,
            labels_path=self._labels(subset),
            tokenizer=self.tokenizer,
        )

    def save_extras(self, directory: Path) -> None:
        """Each checkpoint carries its vocabulary so it can transcribe on its own."""
        shutil.copyfile(self.dict_path, Path(directory) / "dict.ltr.txt")

    def health_monitor(self, config: HealthConfig, *, warmup_updates: int) -> HealthMonitor:
        """The rules of every task and CTC's (infinite losses, blank or short transcripts)."""
        return HealthMonitor(config, task=self.name, warmup_updates=warmup_updates)

    def frozen_encoder(self, update: int) -> bool:
        """The first ``finetune.freeze_finetune_updates`` updates train only the CTC head."""
        return update < self.cfg.finetune.freeze_finetune_updates

    def before_update(self, model: nn.Module, update: int) -> dict[str, float]:
        frozen = self.frozen_encoder(update)
        model.set_encoder_frozen(frozen)
        state = {"encoder_frozen": float(frozen)}
        projection = model.wav2vec2.feature_projection
        if isinstance(projection, QuantizedFeatureProjection):
            # a quantized input anneals again from the fine-tuning update count, as fairseq's
            # set_num_updates does for every quantizer of the fine-tuned model
            temp = gumbel_temperature(update, *model.config.contrastive.gumbel_temperature)
            projection.quantizer.temperature = temp
            state["input_gumbel_temp"] = temp
        return state

    def _counts(self, batch: dict, loss: Tensor) -> dict[str, Tensor]:
        """The fields every CTC record has: the loss and what it is summed over."""
        sentences = torch.tensor(float(batch["labels"].shape[0]))
        chars = batch["label_lengths"].sum().float()
        return {
            "sample_size": sentences if self.cfg.finetune.sentence_avg else chars,
            "loss_sum": loss.detach().float(),
            "sentences": sentences,
            "chars": chars,
        }

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[Tensor, CtcTrainSums]:
        out = model(batch["waveform"], batch["padding_mask"], batch["labels"], generator=generator)
        impossible = count_impossible_ctc(out.output_lengths, batch["labels"])
        return out.loss, CtcTrainSums(
            **self._counts(batch, out.loss), ctc_inf=torch.tensor(float(impossible))
        )

    @torch.no_grad()
    def eval_batch(self, model: nn.Module, batch: dict, generator: torch.Generator) -> CtcEvalSums:
        """CTC loss and greedy-decoding WER/CER (+ blank-only outputs, output/reference length)."""
        out = model(batch["waveform"], batch["padding_mask"], batch["labels"], generator=generator)
        hyps = greedy_decode(out.logits.float(), out.output_lengths, self.tokenizer.vocab)
        refs = batch["texts"]
        w, c = word_errors(refs, hyps), char_errors(refs, hyps)
        count = lambda n: torch.tensor(float(n))  # noqa: E731
        return CtcEvalSums(
            **self._counts(batch, out.loss),
            wer_err=count(w.errors),
            wer_ref=count(w.ref_len),
            cer_err=count(c.errors),
            cer_ref=count(c.ref_len),
            blank_only=count(sum(not h.strip() for h in hyps)),
            hyp_chars=count(sum(len(h) for h in hyps)),
            ref_chars=count(sum(len(r) for r in refs)),
        )

    @staticmethod
    def summarize(s: CtcSums) -> dict[str, float]:
        """The loss per ``sample_size`` unit and per character; on validation, WER, CER, the
        share of empty transcripts and the transcripts' length against the references'."""
        out = {"loss": _ratio(s.loss_sum, s.sample_size), "loss_per_char": _ratio(s.loss_sum, s.chars)}
        if isinstance(s, CtcEvalSums):
            out.update(
                wer=_ratio(s.wer_err, s.wer_ref),
                cer=_ratio(s.cer_err, s.cer_ref),
                blank_only=_ratio(s.blank_only, s.sentences),
                output_length_ratio=_ratio(s.hyp_chars, s.ref_chars),
            )
        return out


def build_task(cfg) -> Task:
    return PretrainTask(cfg) if cfg.task == "pretrain" else FinetuneTask(cfg)


def resolve_pretrained(path: str | Path) -> CheckpointSource:
    """What ``finetune.pretrained`` names, detected from its files: our run or model folder, a
    Hugging Face folder, a fairseq ``.pt`` or a shipped checkpoint's name (an existing path wins)."""
    try:
        return detect(path)
    except UnknownPretrainedError as e:
        raise FileNotFoundError(f"finetune.pretrained={e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"finetune.pretrained: {e}") from None
