"""Typed run configs for pretraining and fine-tuning (Hydra structured-config schemas).

Each part of a run is one dataclass whose ``check()`` validates its own fields (errors name
the key and the valid values; choices are enums, which OmegaConf also checks on every
override). Hydra composes the parts from ``configs/`` groups and the command line, and
:func:`to_run_config` turns the composed ``DictConfig`` into these typed objects (unknown
keys and wrong types are errors that name the key). Every value has one home:

* ``model``     :data:`ModelConfig`: a preset name and the :class:`~wav2vec2_lite.config.Wav2Vec2Config`
  fields that differ from it, every field optional (None: the preset's value), each objective's
  settings a nested node (``model.contrastive.num_negatives=50``); validated by Wav2Vec2Config.
  ``configs/model/*.yaml`` name a preset and only what differs.
* ``ctc``       fine-tuning values of model fields, applied on top of the pretrained model's
  config (or the ``model`` group's); its fields and types are Wav2Vec2Config's.
* ``schedule``  one of the registered schedules (:mod:`wav2vec2_lite.train.schedules`), chosen
  by ``schedule.name``; each declares its own fields.
* ``data``      :class:`~wav2vec2_lite.data.config.DataConfig`, with the data pipeline.

Unknown keys are errors in every group, one line naming the closest valid key
(:func:`unknown_key_error`): Hydra checks ``key=value`` against the schema, and ``+key=value``
(which Hydra adds without looking) is refused when the composed config is merged into the strict
schema in :func:`to_run_config`; ``schedule`` (a union OmegaConf cannot type) is checked against the
schedules' fields here and against the chosen one by ``make_schedule``. The free-form maps stay
free: ``optim.lr_scale.*`` (parameter prefixes) and ``model.extra``. A model key that moved into an
objective's sub-config is named with its new place (``model.num_negatives`` ->
``model.contrastive.num_negatives``).
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, make_dataclass
from enum import StrEnum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config
from wav2vec2_lite.data.config import DataConfig
from wav2vec2_lite.objectives.configs import OBJECTIVE_CONFIGS, migrate_override, moved_key
from wav2vec2_lite.train.health import HealthConfig
from wav2vec2_lite.train.precision import parse_precision
from wav2vec2_lite.train.schedules import SCHEDULES, make_schedule

__all__ = [
    "OptimConfig",
    "DataConfig",
    "TrainerConfig",
    "CTCConfig",
    "FinetuneConfig",
    "RunConfig",
    "PretrainRunConfig",
    "FinetuneRunConfig",
    "to_run_config",
    "register_configs",
    "build_model_config",
    "flatten_lr_scale",
    "config_container",
    "BestMode",
    "DistBackend",
    "unknown_key_error",
    "ModelConfig",
    "migrate_override",
]


def _positive(section: str, obj: Any, *keys: str) -> None:
    """Each key a finite number > 0 (``nan > 0`` is false: NaN is refused too)."""
    for key in keys:
        value = getattr(obj, key)
        if not math.isfinite(value):
            raise ValueError(f"{section}.{key}: must be a finite number > 0 (got {value})")
        if not value > 0:
            raise ValueError(f"{section}.{key}: must be > 0 (got {value})")


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


@dataclass
class OptimConfig:
    """AdamW (fairseq ``adam`` = decoupled weight decay)."""

    lr: float = 5e-4
    """Peak learning rate (the schedule scales it per update)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    """Adam (beta1, beta2), each in [0, 1)."""
    eps: float = 1e-6
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled weight decay (AdamW)."""
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

    def check(self) -> None:
        _positive("optim", self, "lr", "eps")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas: two values in [0, 1) (got {self.betas})")
        for key in ("weight_decay", "clip_norm"):
            if not (getattr(self, key) >= 0 and math.isfinite(getattr(self, key))):
                raise ValueError(f"optim.{key}: must be a finite number >= 0 (got {getattr(self, key)})")
        for prefix, scale in flatten_lr_scale(self.lr_scale).items():
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
                raise ValueError(f"optim.lr_scale.{prefix}: a number > 0 (got {scale!r})")


BestMode = StrEnum("BestMode", ["min", "max"], module=__name__)
DistBackend = StrEnum("DistBackend", ["auto", "gloo", "nccl"], module=__name__)


@dataclass
class TrainerConfig:
    max_updates: int = 400000
    """Optimizer updates of the run."""
    max_epochs: Optional[int] = None
    """Stop after this many passes over the training set (null: only ``max_updates``)."""
    update_freq: int = 1
    """Gradient accumulation: micro-batches per update (per process)."""
    precision: str = "32"
    """``32``, ``bf16`` or ``fp16`` (also ``fp32``, ``16-mixed``, ``bf16-mixed``...)."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda`` or ``cuda:N``."""
    seed: int = 1
    """Seeds every random draw (see the trainer's docstring), so runs repeat bit for bit."""
    num_threads: Optional[int] = None
    """``torch.set_num_threads`` (null: torch's default)."""
    log_interval: int = 200
    """Write a ``train`` record (sums over the last N updates) every N updates."""
    valid_interval: int = 0
    """Validate every N updates (0: only at the end)."""
    valid_after_updates: int = 0
    """No periodic validation before this update."""
    max_valid_batches: Optional[int] = None
    """Validate on at most this many batches (null: all; to switch validation off,
    ``data.valid_subset=null``)."""
    save_interval: int = 25000
    """Write ``checkpoints/last`` every N updates (and at the end)."""
    best_metric: Optional[str] = None
    """Validation metric for ``checkpoints/best`` (default: ``loss`` pretraining, ``wer`` fine-tuning)."""
    best_mode: BestMode = BestMode.min
    """``min`` or ``max``: which way ``best_metric`` improves."""
    resume: bool = True
    """Continue from ``RUN/checkpoints/last`` when it exists."""
    max_consecutive_nonfinite: int = 10
    """Stop after this many skipped (non-finite loss or gradient) updates in a row."""
    compile: bool = False
    """``torch.compile(dynamic=True)`` the model's dense parts (feature projection, context
    network, CTC head; ``wav2vec2_lite.compile``); conv encoder, masking, objective stay eager."""
    gradient_checkpointing: bool = False
    """Recompute transformer blocks in the backward pass (less memory, more time)."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs ``tensorboard``)."""
    progress: bool = True
    """A progress bar on the terminal."""
    dist_backend: DistBackend = DistBackend.auto
    """``auto``: nccl on cuda, gloo on cpu."""
    find_unused_parameters: Optional[bool] = None
    """DDP: None = on when layerdrop > 0, the encoder is frozen for some updates, or time masking
    is off (an unused mask embedding)."""

    def check(self) -> None:
        self.precision = parse_precision(self.precision)
        _positive(
            "trainer",
            self,
            "max_updates",
            "update_freq",
            "log_interval",
            "save_interval",
            "max_consecutive_nonfinite",
        )
        if self.max_epochs is not None:
            _positive("trainer", self, "max_epochs")
        if self.valid_interval < 0:
            raise ValueError(f"trainer.valid_interval: must be >= 0 (got {self.valid_interval})")
        if self.max_valid_batches is not None and self.max_valid_batches <= 0:
            raise ValueError(
                f"trainer.max_valid_batches: > 0 or null (got {self.max_valid_batches}); "
                f"data.valid_subset=null switches validation off"
            )


def _model_overrides(name: str, values: dict[str, Any], doc: str) -> type:
    """A dataclass of some Wav2Vec2Config fields (their types, other defaults): a config group
    that sets model fields without declaring them again."""
    types = typing.get_type_hints(Wav2Vec2Config)
    cls = make_dataclass(name, [(k, types[k], field(default=v)) for k, v in values.items()])
    cls.__module__, cls.__doc__ = __name__, doc
    return cls


CTCConfig = _model_overrides(
    "CTCConfig",
    dict(
        mask_time_prob=0.5,
        mask_time_length=10,
        mask_channel_prob=0.0,
        mask_channel_length=10,
        layerdrop=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        dropout_input=0.0,
        final_dropout=0.0,
        feature_grad_mult=0.0,
        ctc_zero_infinity=True,
    ),
    """Fine-tuning values of model fields, applied on top of the pretrained model's config
    (fairseq ``wav2vec_ctc`` defaults): ``ctc.FIELD=VALUE``, validated by Wav2Vec2Config.""",
)


@dataclass
class FinetuneConfig:
    pretrained: Optional[str] = None
    """The checkpoint whose backbone is fine-tuned, detected from its files: our run or model
    folder, a Hugging Face wav2vec2 folder, a fairseq ``.pt`` (pretraining or fine-tuned; a CTC
    head in it is replaced), or a shipped checkpoint's name. None: train from scratch with the
    ``model`` group."""
    trust_pickle: bool = False
    """Let a fairseq checkpoint that needs full pickle execute it (only for files you trust);
    by default it is read without running code from the file."""
    freeze_finetune_updates: int = 0
    """Train only the CTC head for this many updates."""
    freeze_feature_encoder: bool = True
    """Never train the conv feature encoder."""
    sentence_avg: bool = True
    """Normalise the summed CTC loss by sentences (fairseq ``sentence_avg``), else by characters."""

    def check(self) -> None:
        if self.freeze_finetune_updates < 0:
            raise ValueError(
                f"finetune.freeze_finetune_updates: must be >= 0 (got {self.freeze_finetune_updates})"
            )


def _schema_type(hint: Any) -> Any:
    """The OmegaConf-checkable form of a Wav2Vec2Config field's type (Literal -> str, tuple -> List)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return str
    if origin in (tuple, list):
        return list[next((a for a in args if a is not Ellipsis), Any)]
    if origin is dict:
        return dict[str, Any]
    return hint


def _optional_node(name: str, cls: type, doc: str, **extra: Any) -> type:
    """A dataclass with every field of ``cls`` optional and None (None: the preset's value); an
    objective's sub-config becomes such a node too. True when any value is set."""
    types = typing.get_type_hints(cls)
    specs = [(k, Optional[t], field(default=None)) for k, t in extra.items()]
    for f in fields(cls):
        sub = OBJECTIVE_CONFIGS.get(f.name) if f.name != "objective" else None
        if (
            sub is None and typing.get_origin(types[f.name]) is dict
        ):  # a free map (extra): {} as its keys are added
            specs.append((f.name, _schema_type(types[f.name]), field(default_factory=dict)))
        elif sub is None:
            specs.append((f.name, Optional[_schema_type(types[f.name])], field(default=None)))
        else:  # present (all None), so that model.<objective>.<key>=value finds its node
            node = _optional_node(f"{sub.__name__}Node", sub, f"``model.{f.name}``: {sub.__doc__}")
            specs.append((f.name, node, field(default_factory=node)))
    node = make_dataclass(name, specs, namespace={"__bool__": lambda self: bool(_set_values(self))})
    node.__module__, node.__doc__ = __name__, doc
    return node


def _set_values(node: Any) -> dict[str, Any]:
    """The values a model node sets (None and empty sub-nodes left out), as plain containers."""
    items = asdict(node).items() if is_dataclass(node) else dict(node).items()
    out = {}
    for key, value in items:
        if isinstance(value, dict) and key in OBJECTIVE_CONFIGS:
            value = _set_values(value)
        if value is not None and value != {}:
            out[key] = value
    return out


ModelConfig = _optional_node(
    "ModelConfig",
    Wav2Vec2Config,
    """The ``model`` node: a preset and the
    Wav2Vec2Config fields that differ from it (None: the preset's value).""",
    preset=str,
)


def build_model_config(model: Any, **overrides: Any) -> Wav2Vec2Config:
    """A :class:`Wav2Vec2Config` from the ``model`` node (a :data:`ModelConfig` or a mapping):
    its preset (``base`` when none is named), then the values it sets, then ``overrides``."""
    values = _set_values(model) if model else {}
    if not values:
        raise ValueError("no model config: choose one with model=tiny|base|large")
    preset = values.pop("preset", None) or "base"
    return Wav2Vec2Config.preset(preset, **{**values, **overrides})


@dataclass
class RunConfig:
    """What every run has; ``schedule`` is a mapping until :meth:`check` makes it a Schedule."""

    model: Optional[ModelConfig] = field(default_factory=ModelConfig)
    """A preset and what differs from it; empty (or null) when fine-tuning takes the pretrained model's."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: Any = field(default_factory=lambda: {"name": "polynomial"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    run_dir: Optional[str] = None
    """Where outputs go; None = Hydra's output directory (or the working directory)."""
    task: str = "pretrain"

    def check(self) -> None:
        self.data.check()
        self.optim.check()
        self.trainer.check()
        unknown = (
            [k for k in self.schedule if not _any_schedule_has(k)] if isinstance(self.schedule, dict) else []
        )
        if unknown:
            raise unknown_key_error(f"schedule.{unknown[0]}", self.task, self.schedule)
        self.schedule = make_schedule(self.schedule)
        if self.model:
            build_model_config(self.model)


@dataclass
class PretrainRunConfig(RunConfig):
    task: str = "pretrain"


@dataclass
class FinetuneRunConfig(RunConfig):
    schedule: Any = field(default_factory=lambda: {"name": "tri_stage"})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ctc: CTCConfig = field(default_factory=CTCConfig)
    task: str = "finetune"

    def check(self) -> None:
        super().check()
        self.finetune.check()
        try:
            Wav2Vec2Config(**asdict(self.ctc))
        except ConfigError as e:
            raise ConfigError(str(e).replace("Wav2Vec2Config.", "ctc.", 1)) from e


_SCHEMAS = {"pretrain": PretrainRunConfig, "finetune": FinetuneRunConfig}


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (``pretrain_schema``, ``finetune_schema``)."""
    cs = ConfigStore.instance()
    for kind, schema in _SCHEMAS.items():
        cs.store(name=f"{kind}_schema", node=schema)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (``Optional[X]`` too), else None: its value is a leaf or a free map."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if len(args) == 1 else hint
    return hint if isinstance(hint, type) and is_dataclass(hint) else None


def _any_schedule_has(key: str) -> bool:
    """A field of some registered schedule: left to make_schedule, which names the schedule to switch to."""
    return any(key in {f.name for f in fields(cls)} for cls in SCHEDULES.values())


def _groups(schema: type) -> dict[str, type]:
    """The groups of a run schema with a fixed set of keys (data, optim, trainer, ..., model)."""
    hints = typing.get_type_hints(schema)
    return {f.name: cls for f in fields(schema) if (cls := _dataclass_of(hints[f.name])) is not None}


def _closest_elsewhere(key: str, path: str, root: type) -> str | None:
    """``group.name`` of another group whose key is ``key`` or nearly (``+trainer.lr`` -> ``optim.lr``)."""
    names = sorted(
        (f.name, f"{g}.{f.name}") for g, cls in _groups(root).items() if g != path for f in fields(cls)
    )
    close = difflib.get_close_matches(key, sorted({n for n, _ in names}), n=1, cutoff=0.8)
    return next((full for name, full in names if close and name == close[0]), None)


def _unknown_key(full: str, path: str, valid: list[str], root: type, node: dict) -> ConfigError:
    """One line: the unknown key and the closest valid one (in its group, else in another group)."""
    key = full.rsplit(".", 1)[-1]
    name = node.get("name") if path == "schedule" else None
    note = f" (the {name!r} schedule's keys; schedule=NAME switches schedules)" if name else ""
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return ConfigError(
            f"unknown config key {full}: did you mean {path + '.' if path else ''}{close[0]}?{note}"
        )
    other = [
        k for k, schema in _SCHEMAS.items() if schema is not root and key in {f.name for f in fields(schema)}
    ]
    if not path and other:
        return ConfigError(f"unknown config key {full}: only {other[0]} configs have it")
    elsewhere = _closest_elsewhere(key, path, root) if path else None
    if elsewhere:
        return ConfigError(f"unknown config key {full}: did you mean {elsewhere}?")
    return ConfigError(
        f"unknown config key {full}: the keys of {path or 'a run config'} are "
        f"{', '.join(sorted(valid))}{note}"
    )


def unknown_key_error(full_key: str, kind: str, node: dict | None = None) -> ConfigError:
    """One line for a key the ``kind`` run schema lacks, naming the closest valid key: what the
    schema's refusal (OmegaConf's, or Hydra's for ``group.key=value``) becomes."""
    root = _SCHEMAS[kind]
    path, _, _ = full_key.rpartition(".")
    moved = moved_key(full_key)
    if moved is not None:
        return ConfigError(f"config key {full_key} is now {moved} (each objective owns its settings)")
    if path == "schedule":
        cls = SCHEDULES.get((node or {}).get("name"))
        valid = sorted({f.name for c in ([cls] if cls else SCHEDULES.values()) for f in fields(c)})
        return _unknown_key(full_key, path, valid, root, node or {})
    schema: type | None = root
    for part in path.split(".") if path else []:  # the dataclass of the node that holds the key
        hints = typing.get_type_hints(schema)
        schema = _dataclass_of(hints[part]) if part in hints else None
        if schema is None:
            return ConfigError(f"unknown config key {full_key}")
    return _unknown_key(full_key, path, [f.name for f in fields(schema)], root, {})


def _one_line(e: OmegaConfBaseException) -> str:
    """OmegaConf's error without its trailing ``full_key:``/``object_type=`` lines."""
    msg = str(getattr(e, "msg", None) or e).splitlines()[0]
    key = getattr(e, "full_key", None)
    return f"{key}: {msg}" if key else msg


def to_run_config(cfg: DictConfig | dict, kind: str | None = None) -> PretrainRunConfig | FinetuneRunConfig:
    """Validate a composed config against its schema and return the typed object."""
    # plain containers merged into the strict schema: a key Hydra added unchecked
    # (``+trainer.typo=1``) is refused there, with the closest valid key named
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    kind = kind or plain.get("task", "pretrain")
    if kind not in _SCHEMAS:
        raise ConfigError(f"task: one of {', '.join(_SCHEMAS)} (got {kind!r})")
    try:
        obj = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(_SCHEMAS[kind]), OmegaConf.create(plain))
        )
    except ConfigKeyError as e:
        raise unknown_key_error(e.full_key, kind) from None
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from e
    obj.check()
    return obj


def config_container(cfg: RunConfig) -> dict[str, Any]:
    """A run config as plain containers (enums as strings): what checkpoints and config.yaml hold,
    and what :func:`to_run_config` reads back."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
