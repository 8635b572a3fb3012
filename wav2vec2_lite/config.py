"""One typed, validated config that builds every wav2vec 2.0 model in this library.

Presets follow fairseq's released configurations (``base``: ``wav2vec2_base_librispeech``,
``large``: ``wav2vec2_large_librivox``) and a ``tiny`` size that pretrains on a laptop CPU.
Field names say what the paper calls the concept; the transformers / fairseq names are
given in each docstring so that checkpoints map one to one (see ``docs/config.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from wav2vec2_lite.objectives.configs import MOVED_KEYS, OBJECTIVE_CONFIGS, BestRQConfig, ContrastiveConfig

__all__ = ["Wav2Vec2Config", "ConfigError", "upgrade_config_dict"]


class ConfigError(ValueError):
    """A config value is out of range or inconsistent; the message names the key."""


@dataclass(kw_only=True)
class Wav2Vec2Config:
    """Hyperparameters of a wav2vec 2.0 model (defaults = BASE as released by fairseq)."""

    # ---- feature encoder (conv stack over the raw 16 kHz wave) ----
    conv_dim: tuple[int, ...] = (512,) * 7
    """Output channels of each conv layer (fairseq ``conv_feature_layers``, HF ``conv_dim``)."""
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    """Kernel width of each conv layer; 7 layers give a 400-sample (25 ms) receptive field."""
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    """Stride of each conv layer; their product (320) is the 20 ms frame hop."""
    conv_bias: bool = False
    """Bias in the conv layers (False for BASE, True for LARGE/LV-60k)."""
    feat_extract_norm: Literal["group", "layer"] = "group"
    """``group``: GroupNorm (one group per channel) after the first conv only (BASE, fairseq
    ``extractor_mode=default``); ``layer``: LayerNorm over channels after every conv (LARGE)."""
    masked_group_norm: bool = True
    """Group-norm mode only: compute the first layer's GroupNorm statistics over each
    utterance's valid (unpadded) samples, so a padded batch gives the same outputs as one
    utterance at a time. False reproduces fairseq/transformers exactly (statistics include
    padding); both agree when nothing is padded."""
    feature_grad_mult: float = 0.1
    """Scale of the gradient that flows into the feature encoder (fairseq pretraining: 0.1;
    1.0 = plain backprop as in transformers; 0 freezes the encoder and skips its backward)."""

    # ---- feature projection ----
    hidden_size: int = 768
    """Transformer width (fairseq ``encoder_embed_dim``)."""
    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm."""
    dropout_input: float = 0.1
    """Dropout after the feature projection (fairseq ``dropout_input``, HF ``feat_proj_dropout``)."""

    # ---- context network: conv positional embedding + transformer ----
    num_layers: int = 12
    """Transformer blocks."""
    num_heads: int = 12
    """Attention heads (12 in fairseq's BASE code and checkpoints; the paper says 8)."""
    ffn_dim: int = 3072
    """Inner width of each feed-forward block."""
    layer_norm_first: bool = False
    """Pre-LN blocks (LARGE) instead of post-LN (BASE)."""
    dropout: float = 0.1
    """Dropout on residual branches and after the positional embedding."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    activation_dropout: float = 0.0
    """Dropout after the feed-forward activation."""
    layerdrop: float = 0.05
    """Probability of skipping a whole transformer block in training (0 in eval)."""
    pos_conv_kernel: int = 128
    """Width of the convolutional relative positional embedding."""
    pos_conv_groups: int = 16
    """Groups of the positional convolution."""

    # ---- masking (every objective, and SpecAugment in fine-tuning) ----
    mask_time_prob: float = 0.65
    """Fraction of frames chosen as span starts times span length (paper p=0.065 × M=10)."""
    mask_time_length: int = 10
    """M, span length in frames."""
    mask_time_min_masks: int = 2
    """At least this many spans per utterance."""
    mask_channel_prob: float = 0.0
    """Channel (feature) masking probability, as in fine-tuning recipes."""
    mask_channel_length: int = 10
    """Width of each masked channel span."""

    # ---- pretraining objective: its name, and each objective's own settings ----
    objective: str = "contrastive"
    """What pretraining predicts at masked frames: ``contrastive`` (wav2vec 2.0: Gumbel
    product quantizer, contrastive + diversity + feature penalty) or ``best_rq`` (BEST-RQ:
    codes of a frozen random projection of log-mel frames); the sub-config of that name holds
    its settings (``docs/objectives.md``)."""
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    """Settings of the ``contrastive`` objective (codebooks, distractors, temperatures, loss weights)."""
    best_rq: BestRQConfig = field(default_factory=BestRQConfig)
    """Settings of the ``best_rq`` objective (codebook, log-mel bins, normalisation)."""

    # ---- CTC fine-tuning ----
    vocab_size: int = 32
    """Output classes of the CTC head, blank (``<pad>``) at index 0."""
    final_dropout: float = 0.0
    """Dropout before the CTC head."""
    ctc_zero_infinity: bool = True
    """Zero infinite CTC losses (an utterance shorter than its label)."""
    ctc_loss_reduction: Literal["sum", "mean"] = "sum"
    """``sum``: summed over the batch (as fairseq and transformers); ``mean``: divided by
    the total number of target characters."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata (e.g. the source of imported weights); not used by the model."""

    def __post_init__(self) -> None:
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        for name, cls in _settings():
            value = getattr(self, name)
            if isinstance(value, Mapping):  # a dict, or an omegaconf DictConfig
                setattr(self, name, _sub_config(cls, name, dict(value)))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad key."""

        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"Wav2Vec2Config.{key}: {msg} (got {getattr(self, key)!r})")

        n = len(self.conv_dim)
        need(n > 0, "conv_dim", "needs at least one conv layer")
        need(len(self.conv_kernel) == n, "conv_kernel", f"must have {n} entries like conv_dim")
        need(len(self.conv_stride) == n, "conv_stride", f"must have {n} entries like conv_dim")
        for key in ("conv_dim", "conv_kernel", "conv_stride"):
            need(
                all(isinstance(v, int) and v > 0 for v in getattr(self, key)),
                key,
                "entries must be positive ints",
            )
        need(self.feat_extract_norm in ("group", "layer"), "feat_extract_norm", "must be 'group' or 'layer'")
        need(self.feature_grad_mult >= 0, "feature_grad_mult", "must be >= 0")
        for key in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "ffn_dim",
            "pos_conv_kernel",
            "pos_conv_groups",
            "mask_time_length",
            "mask_channel_length",
            "vocab_size",
        ):
            need(
                isinstance(getattr(self, key), int) and getattr(self, key) > 0, key, "must be a positive int"
            )
        need(
            self.hidden_size % self.num_heads == 0, "num_heads", f"must divide hidden_size={self.hidden_size}"
        )
        need(
            self.hidden_size % self.pos_conv_groups == 0,
            "pos_conv_groups",
            f"must divide hidden_size={self.hidden_size}",
        )
        for key in (
            "dropout_input",
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "layerdrop",
            "mask_time_prob",
            "mask_channel_prob",
            "final_dropout",
        ):
            v = getattr(self, key)
            need(isinstance(v, (int, float)) and 0.0 <= v <= 1.0, key, "must be in [0, 1]")
        need(self.layerdrop < 1.0, "layerdrop", "must be < 1")
        need(self.mask_time_min_masks >= 0, "mask_time_min_masks", "must be >= 0")
        need(self.layer_norm_eps > 0, "layer_norm_eps", "must be > 0")
        need(self.ctc_loss_reduction in ("sum", "mean"), "ctc_loss_reduction", "must be 'sum' or 'mean'")
        need(self.objective in OBJECTIVE_CONFIGS, "objective", f"must be one of {sorted(OBJECTIVE_CONFIGS)}")
        for name, cls in _settings():
            need(isinstance(getattr(self, name), cls), name, f"must be a {cls.__name__}")
            try:
                getattr(self, name).validate()
            except (ValueError, TypeError) as e:
                raise ConfigError(f"Wav2Vec2Config.{e}") from None
        c = self.contrastive
        need(
            self.objective == "contrastive" or not c.quantize_input,
            "objective",
            "contrastive.quantize_input needs the contrastive objective (its codebook sizes, Gumbel "
            "temperature schedule and diversity loss are the input quantizer's)",
        )
        need(
            not c.quantize_input
            or c.same_quantizer
            or c.input_codevector_dim > 0
            or self.hidden_size % c.num_code_groups == 0,
            "hidden_size",
            f"is the input quantizer's codevector width when contrastive.input_codevector_dim is 0: "
            f"it must be divisible by contrastive.num_code_groups={c.num_code_groups}",
        )
        need(
            self.objective != "best_rq" or self.frame_stride % 160 == 0,
            "conv_stride",
            f"best_rq stacks 10 ms log-mel frames onto encoder frames: the frame stride ({self.frame_stride} "
            f"samples) must be a multiple of 160",
        )

    # ------------------------------------------------------------- derived
    @property
    def frame_stride(self) -> int:
        """Samples per output frame (320 = 20 ms at 16 kHz for the reference stack)."""
        s = 1
        for v in self.conv_stride:
            s *= v
        return s

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (400 = 25 ms for the reference stack)."""
        rf, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            rf += (k - 1) * jump
            jump *= s
        return rf

    # --------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists; each objective's settings a nested dict)."""
        return _lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Wav2Vec2Config":
        """Build from a dict (objective sub-configs as dicts or config objects); an unknown key is an
        error that names it, a key that moved into an objective's sub-config names its new place."""
        known = {f.name for f in fields(cls)}
        moved = sorted(k for k in data if k not in known and k in MOVED_KEYS)
        if moved:
            raise ConfigError(
                f"Wav2Vec2Config.{moved[0]} is now Wav2Vec2Config.{MOVED_KEYS[moved[0]]} (each "
                f"objective owns its settings; override it as model.{MOVED_KEYS[moved[0]]})"
            )
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Wav2Vec2Config: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "Wav2Vec2Config":
        """A validated copy with some fields changed; an objective's sub-config given as a dict
        changes only the keys it names (``replace(contrastive={"num_negatives": 10})``)."""
        return self.from_dict(_merge(self.to_dict(), changes))

    # ------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Wav2Vec2Config":
        """``tiny``, ``base`` or ``large``, with optional field overrides."""
        presets = {"tiny": _TINY, "base": {}, "large": _LARGE}
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls.from_dict(_merge(Wav2Vec2Config().to_dict(), _merge(presets[name], overrides)))

    @classmethod
    def tiny(cls, **overrides: Any) -> "Wav2Vec2Config":
        """conv widths 32..128, 4 layers x 256, 2x64 codes (CPU pretraining)."""
        return cls.preset("tiny", **overrides)

    @classmethod
    def base(cls, **overrides: Any) -> "Wav2Vec2Config":
        """BASE: fairseq ``wav2vec2_base_librispeech``."""
        return cls.preset("base", **overrides)

    @classmethod
    def large(cls, **overrides: Any) -> "Wav2Vec2Config":
        """LARGE: fairseq ``wav2vec2_large_librivox`` (LV-60k)."""
        return cls.preset("large", **overrides)


_TINY: dict[str, Any] = dict(
    conv_dim=(32, 64, 64, 96, 128, 128, 128),
    hidden_size=256,
    num_layers=4,
    num_heads=4,
    ffn_dim=1024,
    layerdrop=0.0,
    contrastive=dict(num_codes_per_group=64, codevector_dim=128, final_dim=128),
)

_LARGE: dict[str, Any] = dict(
    conv_bias=True,
    feat_extract_norm="layer",
    hidden_size=1024,
    num_layers=24,
    num_heads=16,
    ffn_dim=4096,
    layer_norm_first=True,
    layerdrop=0.0,
    contrastive=dict(
        codevector_dim=768, final_dim=768, feature_penalty_weight=0.0, gumbel_temperature=(2.0, 0.1, 0.999995)
    ),
)


def _settings() -> list[tuple[str, type]]:
    """(field name, config class) of each objective that has settings."""
    return [(name, cls) for name, cls in OBJECTIVE_CONFIGS.items() if cls is not None]


def _sub_config(cls: type, name: str, data: dict[str, Any]) -> Any:
    """``cls(**data)``; an unknown key is a :class:`ConfigError` naming it and the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Wav2Vec2Config.{name}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**data)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``changes``; an objective's sub-config given as a dict is merged key by key."""
    out = dict(base)
    for key, value in changes.items():
        if key in OBJECTIVE_CONFIGS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = {**out[key], **value}
        elif key in OBJECTIVE_CONFIGS and dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[key] = value
    return out


def _lists(value: Any) -> Any:
    """Tuples become lists, at any depth (JSON and YAML have only lists)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return [_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def upgrade_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config (``format_version`` ≤ 2: the contrastive settings flat, BEST-RQ's in
    ``objective_options``) in today's layout; a current one is returned unchanged."""
    if not any(k in data for k in MOVED_KEYS):
        return dict(data)
    out = {k: v for k, v in data.items() if k not in MOVED_KEYS}
    contrastive = {k: data[k] for k in MOVED_KEYS if k in data and k != "objective_options"}
    out["contrastive"] = {**dict(data.get("contrastive") or {}), **contrastive}
    out["best_rq"] = {**dict(data.get("best_rq") or {}), **dict(data.get("objective_options") or {})}
    return out
