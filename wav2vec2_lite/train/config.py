"""Typed run configs for pretraining and fine-tuning (Hydra structured-config schemas).

Each part of a run is one dataclass; Hydra composes them from ``configs/`` groups and the
command line, and :func:`to_run_config` turns the composed ``DictConfig`` into these
typed objects (unknown keys and wrong types are errors that name the key). The model
part stays a plain mapping of :class:`~wav2vec2_lite.config.Wav2Vec2Config` fields,
validated by that class (``configs/model/*.yaml`` list every field, so any of them can be
overridden as ``model.FIELD=VALUE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.train.health import HealthConfig

__all__ = [
    "OptimConfig", "ScheduleConfig", "DataConfig", "TrainerConfig", "CTCConfig", "FinetuneConfig",
    "PretrainRunConfig", "FinetuneRunConfig", "to_run_config", "register_configs", "build_model_config",
    "validation_mode", "flatten_lr_scale",
]


@dataclass
class OptimConfig:
    """AdamW (fairseq ``adam`` = decoupled weight decay)."""

    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.01
    decay_bias_and_norm: bool = False
    """False: biases, norm weights and other 1-D parameters get no weight decay (the usual
    practice); True: decay every parameter as fairseq does."""
    clip_norm: float = 0.0
    """Clip the global gradient norm to this value; 0 = off (fairseq's default)."""
    lr_scale: dict[str, Any] = field(default_factory=dict)
    """Per-part learning rates: ``{parameter-name prefix: multiple of optim.lr}``, e.g.
    ``{lm_head: 4.0, wav2vec2.context: 0.5}``; on the command line
    ``+optim.lr_scale.lm_head=4`` (nested keys are joined with dots). A parameter takes the
    scale of its longest matching prefix (1.0 if none matches) and the schedule moves every
    part alike. Empty = one lr for every part, as fairseq and transformers do."""


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, see :mod:`wav2vec2_lite.train.schedules`."""

    name: str = "polynomial"  # polynomial | tri_stage | constant
    warmup_updates: int = 32000
    total_updates: Optional[int] = None
    """Updates the schedule spans; None = trainer.max_updates."""
    end_lr: float = 0.0
    power: float = 1.0
    phase_ratio: list[float] = field(default_factory=lambda: [0.1, 0.4, 0.5])
    init_lr_scale: float = 0.01
    final_lr_scale: float = 0.05


@dataclass
class DataConfig:
    """fairseq-style manifests: ``{manifest_dir}/{subset}.tsv`` (+ ``.ltr``, ``dict.ltr.txt``)."""

    manifest_dir: str = MISSING
    train_subset: str = "train"
    valid_subset: Optional[str] = "valid"
    labels: str = "ltr"
    """Label extension for fine-tuning (``ltr`` or ``wrd``)."""
    sample_rate: int = 16000
    resample: str = "error"  # error | soxr
    mono: str = "error"  # error | mix
    normalize: bool = False
    """Zero-mean unit-variance per utterance (fairseq ``normalize``; LARGE / layer-norm models)."""
    max_sample_size: Optional[int] = 250000
    min_sample_size: int = 32000
    max_tokens: int = 1400000
    """Samples per batch per GPU (padded size ``max_len * batch``)."""
    max_tokens_valid: Optional[int] = None
    max_batch_size: Optional[int] = None
    crop_to_shortest: bool = True
    """Pretraining: crop every batch to its shortest utterance (fairseq ``pad=False``: no
    padding); fine-tuning always pads."""
    num_buckets: int = 0
    num_workers: int = 0
    too_long: str = "error"  # error | skip
    validate: str = "header"
    """Check every row of the train and valid manifests (and labels) before training:
    ``header`` reads file headers and decodes only float files (NaN/inf), ``full`` decodes
    every file, ``false`` skips the pass. Problems stop the run before any update with one
    error listing every bad row (``manifest:line: file: reason``), unless ``skip_invalid``."""
    skip_invalid: bool = False
    """Drop the rows the validation pass rejects (counted, logged, an ``event`` record in
    metrics.jsonl) and train on the rest."""
    max_duration_s: Optional[float] = 600.0
    """Longer files are invalid (validation) or dropped and counted (``validate=false``);
    null = no limit. A whole file is read to crop it, so hour-long files make training crawl."""
    max_unreadable_fraction: float = 0.1
    """Files that become unreadable during the run are skipped, counted and logged; when more
    than this fraction of the training set has been skipped the run stops (storage gone?)."""


@dataclass
class TrainerConfig:
    max_updates: int = 400000
    max_epochs: Optional[int] = None
    update_freq: int = 1
    """Gradient accumulation: micro-batches per update (per process)."""
    precision: str = "32"  # 32 | bf16 | fp16
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    seed: int = 1
    num_threads: Optional[int] = None
    log_interval: int = 200
    valid_interval: int = 0
    """Validate every N updates (0: only at the end)."""
    valid_after_updates: int = 0
    max_valid_batches: Optional[int] = None
    save_interval: int = 25000
    """Write ``checkpoints/last`` every N updates (and at the end)."""
    best_metric: Optional[str] = None
    """Validation metric for ``checkpoints/best`` (default: ``loss`` pretraining, ``wer`` fine-tuning)."""
    best_mode: str = "min"
    resume: bool = True
    """Continue from ``RUN/checkpoints/last`` when it exists."""
    max_consecutive_nonfinite: int = 10
    """Stop after this many skipped (non-finite loss or gradient) updates in a row."""
    compile: bool = False
    gradient_checkpointing: bool = False
    tensorboard: bool = False
    progress: bool = True
    dist_backend: str = "auto"  # auto (nccl on cuda, gloo on cpu) | gloo | nccl
    find_unused_parameters: Optional[bool] = None
    """DDP: None = on when layerdrop > 0 or the encoder is frozen for some updates."""


@dataclass
class CTCConfig:
    """Fine-tuning settings applied on top of the pretrained model's config (fairseq ``wav2vec_ctc``)."""

    mask_time_prob: float = 0.5
    mask_time_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_length: int = 10
    layerdrop: float = 0.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    dropout_input: float = 0.0
    final_dropout: float = 0.0
    feature_grad_mult: float = 0.0
    ctc_zero_infinity: bool = True


@dataclass
class FinetuneConfig:
    pretrained: Optional[str] = None
    """Run directory or checkpoint folder of a pretraining run (None: train from scratch
    with the ``model`` group)."""
    freeze_finetune_updates: int = 0
    """Train only the CTC head for this many updates."""
    freeze_feature_encoder: bool = True
    sentence_avg: bool = True
    """Normalise the summed CTC loss by sentences (fairseq ``sentence_avg``), else by characters."""


@dataclass
class PretrainRunConfig:
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    run_dir: Optional[str] = None
    """Where outputs go; None = Hydra's output directory (or the working directory)."""
    task: str = "pretrain"


@dataclass
class FinetuneRunConfig:
    model: Optional[dict] = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="tri_stage"))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ctc: CTCConfig = field(default_factory=CTCConfig)
    run_dir: Optional[str] = None
    task: str = "finetune"


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (``pretrain_schema``, ``finetune_schema``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainRunConfig)
    cs.store(name="finetune_schema", node=FinetuneRunConfig)


def flatten_lr_scale(lr_scale: dict, prefix: str = "") -> dict[str, Any]:
    """``{"wav2vec2": {"context": 0.5}}`` → ``{"wav2vec2.context": 0.5}`` (Hydra nests dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in lr_scale.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_lr_scale(value, name))
        else:
            flat[name] = value
    return flat


def to_run_config(cfg: DictConfig | dict, kind: str | None = None) -> PretrainRunConfig | FinetuneRunConfig:
    """Validate a composed config against its schema and return the typed object."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    kind = kind or cfg.get("task", "pretrain")
    schema = {"pretrain": PretrainRunConfig, "finetune": FinetuneRunConfig}.get(kind)
    if schema is None:
        raise ValueError(f"task: expected 'pretrain' or 'finetune', got {kind!r}")
    merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    obj = OmegaConf.to_object(merged)
    _check(obj)
    return obj


def _check(cfg: Any) -> None:
    from wav2vec2_lite.train.precision import parse_precision

    t = cfg.trainer
    parse_precision(t.precision)
    for key in ("max_updates", "update_freq", "log_interval", "save_interval", "max_consecutive_nonfinite"):
        if getattr(t, key) <= 0:
            raise ValueError(f"trainer.{key}: must be > 0 (got {getattr(t, key)})")
    if t.best_mode not in ("min", "max"):
        raise ValueError(f"trainer.best_mode: 'min' or 'max' (got {t.best_mode!r})")
    o = cfg.optim
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ValueError(f"optim.betas: two values in [0, 1) (got {o.betas})")
    if o.eps <= 0 or o.weight_decay < 0 or o.clip_norm < 0:
        raise ValueError("optim.eps must be > 0, optim.weight_decay and optim.clip_norm >= 0")
    for prefix, scale in flatten_lr_scale(o.lr_scale).items():
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"optim.lr_scale.{prefix}: a number > 0 (got {scale!r})")
    if cfg.data.resample not in ("error", "soxr"):
        raise ValueError(f"data.resample: 'error' or 'soxr' (got {cfg.data.resample!r})")
    if cfg.data.mono not in ("error", "mix"):
        raise ValueError(f"data.mono: 'error' or 'mix' (got {cfg.data.mono!r})")
    cfg.data.validate = validation_mode(cfg.data.validate)
    if cfg.data.max_duration_s is not None and cfg.data.max_duration_s <= 0:
        raise ValueError(f"data.max_duration_s: > 0 or null (got {cfg.data.max_duration_s})")
    if not 0.0 <= cfg.data.max_unreadable_fraction <= 1.0:
        raise ValueError(f"data.max_unreadable_fraction: in [0, 1] (got {cfg.data.max_unreadable_fraction})")


def validation_mode(value: Any) -> str:
    """``data.validate`` as ``"header"``, ``"full"`` or ``"false"`` (YAML booleans accepted: true = header)."""
    v = str(value).strip().lower()
    v = {"true": "header", "on": "header", "yes": "header", "off": "false", "no": "false", "none": "false"}.get(v, v)
    if v not in ("header", "full", "false"):
        raise ValueError(f"data.validate: 'header', 'full' or false (got {value!r})")
    return v


def build_model_config(model: dict | None, **overrides: Any) -> Wav2Vec2Config:
    """A :class:`Wav2Vec2Config` from the ``model`` node (``preset`` key + field values)."""
    if not model:
        raise ValueError("no model config: choose one with model=tiny|base|large")
    fields = {k: v for k, v in dict(model).items() if k != "preset"}
    preset = model.get("preset", "base")
    return Wav2Vec2Config.preset(preset, **{**fields, **overrides})
