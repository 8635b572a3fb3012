"""What differs between pretraining and CTC fine-tuning: model, data, loss and validation.

A task turns a batch into ``(loss_sum, stats)``: the loss *summed* over the batch's
sample-size units (masked frames, or sentences/characters for CTC) and a dict of
additive statistics (sums and counts, including ``sample_size``). The trainer adds
the stats over micro-batches and ranks and divides by the global ``sample_size``, as
fairseq does, so the update is the same however the global batch is split.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.dataset import AudioDataset
from wav2vec2_lite.train.health import count_impossible_ctc
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.objectives.registry import objective_class
from wav2vec2_lite.serialization import CheckpointError
from wav2vec2_lite.train.config import FinetuneRunConfig, PretrainRunConfig, build_model_config

if TYPE_CHECKING:
    from wav2vec2_lite.interop.sources import CheckpointSource

__all__ = ["PretrainTask", "FinetuneTask", "build_task", "resolve_pretrained"]

log = logging.getLogger(__name__)


def _manifest(cfg, subset: str) -> Path:
    d = cfg.data
    path = Path(d.manifest_dir) / f"{subset}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (data.manifest_dir={d.manifest_dir!r}, subset {subset!r})")
    return path


def _dataset(cfg, subset: str, *, train: bool, min_samples: int, indices: Sequence[int] | None,
             **kw: Any) -> AudioDataset:
    """Rows shorter than ``min_samples`` (the encoder's receptive field) are always dropped and
    counted, so no batch, even one cropped to its shortest utterance, gives zero frames;
    unreadable files become counted skips (``on_error="skip"``)."""
    d = cfg.data
    return AudioDataset(_manifest(cfg, subset), sample_rate=d.sample_rate, max_sample_size=d.max_sample_size,
                        min_sample_size=max(d.min_sample_size if train else 0, min_samples), normalize=d.normalize,
                        mono=d.mono, resample=d.resample, random_crop=train, seed=cfg.trainer.seed, indices=indices,
                        max_duration_s=d.max_duration_s, on_error="skip", **kw)


def _code_perplexity(counts: Tensor) -> float:
    """exp(entropy) of each group's code histogram (G, V), summed over groups."""
    probs = counts.float() / counts.sum(-1, keepdim=True).clamp(min=1)
    ent = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
    return float(ent.exp().sum())


class PretrainTask:
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

    def dataset(self, subset: str, train: bool, *, min_samples: int = 0,
                indices: Sequence[int] | None = None) -> AudioDataset:
        return _dataset(self.cfg, subset, train=train, min_samples=min_samples, indices=indices)

    def before_update(self, model: nn.Module, update: int) -> dict[str, float]:
        """The objective's per-update schedule (contrastive: the Gumbel temperature)."""
        return model.objective.before_update(update)

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(batch["waveform"], batch["padding_mask"], generator=generator)
        return out.loss_sum, self._stats(out)

    @staticmethod
    def _stats(out) -> dict[str, Tensor]:
        """Additive statistics: loss parts summed over masked frames, batch metrics summed over batches."""
        stats = {"sample_size": out.num_masked.float(), "loss_sum": out.loss_sum.detach().float(),
                 "num_correct": out.num_correct.float(), "batches": torch.ones(())}
        stats.update({f"part:{k}": v.detach().float() for k, v in out.losses.items()})
        stats.update({f"batch:{k}": v.detach().float() for k, v in out.metrics.items()})
        return stats

    @torch.no_grad()
    def eval_batch(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, Tensor]:
        """Held-out masks from ``generator``; adds the histogram (G, V) of the masked frames' codes
        (contrastive: the argmax codes in eval mode; best_rq: the target codes)."""
        out = model(batch["waveform"], batch["padding_mask"], generator=generator)
        stats = self._stats(out)
        codes = out.codes[out.mask_indices]  # (N, G)
        stats["code_hist"] = F.one_hot(codes, int(self.reference["codes_per_group"])).sum(0).float()
        return stats

    def summarize(self, s: dict[str, Any]) -> dict[str, float]:
        n, b = max(float(s["sample_size"]), 1.0), max(float(s["batches"]), 1.0)
        out = {"loss": s["loss_sum"] / n, "accuracy": s["num_correct"] / n}
        out.update({k[len("part:"):]: v / n for k, v in s.items() if k.startswith("part:")})
        out.update({k[len("batch:"):]: v / b for k, v in s.items() if k.startswith("batch:")})
        out = {k: float(v) for k, v in out.items()}
        ref = self.reference
        out.update(masked_frames=float(s["sample_size"]), target_loss=out.get(self.objective.main_loss, math.nan),
                   chance_loss=ref["chance_loss"], codebook_frozen=ref["codebook_frozen"],
                   code_perplexity_max=ref["code_groups"] * ref["codes_per_group"])
        if "code_hist" in s:  # over the whole validation set, not per batch
            out["code_perplexity_set"] = _code_perplexity(torch.as_tensor(s["code_hist"]))
        return out


class FinetuneTask:
    """CTC fine-tuning of :class:`Wav2Vec2ForCTC` with characters from ``dict.ltr.txt``."""

    name = "finetune"
    default_best_metric = "wer"
    crop_to_shortest = False

    def __init__(self, cfg: FinetuneRunConfig) -> None:
        from wav2vec2_lite.data.tokenizer import CharTokenizer

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
                raise ValueError("fine-tuning needs finetune.pretrained=RUN_DIR (a pretraining run or checkpoint "
                                 "folder) or, to train from scratch, model=tiny|base|large")
            self.model_config = build_model_config(cfg.model, **self.overrides)
        else:
            if cfg.model:
                raise ValueError("model=... and finetune.pretrained are exclusive: the architecture comes from the "
                                 "pretrained checkpoint; change fine-tuning settings with ctc.*")
            self.model_config = None

    def build_model(self) -> nn.Module:
        if self.pretrained is not None:
            from wav2vec2_lite.interop.sources import load_backbone

            loaded = load_backbone(self.pretrained.path, trust=self.cfg.finetune.trust_pickle)
            model = Wav2Vec2ForCTC.from_pretraining(loaded.model, **self.overrides)
            log.info("fine-tuning the backbone of %s with a new CTC head over the %d symbols of %s",
                     loaded.source, len(self.tokenizer), self.dict_path)
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
        return {"manifest_path": _manifest(self.cfg, subset), "labels_path": self._labels(subset),
                "tokenizer": self.tokenizer}

    def dataset(self, subset: str, train: bool, *, min_samples: int = 0,
                indices: Sequence[int] | None = None) -> AudioDataset:
        return _dataset(self.cfg, subset, train=train, min_samples=min_samples, indices=indices,
                        labels_path=self._labels(subset), tokenizer=self.tokenizer)

    def save_extras(self, directory: Path) -> None:
        """Each checkpoint carries its vocabulary so it can transcribe on its own."""
        shutil.copyfile(self.dict_path, Path(directory) / "dict.ltr.txt")

    def before_update(self, model: nn.Module, update: int) -> dict[str, float]:
        frozen = update < self.cfg.finetune.freeze_finetune_updates
        model.set_encoder_frozen(frozen)
        return {"encoder_frozen": float(frozen)}

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(batch["waveform"], batch["padding_mask"], batch["labels"], generator=generator)
        sentences = torch.tensor(float(batch["labels"].shape[0]))
        chars = batch["label_lengths"].sum().float()
        n = sentences if self.cfg.finetune.sentence_avg else chars
        stats = {"sample_size": n, "loss_sum": out.loss.detach().float(), "sentences": sentences, "chars": chars,
                 "frames": out.output_lengths.sum().float(),
                 "ctc_inf": torch.tensor(float(count_impossible_ctc(out.output_lengths, batch["labels"])))}
        return out.loss, stats

    @torch.no_grad()
    def eval_batch(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, Tensor]:
        """CTC loss and greedy-decoding WER/CER (+ blank-only outputs, output/reference length)."""
        from wav2vec2_lite.asr.decode import greedy_decode
        from wav2vec2_lite.asr.metrics import char_errors, word_errors

        out = model(batch["waveform"], batch["padding_mask"], batch["labels"], generator=generator)
        sentences = float(batch["labels"].shape[0])
        chars = batch["label_lengths"].sum().float()
        hyps = greedy_decode(out.logits.float(), out.output_lengths, self.tokenizer.vocab)
        refs = batch["texts"]
        w, c = word_errors(refs, hyps), char_errors(refs, hyps)
        return {"sample_size": torch.tensor(sentences) if self.cfg.finetune.sentence_avg else chars,
                "loss_sum": out.loss.detach().float(), "sentences": torch.tensor(sentences), "chars": chars,
                "wer_err": torch.tensor(float(w.errors)), "wer_ref": torch.tensor(float(w.ref_len)),
                "cer_err": torch.tensor(float(c.errors)), "cer_ref": torch.tensor(float(c.ref_len)),
                "blank_only": torch.tensor(float(sum(not h.strip() for h in hyps))),
                "hyp_chars": torch.tensor(float(sum(len(h) for h in hyps))),
                "ref_chars": torch.tensor(float(sum(len(r) for r in refs)))}

    @staticmethod
    def summarize(s: dict[str, Any]) -> dict[str, float]:
        f = {k: float(v) for k, v in s.items()}
        out = {"loss": f["loss_sum"] / max(f["sample_size"], 1.0),
               "loss_per_char": f["loss_sum"] / max(f["chars"], 1.0)}
        if "wer_ref" in f:
            out.update(wer=f["wer_err"] / max(f["wer_ref"], 1.0), cer=f["cer_err"] / max(f["cer_ref"], 1.0),
                       blank_only=f["blank_only"] / max(f["sentences"], 1.0),
                       output_length_ratio=f["hyp_chars"] / max(f["ref_chars"], 1.0))
        return out


def build_task(cfg) -> PretrainTask | FinetuneTask:
    return PretrainTask(cfg) if cfg.task == "pretrain" else FinetuneTask(cfg)


def resolve_pretrained(path: str | Path) -> "CheckpointSource":
    """What ``finetune.pretrained`` names, detected from its files: our run or model folder, a
    Hugging Face folder, a fairseq ``.pt`` or a shipped checkpoint's name (an existing path wins)."""
    from wav2vec2_lite.interop.sources import detect
    from wav2vec2_lite.pretrained import UnknownPretrainedError

    try:
        return detect(path)
    except UnknownPretrainedError as e:
        raise FileNotFoundError(f"finetune.pretrained={e}") from None
    except CheckpointError as e:
        raise CheckpointError(f"finetune.pretrained: {e}") from None
