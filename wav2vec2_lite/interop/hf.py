"""Hugging Face transformers interop: ``from_hf`` and ``to_hf`` with identical weights.

transformers is an optional dependency (``pip install 'wav2vec2_lite[hf]'``); it is imported
only inside these functions.

A folder is read only when its ``config.json`` agrees with its weights: transformers itself
builds the model the config describes and fills it with what fits, dropping weights it has no
place for (``num_hidden_layers`` lowered: trained layers gone) and initialising at random what
the weights lack (``feat_extract_norm`` changed: new norm layers), with a warning. Here each of
those is an error naming the tensors (:func:`check_loading_info`), except the tensors
:data:`~wav2vec2_lite.interop.keymap.DROPPED_ON_PURPOSE` lists. What the weights cannot show
(``num_attention_heads``, ``layer_norm_eps``, pre- or post-LN) is read from the config as it is.
Non-finite weights are refused.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from torch import nn

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config
from wav2vec2_lite.interop.keymap import Rule, export_state_dict, import_state_dict, split_dropped
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model
from wav2vec2_lite.serialization import CheckpointError, check_finite

__all__ = ["from_hf", "to_hf", "config_from_hf", "config_to_hf", "check_exportable", "check_loading_info"]

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

log = logging.getLogger(__name__)

BACKBONE_RULES: list[Rule] = [
    (r"feature_encoder\.conv_layers\.(\d+)\.conv\.(\w+)", (r"feature_extractor.conv_layers.\1.conv.\2",)),
    (
        r"feature_encoder\.conv_layers\.(\d+)\.norm\.(\w+)",
        (r"feature_extractor.conv_layers.\1.layer_norm.\2",),
    ),
    (r"feature_projection\.(.+)", (r"feature_projection.\1",)),
    (r"mask_emb", ("masked_spec_embed",)),
    (r"context\.pos_conv\.conv\.(.+)", (r"encoder.pos_conv_embed.conv.\1",)),
    (r"context\.layer_norm\.(\w+)", (r"encoder.layer_norm.\1",)),
    (
        r"context\.layers\.(\d+)\.attention\.qkv\.(\w+)",
        (
            r"encoder.layers.\1.attention.q_proj.\2",
            r"encoder.layers.\1.attention.k_proj.\2",
            r"encoder.layers.\1.attention.v_proj.\2",
        ),
    ),
    (r"context\.layers\.(\d+)\.attention\.out_proj\.(\w+)", (r"encoder.layers.\1.attention.out_proj.\2",)),
    (r"context\.layers\.(\d+)\.attn_layer_norm\.(\w+)", (r"encoder.layers.\1.layer_norm.\2",)),
    (
        r"context\.layers\.(\d+)\.feed_forward\.fc1\.(\w+)",
        (r"encoder.layers.\1.feed_forward.intermediate_dense.\2",),
    ),
    (
        r"context\.layers\.(\d+)\.feed_forward\.fc2\.(\w+)",
        (r"encoder.layers.\1.feed_forward.output_dense.\2",),
    ),
    (r"context\.layers\.(\d+)\.final_layer_norm\.(\w+)", (r"encoder.layers.\1.final_layer_norm.\2",)),
]


def _rules(kind: type[nn.Module]) -> list[Rule]:
    if kind is Wav2Vec2Model:
        return BACKBONE_RULES
    prefixed = [(r"wav2vec2\." + p, tuple("wav2vec2." + t for t in ts)) for p, ts in BACKBONE_RULES]
    if kind is Wav2Vec2ForPreTraining:
        return prefixed + [
            (r"objective\.quantizer\.codebook", ("quantizer.codevectors",)),
            (r"objective\.quantizer\.weight_proj\.(\w+)", (r"quantizer.weight_proj.\1",)),
            (r"objective\.project_q\.(\w+)", (r"project_q.\1",)),
            (r"objective\.final_proj\.(\w+)", (r"project_hid.\1",)),
        ]
    return prefixed + [(r"lm_head\.(\w+)", (r"lm_head.\1",))]


_HF_CLASS = {
    Wav2Vec2Model: "Wav2Vec2Model",
    Wav2Vec2ForPreTraining: "Wav2Vec2ForPreTraining",
    Wav2Vec2ForCTC: "Wav2Vec2ForCTC",
}


def config_from_hf(hf: Any, **overrides: Any) -> Wav2Vec2Config:
    """transformers ``Wav2Vec2Config`` -> ours. Unsupported options raise ``ConfigError``."""
    for attr, bad, why in (
        ("use_weighted_layer_sum", True, "weighted layer sum"),
        ("add_adapter", True, "the adapter stack"),
    ):
        if getattr(hf, attr, False) == bad:
            raise ConfigError(
                f"transformers config uses {why} ({attr}=True), which wav2vec2_lite does not implement"
            )
    for attr in ("feat_extract_activation", "hidden_act"):
        if getattr(hf, attr, "gelu") != "gelu":
            raise ConfigError(
                f"transformers config has {attr}={getattr(hf, attr)!r}; only 'gelu' is supported"
            )
    spec = bool(getattr(hf, "apply_spec_augment", True))
    fields = dict(
        conv_dim=tuple(hf.conv_dim),
        conv_kernel=tuple(hf.conv_kernel),
        conv_stride=tuple(hf.conv_stride),
        conv_bias=bool(hf.conv_bias),
        feat_extract_norm=hf.feat_extract_norm,
        masked_group_norm=False,  # transformers' numerics: GroupNorm statistics include padding
        feature_grad_mult=1.0,
        hidden_size=hf.hidden_size,
        layer_norm_eps=hf.layer_norm_eps,
        dropout_input=hf.feat_proj_dropout,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        ffn_dim=hf.intermediate_size,
        layer_norm_first=bool(hf.do_stable_layer_norm),
        dropout=hf.hidden_dropout,
        attention_dropout=hf.attention_dropout,
        activation_dropout=hf.activation_dropout,
        layerdrop=hf.layerdrop,
        pos_conv_kernel=hf.num_conv_pos_embeddings,
        pos_conv_groups=hf.num_conv_pos_embedding_groups,
        mask_time_prob=hf.mask_time_prob if spec else 0.0,
        mask_time_length=hf.mask_time_length,
        mask_time_min_masks=hf.mask_time_min_masks,
        mask_channel_prob=hf.mask_feature_prob if spec else 0.0,
        mask_channel_length=hf.mask_feature_length,
        contrastive=dict(
            num_code_groups=hf.num_codevector_groups,
            num_codes_per_group=hf.num_codevectors_per_group,
            codevector_dim=hf.codevector_dim,
            final_dim=hf.proj_codevector_dim,
            dropout_features=hf.feat_quantizer_dropout,
            num_negatives=hf.num_negatives,
            logit_temperature=hf.contrastive_logits_temperature,
            diversity_loss_weight=hf.diversity_loss_weight,
            feature_penalty_weight=0.0,
        ),
        vocab_size=hf.vocab_size,
        final_dropout=hf.final_dropout,
        ctc_zero_infinity=bool(hf.ctc_zero_infinity),
        ctc_loss_reduction=hf.ctc_loss_reduction,
    )
    return Wav2Vec2Config.from_dict(fields).replace(**overrides)


def config_to_hf(cfg: Wav2Vec2Config, *, pretraining: bool = True) -> Any:
    """Ours -> transformers ``Wav2Vec2Config``.

    Raises ``ConfigError`` for what transformers cannot represent (cross-utterance
    negatives); logs a warning for the pretraining-only options it ignores (feature penalty,
    encoder gradient scale) when ``pretraining``, and a note about masked GroupNorm, which
    only changes padded batches.
    """
    import transformers  # optional: transformers (hf extra)

    c = cfg.contrastive
    if c.cross_sample_negatives > 0 and pretraining:
        raise ConfigError(
            "transformers cannot represent cross_sample_negatives > 0 "
            "(its pretraining loss samples distractors within each utterance only)"
        )
    ignored = []
    if pretraining and c.feature_penalty_weight > 0:
        ignored.append(
            f"contrastive.feature_penalty_weight={c.feature_penalty_weight} (no L2 feature penalty)"
        )
    if pretraining and cfg.feature_grad_mult not in (0.0, 1.0):
        ignored.append(f"feature_grad_mult={cfg.feature_grad_mult}")
    if ignored:
        log.warning("transformers ignores these wav2vec2_lite options: %s", "; ".join(ignored))
    if cfg.feat_extract_norm == "group" and cfg.masked_group_norm:  # single utterances are unaffected
        log.info(
            "transformers' GroupNorm includes padding (masked_group_norm=True here): its outputs for padded "
            "batches differ from ours; unpadded utterances are the same"
        )
    return transformers.Wav2Vec2Config(
        conv_dim=list(cfg.conv_dim),
        conv_kernel=list(cfg.conv_kernel),
        conv_stride=list(cfg.conv_stride),
        conv_bias=cfg.conv_bias,
        feat_extract_norm=cfg.feat_extract_norm,
        feat_extract_activation="gelu",
        num_feat_extract_layers=len(cfg.conv_dim),
        hidden_size=cfg.hidden_size,
        layer_norm_eps=cfg.layer_norm_eps,
        feat_proj_dropout=cfg.dropout_input,
        feat_quantizer_dropout=c.dropout_features,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        do_stable_layer_norm=cfg.layer_norm_first,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        layerdrop=cfg.layerdrop,
        num_conv_pos_embeddings=cfg.pos_conv_kernel,
        num_conv_pos_embedding_groups=cfg.pos_conv_groups,
        num_codevector_groups=c.num_code_groups,
        num_codevectors_per_group=c.num_codes_per_group,
        codevector_dim=c.codevector_dim,
        proj_codevector_dim=c.final_dim,
        apply_spec_augment=cfg.mask_time_prob > 0 or cfg.mask_channel_prob > 0,
        mask_time_prob=cfg.mask_time_prob,
        mask_time_length=cfg.mask_time_length,
        mask_time_min_masks=cfg.mask_time_min_masks,
        mask_feature_prob=cfg.mask_channel_prob,
        mask_feature_length=cfg.mask_channel_length,
        num_negatives=c.num_negatives,
        contrastive_logits_temperature=c.logit_temperature,
        diversity_loss_weight=c.diversity_loss_weight,
        vocab_size=cfg.vocab_size,
        pad_token_id=0,
        final_dropout=cfg.final_dropout,
        ctc_zero_infinity=cfg.ctc_zero_infinity,
        ctc_loss_reduction=cfg.ctc_loss_reduction,
    )


def _our_class(hf_model: Any) -> type[nn.Module]:
    name = type(hf_model).__name__
    for ours, theirs in _HF_CLASS.items():
        if name == theirs:
            return ours
    raise TypeError(f"from_hf supports {sorted(_HF_CLASS.values())}; got {name}")


def _load_hf(path: str | Path) -> Any:
    """The transformers model of a local folder, refused when its config and weights disagree."""
    import transformers  # optional: transformers (hf extra)

    cfg = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    arch = (getattr(cfg, "architectures", None) or ["Wav2Vec2Model"])[0]
    if arch not in _HF_CLASS.values():
        raise TypeError(f"{path}: architecture {arch!r} is not one of {sorted(_HF_CLASS.values())}")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report: our errors below say it in one line
    try:
        hf, info = getattr(transformers, arch).from_pretrained(
            path, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    check_loading_info(info, hf.config, arch, _weights_file(path))
    return hf


def _weights_file(folder: str | Path) -> str:
    """The weights file of a transformers folder (what errors name); the folder when it has none."""
    return str(next((Path(folder) / w for w in HF_WEIGHTS if (Path(folder) / w).is_file()), folder))


def check_loading_info(info: dict[str, Any], hf_config: Any, arch: str, where: str) -> None:
    """Refuse what transformers' ``from_pretrained`` papers over (``output_loading_info=True``,
    ``ignore_mismatched_sizes=True``): a tensor whose shape differs from the config's, tensors the
    config's model has and the weights lack (initialised at random), tensors of the weights it has
    no place for (dropped; but :data:`~wav2vec2_lite.interop.keymap.DROPPED_ON_PURPOSE`, logged).
    One :class:`CheckpointError` line names ``where`` (the weights file), the tensors and, for a
    layer count or conv norm that differs, the ``config.json`` field."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: str(m[0]))
    if mismatched:
        key, theirs, ours = mismatched[0][:3]
        raise CheckpointError(
            f"{where}: config.json disagrees with the weights: {key} is {tuple(theirs)} in the weights and "
            f"{tuple(ours)} by the config"
            + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else "")
        )
    missing = sorted(info.get("missing_keys") or [])
    unexpected = split_dropped(
        "transformers",
        info.get("unexpected_keys") or [],
        where,
        model_has_objective=arch == "Wav2Vec2ForPreTraining",
    )
    if not missing and not unexpected:
        return
    what = []
    if missing:
        what.append(f"the model it describes has {len(missing)} tensor(s) the weights lack: {missing[:4]}")
    if unexpected:
        what.append(f"{len(unexpected)} weight tensor(s) have no place in it: {unexpected[:4]}")
    raise CheckpointError(
        f"{where}: config.json disagrees with the weights{_field_hint(missing, unexpected, hf_config)}: "
        + "; ".join(what)
    )


def _field_hint(missing: list[str], unexpected: list[str], hf_config: Any) -> str:
    """The config.json field a missing/unexpected set points at: the transformer's layer count
    (``num_hidden_layers``) or the conv norms (``feat_extract_norm``)."""
    n = hf_config.num_hidden_layers
    extra = {int(m.group(1)) for k in unexpected if (m := re.search(r"encoder\.layers\.(\d+)\.", k))}
    lacking = {int(m.group(1)) for k in missing if (m := re.search(r"encoder\.layers\.(\d+)\.", k))}
    if extra and min(extra) >= n:
        return f" (num_hidden_layers={n}; the weights hold {max(extra) + 1} transformer layers)"
    if lacking and lacking == set(range(min(lacking), n)):  # the top layers, all of them
        return f" (num_hidden_layers={n}; the weights hold {min(lacking)} transformer layers)"
    if any(re.search(r"conv_layers\.\d+\.layer_norm\.", k) for k in (*missing, *unexpected)):
        return f" (feat_extract_norm={hf_config.feat_extract_norm!r} does not match the weights' conv norms)"
    return ""


def from_hf(model_or_dir: Any, **overrides: Any) -> nn.Module:
    """A transformers Wav2Vec2Model / ForPreTraining / ForCTC (or a local folder of one) -> ours.

    Same weights and, by default, the same numerics (``masked_group_norm=False``); pass
    config ``overrides`` to change that or any training option. A folder whose ``config.json``
    disagrees with its weights (:func:`check_loading_info`), and non-finite weights, are a
    :class:`~wav2vec2_lite.serialization.CheckpointError` naming the file and the tensors.
    """
    from_folder = isinstance(model_or_dir, (str, Path))
    hf = _load_hf(model_or_dir) if from_folder else model_or_dir
    cls = _our_class(hf)
    check_finite(
        hf.state_dict(), _weights_file(model_or_dir) if from_folder else f"transformers {type(hf).__name__}"
    )
    if cls is Wav2Vec2ForCTC and getattr(hf.config, "pad_token_id", 0) != 0:
        raise ConfigError(
            f"CTC blank must be vocabulary index 0 (<pad>); this model's pad_token_id is "
            f"{hf.config.pad_token_id}"
        )
    cfg = config_from_hf(hf.config, **overrides)
    ours = cls(cfg)
    state = import_state_dict(
        ours.state_dict(), hf.state_dict(), _rules(cls), "transformers", optional=(r"(wav2vec2\.)?mask_emb",)
    )
    ours.load_state_dict(state, strict=True)
    return ours.train(hf.training)


def check_exportable(model: nn.Module) -> None:
    """``ConfigError`` (one line, the reason) when transformers has no model for ``model``: a
    quantized transformer input (fairseq ``quantize_input``), or a pretraining model whose
    targets transformers cannot compute (continuous targets, another objective)."""
    cls = type(model)
    if model.config.contrastive.quantize_input:
        raise ConfigError(
            "transformers' Wav2Vec2 has no input quantizer, and this model's transformer reads "
            "quantized features (contrastive.quantize_input=true, fairseq quantize_input)"
        )
    if cls is Wav2Vec2ForPreTraining and model.config.objective != "contrastive":
        raise ConfigError(
            f"transformers' Wav2Vec2ForPreTraining has only the contrastive objective; this model's "
            f"is {model.config.objective!r}: export its backbone (to_hf(model.wav2vec2)) or a CTC "
            "model fine-tuned from it"
        )
    if cls is Wav2Vec2ForPreTraining and not model.config.contrastive.quantize_targets:
        raise ConfigError(
            "transformers' Wav2Vec2ForPreTraining always quantizes its targets, and this model's "
            "are continuous (contrastive.quantize_targets=false): export its backbone "
            "(to_hf(model.wav2vec2)) or a CTC model fine-tuned from it"
        )


def to_hf(model: nn.Module) -> Any:
    """Ours -> a transformers instance of the matching class with the same weights. Refused
    (``ConfigError``) for what transformers cannot hold: a quantized transformer input, and a
    pretraining model with continuous targets or another objective (its backbone exports)."""
    import transformers  # optional: transformers (hf extra)

    cls = type(model)
    if cls not in _HF_CLASS:
        raise TypeError(f"to_hf supports {[c.__name__ for c in _HF_CLASS]}; got {cls.__name__}")
    check_exportable(model)
    hf = getattr(transformers, _HF_CLASS[cls])(
        config_to_hf(model.config, pretraining=cls is Wav2Vec2ForPreTraining)
    )
    target = hf.state_dict()
    state = export_state_dict(model.state_dict(), _rules(cls), {k: v.shape for k, v in target.items()})
    # transformers builds masked_spec_embed only when masking is configured
    state = {k: v for k, v in state.items() if k in target or not k.endswith("masked_spec_embed")}
    missing = sorted(set(target) - set(state))
    if missing:
        raise KeyError(f"to_hf: no value for transformers parameters {missing}")
    hf.load_state_dict(state, strict=True)
    return hf.train(model.training)
