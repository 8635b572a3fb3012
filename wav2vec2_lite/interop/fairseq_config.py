"""fairseq config -> ``Wav2Vec2Config``: the option mapping, fairseq's defaults, and the refusals.

Reads a checkpoint's ``args`` Namespace or hydra ``cfg``; :mod:`.fairseq` loads the weights.
"""

from __future__ import annotations

import argparse
import enum
import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config
from wav2vec2_lite.interop.fairseq_literal import parse_conv_layers, parse_floats

__all__ = ["config_from_fairseq", "PRETRAINING_ARCHS", "CTC_ARCHS"]

log = logging.getLogger(__name__)

PRETRAINING_ARCHS = ("wav2vec2",)
CTC_ARCHS = ("wav2vec_ctc", "wav2vec2_ctc")

# fairseq's own defaults (``Wav2Vec2Config`` dataclass) for fields a config may lack;
# the architecture fields in _REQUIRED have no default here: guessing them would build
# a model whose shapes may still fit but whose numerics differ (e.g. attention heads).
_DEFAULTS: dict[str, Any] = dict(
    extractor_mode="default",
    conv_bias=False,
    activation_fn="gelu",
    layer_type="transformer",
    layer_norm_first=False,
    dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
    dropout_input=0.0,
    dropout_features=0.0,
    final_dim=0,
    logit_temp=0.1,
    quantize_targets=False,
    quantize_input=False,
    same_quantizer=False,
    target_glu=False,
    feature_grad_mult=1.0,
    quantizer_depth=1,
    latent_vars=320,
    latent_groups=2,
    latent_dim=0,
    mask_length=10,
    mask_prob=0.65,
    mask_selection="static",
    no_mask_overlap=False,
    mask_channel_length=10,
    mask_channel_prob=0.0,
    mask_channel_selection="static",
    mask_channel_before=False,
    num_negatives=100,
    negatives_from_everywhere=False,
    cross_sample_negatives=0,
    codebook_negatives=0,
    conv_pos=128,
    conv_pos_groups=16,
    pos_conv_depth=1,
    latent_temp=(2.0, 0.5, 0.999995),
    crop_seq_to_multiple=1,
)
_REQUIRED = (
    "conv_feature_layers",
    "encoder_layers",
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
)

# fine-tuning (``wav2vec_ctc``) option -> our field; fairseq applies these to the
# pretraining config when it builds the encoder (``arg_overrides`` in its Wav2VecEncoder)
_FINETUNE_OVERRIDES = {
    "dropout": "dropout",
    "attention_dropout": "attention_dropout",
    "activation_dropout": "activation_dropout",
    "dropout_input": "dropout_input",
    "mask_prob": "mask_time_prob",
    "mask_length": "mask_time_length",
    "mask_channel_prob": "mask_channel_prob",
    "mask_channel_length": "mask_channel_length",
    "layerdrop": "layerdrop",
    "feature_grad_mult": "feature_grad_mult",
    "final_dropout": "final_dropout",
}


# --------------------------------------------------------------------------- configs
def _plain(obj: Any) -> Any:
    """Namespace / omegaconf containers / enums -> plain dicts, lists and scalars."""
    if isinstance(obj, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if type(obj).__module__.startswith("omegaconf"):
        if OmegaConf.is_config(obj):
            try:
                obj = OmegaConf.to_container(obj, resolve=True, enum_to_str=True)
            except Exception:  # an interpolation that does not resolve outside fairseq
                obj = OmegaConf.to_container(obj, resolve=False, enum_to_str=True)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if isinstance(obj, tuple) else [_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.name
    return obj


class _Source:
    """The parts of a fairseq config that describe one model, as plain dicts."""

    def __init__(self, obj: Any, where: str, path: str | None = None) -> None:
        self.where, self.path = where, path
        if isinstance(obj, Mapping) and ("cfg" in obj or "args" in obj):  # a whole checkpoint
            if obj.get("cfg") is not None:
                obj = obj["cfg"]
            elif obj.get("args") is not None:
                obj = obj["args"]
            else:
                raise ConfigError(
                    f"{where}: the checkpoint has neither 'args' nor 'cfg'; fairseq stores the "
                    "model config in one of them"
                )
        data = _plain(obj)
        if not isinstance(data, dict):
            raise ConfigError(
                f"{where}: expected a fairseq Namespace, cfg or checkpoint dict; got {type(obj).__name__}"
            )
        if isinstance(data.get("model"), dict):  # hydra cfg: model / criterion / task sections
            self.model, self.criterion, self.task = (
                data["model"],
                data.get("criterion") or {},
                data.get("task") or {},
            )
            self.arch = self.model.get("_name") or self.model.get("arch")
        else:  # flat argparse args (or a model section on its own)
            self.model = self.criterion = self.task = data
            self.arch = data.get("arch") or data.get("_name")
        if self.arch is None:
            self.arch = CTC_ARCHS[0] if "w2v_args" in self.model else PRETRAINING_ARCHS[0]
        if self.arch not in PRETRAINING_ARCHS + CTC_ARCHS:
            raise ConfigError(
                f"{where}: fairseq arch {self.arch!r} is not supported; load_fairseq reads wav2vec 2.0 "
                f"pretraining ({', '.join(PRETRAINING_ARCHS)}) and CTC ({', '.join(CTC_ARCHS)}) models"
            )
        self.is_ctc = self.arch in CTC_ARCHS
        if self.is_ctc:
            w2v = self.model.get("w2v_args")
            if not isinstance(w2v, dict):
                raise ConfigError(
                    f"{where}: the fine-tuning config has no w2v_args (the pretraining config), "
                    f"so the encoder's shape is unknown (w2v_path={self.model.get('w2v_path')!r})"
                )
            if isinstance(w2v.get("model"), dict):
                self.pre, self.pre_criterion = w2v["model"], w2v.get("criterion") or {}
            else:
                self.pre, self.pre_criterion = w2v, w2v
        else:
            self.pre, self.pre_criterion = self.model, self.criterion

    # ---------------------------------------------------------------- helpers
    def get(self, key: str) -> Any:
        """A pretraining-model field, with fairseq's default when absent."""
        if key in self.pre and self.pre[key] is not None:
            return self.pre[key]
        if key in _REQUIRED:
            raise ConfigError(f"{self.where}: the fairseq model config lacks {key!r}")
        return _DEFAULTS[key]

    def refuse_unsupported(self) -> None:
        """ConfigError naming each fairseq option wav2vec2_lite does not implement."""

        def refuse(key: str, why: str) -> None:
            raise ConfigError(f"{self.where}: fairseq option {key}={self.get(key)!r} is not supported: {why}")

        if self.get("extractor_mode") not in ("default", "layer_norm"):
            refuse(
                "extractor_mode", "only 'default' (group norm) and 'layer_norm' feature encoders exist here"
            )
        if self.get("activation_fn") != "gelu":
            refuse("activation_fn", "the transformer uses GELU only")
        if self.get("layer_type") != "transformer":
            refuse("layer_type", "only transformer blocks are implemented (no conformer/adapters)")
        if int(self.get("pos_conv_depth")) != 1:
            refuse("pos_conv_depth", "the positional embedding is a single convolution")
        if int(self.get("crop_seq_to_multiple")) != 1:
            refuse("crop_seq_to_multiple", "frames are never cropped to a multiple")
        if self.is_ctc:
            return  # the remaining options concern pretraining heads, which fine-tuning drops
        if self.get("negatives_from_everywhere"):
            refuse("negatives_from_everywhere", "distractors come from masked frames only")
        if int(self.get("codebook_negatives")) > 0:
            refuse("codebook_negatives", "distractors are never sampled from the codebook")
        if self.get("target_glu"):
            refuse("target_glu", "targets have no GLU projection")
        if int(self.get("quantizer_depth")) != 1:
            refuse("quantizer_depth", "the quantizer's logits come from one linear layer")
        infonce = self.pre_criterion.get("infonce")
        if infonce is not None and not infonce:
            raise ConfigError(
                f"{self.where}: fairseq criterion option infonce=False (binary cross-entropy) is not "
                "supported: the contrastive loss is InfoNCE"
            )

    def ignored_training_options(self) -> list[str]:
        """Masking variants that change training only; the imported model ignores them."""
        notes = []
        for key, plain in (
            ("mask_selection", "static"),
            ("mask_channel_selection", "static"),
            ("no_mask_overlap", False),
            ("mask_channel_before", False),
        ):
            value = self.pre.get(key, plain)
            if value is not None and value != plain:
                notes.append(f"{key}={value!r}")
        return notes

    def loss_weights(self) -> tuple[float, float]:
        """(diversity, feature penalty) weights; fairseq adds no extra loss when they are unset."""
        raw = self.pre_criterion.get("loss_weights")
        if raw is None:
            return 0.0, 0.0
        w = parse_floats(raw, None, "loss_weights")
        if len(w) == 1:  # fairseq repeats a single weight for every extra loss
            w = w * 2
        if len(w) != 2:
            raise ConfigError(
                f"{self.where}: fairseq loss_weights={raw!r}: expected [diversity, feature penalty]"
            )
        return w[0], w[1]

    def quantization(self, hidden: int, final_dim: int, latent_dim: int) -> dict[str, Any]:
        """The Table 5 switches as fairseq builds them: ``same_quantizer`` only acts with both
        quantizers (else fairseq builds a separate input quantizer), whose codevectors are then
        ``final_dim`` wide; a separate input quantizer's are ``latent_dim`` or ``encoder_embed_dim``."""
        targets, inputs = bool(self.get("quantize_targets")), bool(self.get("quantize_input"))
        same = bool(self.get("same_quantizer")) and targets and inputs
        if same and latent_dim != final_dim:
            raise ConfigError(
                f"{self.where}: fairseq same_quantizer with latent_dim={latent_dim} != "
                f"final_dim={final_dim}: fairseq's project_inp expects final_dim-wide codevectors, "
                "so this model cannot run"
            )
        return dict(
            quantize_targets=targets,
            quantize_input=inputs,
            same_quantizer=same,
            input_codevector_dim=0 if same or not inputs else int(self.get("latent_dim")),
        )

    # ---------------------------------------------------------------- the config
    def fields(self) -> dict[str, Any]:
        self.refuse_unsupported()
        conv = parse_conv_layers(self.get("conv_feature_layers"))
        hidden = int(self.get("encoder_embed_dim"))
        final_dim = int(self.get("final_dim")) or hidden
        latent_dim = int(self.get("latent_dim")) or final_dim
        diversity, penalty = self.loss_weights()
        f: dict[str, Any] = dict(
            conv_dim=tuple(c[0] for c in conv),
            conv_kernel=tuple(c[1] for c in conv),
            conv_stride=tuple(c[2] for c in conv),
            conv_bias=bool(self.get("conv_bias")),
            feat_extract_norm="group" if self.get("extractor_mode") == "default" else "layer",
            masked_group_norm=False,  # fairseq's numerics: GroupNorm statistics include padding
            feature_grad_mult=float(self.get("feature_grad_mult")),
            hidden_size=hidden,
            dropout_input=float(self.get("dropout_input")),
            num_layers=int(self.get("encoder_layers")),
            num_heads=int(self.get("encoder_attention_heads")),
            ffn_dim=int(self.get("encoder_ffn_embed_dim")),
            layer_norm_first=bool(self.get("layer_norm_first")),
            dropout=float(self.get("dropout")),
            attention_dropout=float(self.get("attention_dropout")),
            activation_dropout=float(self.get("activation_dropout")),
            layerdrop=float(self.get("encoder_layerdrop")),
            pos_conv_kernel=int(self.get("conv_pos")),
            pos_conv_groups=int(self.get("conv_pos_groups")),
            mask_time_prob=float(self.get("mask_prob")),
            mask_time_length=int(self.get("mask_length")),
            mask_time_min_masks=2,  # fairseq's compute_mask_indices(min_masks=2) for time masks
            mask_channel_prob=float(self.get("mask_channel_prob")),
            mask_channel_length=int(self.get("mask_channel_length")),
            contrastive=dict(
                num_code_groups=int(self.get("latent_groups")),
                num_codes_per_group=int(self.get("latent_vars")),
                codevector_dim=latent_dim,
                final_dim=final_dim,
                gumbel_temperature=tuple(parse_floats(self.get("latent_temp"), 3, "latent_temp")),
                dropout_features=float(self.get("dropout_features")),
                num_negatives=int(self.get("num_negatives")),
                cross_sample_negatives=int(self.get("cross_sample_negatives")),
                logit_temperature=float(self.get("logit_temp")),
                diversity_loss_weight=diversity,
                feature_penalty_weight=penalty,
                **self.quantization(hidden, final_dim, latent_dim),
            ),
        )
        if self.is_ctc:
            ft = self.model
            for theirs, ours in _FINETUNE_OVERRIDES.items():
                if ft.get(theirs) is not None:
                    f[ours] = int(ft[theirs]) if ours.endswith("_length") else float(ft[theirs])
            if ft.get("apply_mask") is not None and not ft["apply_mask"]:
                f["mask_time_prob"] = f["mask_channel_prob"] = 0.0  # fairseq masks only with apply_mask
            if self.criterion.get("zero_infinity") is not None:
                f["ctc_zero_infinity"] = bool(self.criterion["zero_infinity"])
        notes = self.ignored_training_options()
        if notes:
            log.warning(
                "%s: fairseq training options not reproduced (masking uses static, overlapping spans "
                "after the mask embedding): %s",
                self.where,
                "; ".join(notes),
            )
        normalize = self.task.get("normalize")
        f["extra"] = {
            "source": "fairseq",
            "fairseq_arch": self.arch,
            "checkpoint": self.path,
            "normalize": bool(normalize) if normalize is not None else None,
        }
        if self.is_ctc:
            f["extra"]["vocab_layout"] = (
                "fairseq Dictionary order: 0 <s> (CTC blank), 1 <pad>, 2 </s>, 3 <unk>, "
                "then the symbols of the fine-tuning dict.ltr.txt in file order"
            )
        return f


def config_from_fairseq(args_or_cfg: Any, **overrides: Any) -> Wav2Vec2Config:
    """A fairseq ``Namespace`` / ``cfg`` (DictConfig or dict) / whole checkpoint dict -> our config.

    Pretraining configs give the whole model; fine-tuning (``wav2vec_ctc``) configs give the
    pretraining config from ``w2v_args`` with the fine-tuning options applied on top
    (``vocab_size`` is not in the config: :func:`load_fairseq` takes it from the head's
    weight; pass it in ``overrides`` otherwise). Unsupported options raise ``ConfigError``.
    """
    return _config(_Source(args_or_cfg, "fairseq config"), overrides)


def _config(src: _Source, overrides: Mapping[str, Any]) -> Wav2Vec2Config:
    fields = src.fields()
    extra = {**fields.pop("extra"), **dict(overrides).pop("extra", {})}
    return Wav2Vec2Config.from_dict({**fields, "extra": extra}).replace(
        **{k: v for k, v in overrides.items() if k != "extra"}
    )
