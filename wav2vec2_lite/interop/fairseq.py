"""fairseq interop: ``load_fairseq`` reads wav2vec 2.0 pretraining and CTC checkpoints.

A fairseq checkpoint is a pickle ``{"args": Namespace | None, "cfg": DictConfig | dict | None,
"model": state_dict, "optimizer_history": ..., "extra_state": ..., ...}``:

* ``args`` (argparse ``Namespace``, 2020 releases) or ``cfg`` (omegaconf, hydra-era; newer
  fairseq saves it as a plain dict) holds the config: ``cfg.model`` / the flat ``args``
  for the model, ``cfg.criterion.loss_weights`` / ``args.loss_weights`` for the loss.
* Pretraining models (arch ``wav2vec2``) keep their weights at the top level; fine-tuned
  CTC models (arch ``wav2vec_ctc``) under ``w2v_encoder.w2v_model.`` with the head at
  ``w2v_encoder.proj`` and the pretraining config in ``w2v_args``.

The file is read by :func:`wav2vec2_lite.interop.safe_pickle.load_checkpoint`: no code
from it runs unless ``trust=True``. Parameter names map through the shared key-map engine
(:mod:`wav2vec2_lite.interop.keymap`); see ``docs/interop.md`` for the tables.
"""

from __future__ import annotations

import argparse
import ast
import enum
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config
from wav2vec2_lite.interop.keymap import Rule, export_state_dict, import_state_dict
from wav2vec2_lite.interop.safe_pickle import UntrustedCheckpointError, load_checkpoint
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining

__all__ = [
    "load_fairseq",
    "config_from_fairseq",
    "fairseq_state_dict_to_ours",
    "fairseq_rules",
    "parse_fairseq_literal",
    "UntrustedCheckpointError",
]

log = logging.getLogger(__name__)

PRETRAINING_ARCHS = ("wav2vec2",)
CTC_ARCHS = ("wav2vec_ctc", "wav2vec2_ctc")
CTC_PREFIX = "w2v_encoder.w2v_model."
CTC_HEAD = "w2v_encoder.proj"

# fairseq's own defaults (``Wav2Vec2Config`` dataclass) for fields a config may lack;
# the architecture fields in _REQUIRED have no default here: guessing them would build
# a model whose shapes may still fit but whose numerics differ (e.g. attention heads).
_DEFAULTS: dict[str, Any] = dict(
    extractor_mode="default", conv_bias=False, activation_fn="gelu", layer_type="transformer",
    layer_norm_first=False, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, final_dim=0, logit_temp=0.1,
    quantize_targets=False, quantize_input=False, same_quantizer=False, target_glu=False,
    feature_grad_mult=1.0, quantizer_depth=1, latent_vars=320, latent_groups=2, latent_dim=0,
    mask_length=10, mask_prob=0.65, mask_selection="static", no_mask_overlap=False,
    mask_channel_length=10, mask_channel_prob=0.0, mask_channel_selection="static",
    mask_channel_before=False, num_negatives=100, negatives_from_everywhere=False,
    cross_sample_negatives=0, codebook_negatives=0, conv_pos=128, conv_pos_groups=16,
    pos_conv_depth=1, latent_temp=(2.0, 0.5, 0.999995), crop_seq_to_multiple=1,
)
_REQUIRED = ("conv_feature_layers", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
             "encoder_attention_heads")

# fine-tuning (``wav2vec_ctc``) option -> our field; fairseq applies these to the
# pretraining config when it builds the encoder (``arg_overrides`` in its Wav2VecEncoder)
_FINETUNE_OVERRIDES = {
    "dropout": "dropout", "attention_dropout": "attention_dropout", "activation_dropout": "activation_dropout",
    "dropout_input": "dropout_input", "mask_prob": "mask_time_prob", "mask_length": "mask_time_length",
    "mask_channel_prob": "mask_channel_prob", "mask_channel_length": "mask_channel_length",
    "layerdrop": "layerdrop", "feature_grad_mult": "feature_grad_mult", "final_dropout": "final_dropout",
}


# --------------------------------------------------------------------------- literals
_MAX_ITEMS = 10_000


def parse_fairseq_literal(text: str, *, what: str = "value") -> Any:
    """Evaluate a fairseq config string such as ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``.

    Only numbers, lists, tuples, unary minus, ``+`` and ``*`` are allowed (never ``eval``);
    anything else raises :class:`ConfigError` naming ``what``.
    """

    def bad(node: ast.AST, why: str) -> ConfigError:
        return ConfigError(f"fairseq {what}={text!r}: {why} ({type(node).__name__} at column "
                           f"{getattr(node, 'col_offset', 0)}); only numbers, lists, tuples, + and * are allowed")

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            if type(v) not in (int, float):
                raise bad(node, "a sign applies to numbers only")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                if type(a) is not type(b) and not (type(a) in (int, float) and type(b) in (int, float)):
                    raise bad(node, f"cannot add {type(a).__name__} and {type(b).__name__}")
                out = a + b
            else:
                if isinstance(a, int) and isinstance(b, (list, tuple)):
                    a, b = b, a
                if isinstance(a, (list, tuple)):
                    if type(b) is not int or b < 0 or len(a) * b > _MAX_ITEMS:
                        raise bad(node, f"a sequence repeats by a count in 0..{_MAX_ITEMS // max(len(a), 1)}")
                elif type(a) not in (int, float) or type(b) not in (int, float):
                    raise bad(node, f"cannot multiply {type(a).__name__} and {type(b).__name__}")
                out = a * b
            if isinstance(out, (list, tuple)) and len(out) > _MAX_ITEMS:
                raise bad(node, f"more than {_MAX_ITEMS} items")
            return out
        raise bad(node, "not allowed")

    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"fairseq {what}={text!r} is not a Python literal expression: {e.msg}") from None
    return ev(tree)


def _conv_layers(value: Any) -> list[tuple[int, int, int]]:
    layers = parse_fairseq_literal(value, what="conv_feature_layers") if isinstance(value, str) else value
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ConfigError(f"fairseq conv_feature_layers={value!r}: expected a non-empty list of (dim, kernel, stride)")
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, (list, tuple)) or len(layer) != 3 or not all(type(v) is int for v in layer):
            raise ConfigError(f"fairseq conv_feature_layers={value!r}: entry {i} is {layer!r}, "
                              "expected (dim, kernel, stride) ints")
        out.append(tuple(layer))
    return out


def _floats(value: Any, n: int | None, what: str) -> list[float]:
    seq = parse_fairseq_literal(value, what=what) if isinstance(value, str) else value
    if not isinstance(seq, (list, tuple)) or (n is not None and len(seq) != n) \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seq):
        raise ConfigError(f"fairseq {what}={value!r}: expected " + (f"{n} numbers" if n else "a list of numbers"))
    return [float(v) for v in seq]


# --------------------------------------------------------------------------- configs
def _plain(obj: Any) -> Any:
    """Namespace / omegaconf containers / enums -> plain dicts, lists and scalars."""
    if isinstance(obj, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(obj).items()}
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

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
                raise ConfigError(f"{where}: the checkpoint has neither 'args' nor 'cfg'; fairseq stores the "
                                  "model config in one of them")
        data = _plain(obj)
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a fairseq Namespace, cfg or checkpoint dict; "
                              f"got {type(obj).__name__}")
        if isinstance(data.get("model"), dict):  # hydra cfg: model / criterion / task sections
            self.model, self.criterion, self.task = data["model"], data.get("criterion") or {}, data.get("task") or {}
            self.arch = self.model.get("_name") or self.model.get("arch")
        else:  # flat argparse args (or a model section on its own)
            self.model = self.criterion = self.task = data
            self.arch = data.get("arch") or data.get("_name")
        if self.arch is None:
            self.arch = CTC_ARCHS[0] if "w2v_args" in self.model else PRETRAINING_ARCHS[0]
        if self.arch not in PRETRAINING_ARCHS + CTC_ARCHS:
            raise ConfigError(f"{where}: fairseq arch {self.arch!r} is not supported; load_fairseq reads wav2vec 2.0 "
                              f"pretraining ({', '.join(PRETRAINING_ARCHS)}) and CTC ({', '.join(CTC_ARCHS)}) models")
        self.is_ctc = self.arch in CTC_ARCHS
        if self.is_ctc:
            w2v = self.model.get("w2v_args")
            if not isinstance(w2v, dict):
                raise ConfigError(f"{where}: the fine-tuning config has no w2v_args (the pretraining config), "
                                  f"so the encoder's shape is unknown (w2v_path={self.model.get('w2v_path')!r})")
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
            refuse("extractor_mode", "only 'default' (group norm) and 'layer_norm' feature encoders exist here")
        if self.get("activation_fn") != "gelu":
            refuse("activation_fn", "the transformer uses GELU only")
        if self.get("layer_type") != "transformer":
            refuse("layer_type", "only transformer blocks are implemented (no conformer/adapters)")
        if int(self.get("pos_conv_depth")) != 1:
            refuse("pos_conv_depth", "the positional embedding is a single convolution")
        if int(self.get("crop_seq_to_multiple")) != 1:
            refuse("crop_seq_to_multiple", "frames are never cropped to a multiple")
        if self.get("quantize_input"):
            refuse("quantize_input", "the transformer input is never quantized")
        if self.is_ctc:
            return  # the remaining options concern pretraining heads, which fine-tuning drops
        if not self.get("quantize_targets"):
            refuse("quantize_targets", "targets are always Gumbel-quantized")
        if self.get("same_quantizer"):
            refuse("same_quantizer", "there is no input quantizer to share")
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
            raise ConfigError(f"{self.where}: fairseq criterion option infonce=False (binary cross-entropy) is not "
                              "supported: the contrastive loss is InfoNCE")

    def ignored_training_options(self) -> list[str]:
        """Masking variants that change training only; the imported model ignores them."""
        notes = []
        for key, plain in (("mask_selection", "static"), ("mask_channel_selection", "static"),
                           ("no_mask_overlap", False), ("mask_channel_before", False)):
            value = self.pre.get(key, plain)
            if value is not None and value != plain:
                notes.append(f"{key}={value!r}")
        return notes

    def loss_weights(self) -> tuple[float, float]:
        """(diversity, feature penalty) weights; fairseq adds no extra loss when they are unset."""
        raw = self.pre_criterion.get("loss_weights")
        if raw is None:
            return 0.0, 0.0
        w = _floats(raw, None, "loss_weights")
        if len(w) == 1:  # fairseq repeats a single weight for every extra loss
            w = w * 2
        if len(w) != 2:
            raise ConfigError(f"{self.where}: fairseq loss_weights={raw!r}: expected [diversity, feature penalty]")
        return w[0], w[1]

    # ---------------------------------------------------------------- the config
    def fields(self) -> dict[str, Any]:
        self.refuse_unsupported()
        conv = _conv_layers(self.get("conv_feature_layers"))
        hidden = int(self.get("encoder_embed_dim"))
        final_dim = int(self.get("final_dim")) or hidden
        latent_dim = int(self.get("latent_dim")) or final_dim
        diversity, penalty = self.loss_weights()
        f: dict[str, Any] = dict(
            conv_dim=tuple(c[0] for c in conv), conv_kernel=tuple(c[1] for c in conv),
            conv_stride=tuple(c[2] for c in conv), conv_bias=bool(self.get("conv_bias")),
            feat_extract_norm="group" if self.get("extractor_mode") == "default" else "layer",
            masked_group_norm=False,  # fairseq's numerics: GroupNorm statistics include padding
            feature_grad_mult=float(self.get("feature_grad_mult")), hidden_size=hidden,
            dropout_input=float(self.get("dropout_input")),
            num_layers=int(self.get("encoder_layers")), num_heads=int(self.get("encoder_attention_heads")),
            ffn_dim=int(self.get("encoder_ffn_embed_dim")), layer_norm_first=bool(self.get("layer_norm_first")),
            dropout=float(self.get("dropout")), attention_dropout=float(self.get("attention_dropout")),
            activation_dropout=float(self.get("activation_dropout")), layerdrop=float(self.get("encoder_layerdrop")),
            pos_conv_kernel=int(self.get("conv_pos")), pos_conv_groups=int(self.get("conv_pos_groups")),
            mask_time_prob=float(self.get("mask_prob")), mask_time_length=int(self.get("mask_length")),
            mask_time_min_masks=2,  # fairseq's compute_mask_indices(min_masks=2) for time masks
            mask_channel_prob=float(self.get("mask_channel_prob")),
            mask_channel_length=int(self.get("mask_channel_length")),
            contrastive=dict(
                num_code_groups=int(self.get("latent_groups")), num_codes_per_group=int(self.get("latent_vars")),
                codevector_dim=latent_dim, final_dim=final_dim,
                gumbel_temperature=tuple(_floats(self.get("latent_temp"), 3, "latent_temp")),
                dropout_features=float(self.get("dropout_features")),
                num_negatives=int(self.get("num_negatives")),
                cross_sample_negatives=int(self.get("cross_sample_negatives")),
                logit_temperature=float(self.get("logit_temp")),
                diversity_loss_weight=diversity, feature_penalty_weight=penalty),
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
            log.warning("%s: fairseq training options not reproduced (masking uses static, overlapping spans "
                        "after the mask embedding): %s", self.where, "; ".join(notes))
        normalize = self.task.get("normalize")
        f["extra"] = {
            "source": "fairseq", "fairseq_arch": self.arch, "checkpoint": self.path,
            "normalize": bool(normalize) if normalize is not None else None,
        }
        if self.is_ctc:
            f["extra"]["vocab_layout"] = ("fairseq Dictionary order: 0 <s> (CTC blank), 1 <pad>, 2 </s>, 3 <unk>, "
                                          "then the symbols of the fine-tuning dict.ltr.txt in file order")
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
        **{k: v for k, v in overrides.items() if k != "extra"})


# --------------------------------------------------------------------------- weights
def fairseq_rules(model: nn.Module) -> list[Rule]:
    """Our parameter names -> fairseq's, for a pretraining or CTC model of ours."""
    layer_norm_mode = model.config.feat_extract_norm == "layer"
    norm = r"feature_extractor.conv_layers.\1.2.1.\2" if layer_norm_mode else r"feature_extractor.conv_layers.\1.2.\2"
    backbone: list[Rule] = [
        (r"feature_encoder\.conv_layers\.(\d+)\.conv\.(\w+)", (r"feature_extractor.conv_layers.\1.0.\2",)),
        (r"feature_encoder\.conv_layers\.(\d+)\.norm\.(\w+)", (norm,)),
        (r"feature_projection\.layer_norm\.(\w+)", (r"layer_norm.\1",)),
        (r"feature_projection\.projection\.(\w+)", (r"post_extract_proj.\1",)),
        (r"mask_emb", ("mask_emb",)),
        (r"context\.pos_conv\.conv\.bias", ("encoder.pos_conv.0.bias",)),
        (r"context\.pos_conv\.conv\.parametrizations\.weight\.original0", ("encoder.pos_conv.0.weight_g",)),
        (r"context\.pos_conv\.conv\.parametrizations\.weight\.original1", ("encoder.pos_conv.0.weight_v",)),
        (r"context\.layer_norm\.(\w+)", (r"encoder.layer_norm.\1",)),
        (r"context\.layers\.(\d+)\.attention\.qkv\.(\w+)",
         (r"encoder.layers.\1.self_attn.q_proj.\2", r"encoder.layers.\1.self_attn.k_proj.\2",
          r"encoder.layers.\1.self_attn.v_proj.\2")),
        (r"context\.layers\.(\d+)\.attention\.out_proj\.(\w+)", (r"encoder.layers.\1.self_attn.out_proj.\2",)),
        (r"context\.layers\.(\d+)\.attn_layer_norm\.(\w+)", (r"encoder.layers.\1.self_attn_layer_norm.\2",)),
        (r"context\.layers\.(\d+)\.feed_forward\.fc1\.(\w+)", (r"encoder.layers.\1.fc1.\2",)),
        (r"context\.layers\.(\d+)\.feed_forward\.fc2\.(\w+)", (r"encoder.layers.\1.fc2.\2",)),
        (r"context\.layers\.(\d+)\.final_layer_norm\.(\w+)", (r"encoder.layers.\1.final_layer_norm.\2",)),
    ]
    if isinstance(model, Wav2Vec2ForCTC):
        return [(r"wav2vec2\." + p, tuple(CTC_PREFIX + t for t in ts)) for p, ts in backbone] + [
            (r"lm_head\.(\w+)", (r"w2v_encoder.proj.\1",)),
        ]
    if isinstance(model, Wav2Vec2ForPreTraining):
        return [(r"wav2vec2\." + p, ts) for p, ts in backbone] + [
            (r"objective\.quantizer\.codebook", ("quantizer.vars",)),  # (1, G·V, d) there, (G, V, d) here
            (r"objective\.quantizer\.weight_proj\.(\w+)", (r"quantizer.weight_proj.\1",)),
            (r"objective\.project_q\.(\w+)", (r"project_q.\1",)),
            (r"objective\.final_proj\.(\w+)", (r"final_proj.\1",)),
        ]
    raise TypeError("fairseq checkpoints load into Wav2Vec2ForPreTraining or Wav2Vec2ForCTC; "
                    f"got {type(model).__name__}")


def fairseq_state_dict_to_ours(state: Mapping[str, Tensor], model: nn.Module, *,
                               source: str = "fairseq") -> dict[str, Tensor]:
    """A fairseq ``model`` state dict -> the state dict of ``model`` (ours, built from the same config).

    Handles the layouts fairseq leaves implicit: no ``post_extract_proj`` when the conv
    width already equals the transformer width (identity), and a positional convolution
    saved with torch parametrizations instead of ``weight_g``/``weight_v``. Raises
    ``KeyError`` naming the missing tensors, ``ConfigError`` for a shared codebook.
    """
    cfg = model.config
    prefix = CTC_PREFIX if isinstance(model, Wav2Vec2ForCTC) else ""
    foreign = dict(state)
    for new, old in (("weight_g", "parametrizations.weight.original0"),
                     ("weight_v", "parametrizations.weight.original1")):
        key = f"{prefix}encoder.pos_conv.0.{old}"
        if key in foreign and f"{prefix}encoder.pos_conv.0.{new}" not in foreign:
            foreign[f"{prefix}encoder.pos_conv.0.{new}"] = foreign.pop(key)
    proj = f"{prefix}post_extract_proj.weight"
    if proj not in foreign and cfg.conv_dim[-1] == cfg.hidden_size and f"{prefix}layer_norm.weight" in foreign:
        ref = foreign[f"{prefix}layer_norm.weight"]
        foreign[proj] = torch.eye(cfg.hidden_size, dtype=ref.dtype)
        foreign[f"{prefix}post_extract_proj.bias"] = torch.zeros(cfg.hidden_size, dtype=ref.dtype)
    if isinstance(model, Wav2Vec2ForPreTraining) and "quantizer.vars" in foreign:
        g, v = cfg.contrastive.num_code_groups, cfg.contrastive.num_codes_per_group
        rows = foreign["quantizer.vars"].shape[1] if foreign["quantizer.vars"].dim() == 3 else None
        if rows == v and g > 1:
            raise ConfigError(f"{source}: quantizer.vars holds {v} entries for {g} groups: the groups share one "
                              "codebook (fairseq combine_groups), which is not supported")
    rules = fairseq_rules(model)
    ours = model.state_dict()
    out = import_state_dict(ours, foreign, rules, source)
    used = set(export_state_dict(ours, rules))
    unused = sorted(k for k in foreign if k not in used)
    if unused:
        log.warning("%s: ignoring %d tensor(s) the model has no place for: %s%s", source, len(unused),
                    unused[:8], " ..." if len(unused) > 8 else "")
    return out


# --------------------------------------------------------------------------- loading
def load_fairseq(path: str | os.PathLike, *, trust: bool = False, map_location: Any = "cpu",
                 **config_overrides: Any) -> Wav2Vec2ForPreTraining | Wav2Vec2ForCTC:
    """Read a fairseq wav2vec 2.0 checkpoint (pretraining or CTC) into our model, in eval mode.

    Args:
        path: the fairseq ``.pt`` file.
        trust: unpickle with full pickle. By default the file is read with
            ``torch.load(weights_only=True)`` plus a small allowlist (``Namespace``, omegaconf
            containers, numpy scalars), so no code from the file runs; a file that needs more
            is refused with :class:`UntrustedCheckpointError`. ``trust=True`` executes whatever
            the pickle contains: use it only for files from a source you trust.
        map_location: as for ``torch.load``.
        config_overrides: fields of :class:`Wav2Vec2Config` to change after import (e.g.
            ``masked_group_norm=True``, ``mask_time_prob=0.5``).

    Returns:
        ``Wav2Vec2ForPreTraining`` (arch ``wav2vec2``) or ``Wav2Vec2ForCTC`` (``wav2vec_ctc``).
        CTC logits keep fairseq's dictionary order: ``<s>`` (the CTC blank, index 0),
        ``<pad>``, ``</s>``, ``<unk>``, then the symbols of the ``dict.ltr.txt`` used for
        fine-tuning, which the checkpoint does not contain — supply it to decode.

    Raises:
        UntrustedCheckpointError, ConfigError (an option we do not implement, named),
        KeyError (tensors missing from the checkpoint, named), ValueError (a shape mismatch).
    """
    where = str(path)
    ckpt = load_checkpoint(path, trust=trust, map_location=map_location,
                           how_to_trust="load_fairseq(path, trust=True)")
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{where}: not a fairseq checkpoint: expected a dict with 'model' (the state dict) and "
                         f"'args' or 'cfg'; found {keys}")
    state = ckpt["model"]
    src = _Source(ckpt, f"fairseq checkpoint {where}", path=where)
    overrides = dict(config_overrides)
    if src.is_ctc:
        head = CTC_HEAD + ".weight"
        if head not in state:
            raise KeyError(f"{where}: fine-tuned checkpoint has no CTC head {head!r} (a seq2seq or "
                           "feature-only model?)")
        overrides.setdefault("vocab_size", int(state[head].shape[0]))
    cfg = _config(src, overrides)
    model = (Wav2Vec2ForCTC if src.is_ctc else Wav2Vec2ForPreTraining)(cfg)
    try:
        weights = fairseq_state_dict_to_ours(state, model, source=f"fairseq checkpoint {where}")
    except KeyError as e:
        raise KeyError(f"{e.args[0]} (does the checkpoint match its own config? arch {src.arch!r})") from None
    model.load_state_dict(weights, strict=True)
    return model.eval()
