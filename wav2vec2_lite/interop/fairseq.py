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

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import ConfigError
from wav2vec2_lite.interop.fairseq_config import _config, _Source, config_from_fairseq
from wav2vec2_lite.interop.fairseq_literal import parse_fairseq_literal
from wav2vec2_lite.interop.keymap import Rule, export_state_dict, import_state_dict, split_dropped
from wav2vec2_lite.interop.safe_pickle import UntrustedCheckpointError, load_checkpoint
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.serialization import check_finite

__all__ = [
    "load_fairseq",
    "config_from_fairseq",
    "fairseq_state_dict_to_ours",
    "fairseq_rules",
    "parse_fairseq_literal",
    "UntrustedCheckpointError",
]

log = logging.getLogger(__name__)

CTC_PREFIX = "w2v_encoder.w2v_model."
CTC_HEAD = "w2v_encoder.proj"


# --------------------------------------------------------------------------- weights
def fairseq_rules(model: nn.Module) -> list[Rule]:
    """Our parameter names -> fairseq's, for a pretraining or CTC model of ours."""
    layer_norm_mode = model.config.feat_extract_norm == "layer"
    norm = (
        r"feature_extractor.conv_layers.\1.2.1.\2"
        if layer_norm_mode
        else r"feature_extractor.conv_layers.\1.2.\2"
    )
    backbone: list[Rule] = [
        (r"feature_encoder\.conv_layers\.(\d+)\.conv\.(\w+)", (r"feature_extractor.conv_layers.\1.0.\2",)),
        (r"feature_encoder\.conv_layers\.(\d+)\.norm\.(\w+)", (norm,)),
        (r"feature_projection\.layer_norm\.(\w+)", (r"layer_norm.\1",)),
        (r"feature_projection\.projection\.(\w+)", (r"post_extract_proj.\1",)),
        # quantize_input: input_quantizer + project_inp instead of post_extract_proj
        (r"feature_projection\.quantizer\.codebook", ("input_quantizer.vars",)),
        (r"feature_projection\.quantizer\.weight_proj\.(\w+)", (r"input_quantizer.weight_proj.\1",)),
        (r"feature_projection\.project_inp\.(\w+)", (r"project_inp.\1",)),
        (r"mask_emb", ("mask_emb",)),
        (r"context\.pos_conv\.conv\.bias", ("encoder.pos_conv.0.bias",)),
        (r"context\.pos_conv\.conv\.parametrizations\.weight\.original0", ("encoder.pos_conv.0.weight_g",)),
        (r"context\.pos_conv\.conv\.parametrizations\.weight\.original1", ("encoder.pos_conv.0.weight_v",)),
        (r"context\.layer_norm\.(\w+)", (r"encoder.layer_norm.\1",)),
        (
            r"context\.layers\.(\d+)\.attention\.qkv\.(\w+)",
            (
                r"encoder.layers.\1.self_attn.q_proj.\2",
                r"encoder.layers.\1.self_attn.k_proj.\2",
                r"encoder.layers.\1.self_attn.v_proj.\2",
            ),
        ),
        (
            r"context\.layers\.(\d+)\.attention\.out_proj\.(\w+)",
            (r"encoder.layers.\1.self_attn.out_proj.\2",),
        ),
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
            # quantize_targets (with same_quantizer: the input quantizer, under both names in both libraries)
            (r"objective\.quantizer\.codebook", ("quantizer.vars",)),  # (1, G·V, d) there, (G, V, d) here
            (r"objective\.quantizer\.weight_proj\.(\w+)", (r"quantizer.weight_proj.\1",)),
            (r"objective\.project_q\.(\w+)", (r"project_q.\1",)),
            (r"objective\.final_proj\.(\w+)", (r"final_proj.\1",)),
        ]
    raise TypeError(
        f"fairseq checkpoints load into Wav2Vec2ForPreTraining or Wav2Vec2ForCTC; got {type(model).__name__}"
    )


def fairseq_state_dict_to_ours(
    state: Mapping[str, Tensor], model: nn.Module, *, source: str = "fairseq"
) -> dict[str, Tensor]:
    """A fairseq ``model`` state dict -> the state dict of ``model`` (ours, built from the same config).

    Handles the layouts fairseq leaves implicit: no ``post_extract_proj`` when the conv
    width already equals the transformer width (identity), a positional convolution saved
    with torch parametrizations instead of ``weight_g``/``weight_v``, and a ``same_quantizer``
    state dict holding the shared quantizer under ``quantizer.*`` only. Raises ``KeyError``
    naming the missing tensors and those with no place in ``model`` (but the ones
    :data:`~wav2vec2_lite.interop.keymap.DROPPED_ON_PURPOSE` lists, logged), ``ConfigError`` for a
    shared codebook (combine_groups).
    """
    cfg = model.config
    prefix = CTC_PREFIX if isinstance(model, Wav2Vec2ForCTC) else ""
    foreign = dict(state)
    if cfg.contrastive.same_quantizer:  # fairseq saves the shared module twice; accept it once too
        for key in [k for k in foreign if k.startswith(f"{prefix}quantizer.")]:
            foreign.setdefault(f"{prefix}input_{key[len(prefix) :]}", foreign[key])
    for new, old in (
        ("weight_g", "parametrizations.weight.original0"),
        ("weight_v", "parametrizations.weight.original1"),
    ):
        key = f"{prefix}encoder.pos_conv.0.{old}"
        if key in foreign and f"{prefix}encoder.pos_conv.0.{new}" not in foreign:
            foreign[f"{prefix}encoder.pos_conv.0.{new}"] = foreign.pop(key)
    proj = f"{prefix}post_extract_proj.weight"
    if (
        proj not in foreign
        and not cfg.contrastive.quantize_input
        and cfg.conv_dim[-1] == cfg.hidden_size
        and f"{prefix}layer_norm.weight" in foreign
    ):
        ref = foreign[f"{prefix}layer_norm.weight"]
        foreign[proj] = torch.eye(cfg.hidden_size, dtype=ref.dtype)
        foreign[f"{prefix}post_extract_proj.bias"] = torch.zeros(cfg.hidden_size, dtype=ref.dtype)
    g, v = cfg.contrastive.num_code_groups, cfg.contrastive.num_codes_per_group
    for name in (f"{prefix}input_quantizer.vars", "quantizer.vars" if prefix == "" else None):
        rows = foreign[name].shape[1] if name in foreign and foreign[name].dim() == 3 else None
        if rows == v and g > 1:
            raise ConfigError(
                f"{source}: {name} holds {v} entries for {g} groups: the groups share one "
                "codebook (fairseq combine_groups), which is not supported"
            )
    rules = fairseq_rules(model)
    ours = model.state_dict()
    out = import_state_dict(ours, foreign, rules, source)
    used = set(export_state_dict(ours, rules))
    unexpected = split_dropped(
        "fairseq",
        (k for k in foreign if k not in used),
        source,
        model_has_objective=isinstance(model, Wav2Vec2ForPreTraining),
    )
    if unexpected:
        raise KeyError(
            f"{source}: {len(unexpected)} tensor(s) have no place in the {type(model).__name__} its "
            f"config describes: {unexpected[:8]}" + (" ..." if len(unexpected) > 8 else "")
        )
    return out


# --------------------------------------------------------------------------- loading
def load_fairseq(
    path: str | os.PathLike, *, trust: bool = False, map_location: Any = "cpu", **config_overrides: Any
) -> Wav2Vec2ForPreTraining | Wav2Vec2ForCTC:
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
        KeyError (tensors missing from the checkpoint, or with no place in the model its config
        describes, named), ValueError (a shape mismatch), CheckpointError (non-finite weights).
    """
    where = str(path)
    ckpt = load_checkpoint(
        path, trust=trust, map_location=map_location, how_to_trust="load_fairseq(path, trust=True)"
    )
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{where}: not a fairseq checkpoint: expected a dict with 'model' (the state dict) and "
            f"'args' or 'cfg'; found {keys}"
        )
    state = ckpt["model"]
    check_finite({k: v for k, v in state.items() if isinstance(v, Tensor)}, where)
    src = _Source(ckpt, f"fairseq checkpoint {where}", path=where)
    overrides = dict(config_overrides)
    if src.is_ctc:
        head = CTC_HEAD + ".weight"
        if head not in state:
            raise KeyError(
                f"{where}: fine-tuned checkpoint has no CTC head {head!r} (a seq2seq or feature-only model?)"
            )
        overrides.setdefault("vocab_size", int(state[head].shape[0]))
    cfg = _config(src, overrides)
    model = (Wav2Vec2ForCTC if src.is_ctc else Wav2Vec2ForPreTraining)(cfg)
    try:
        weights = fairseq_state_dict_to_ours(state, model, source=f"fairseq checkpoint {where}")
    except KeyError as e:
        raise KeyError(f"{e.args[0]} (does the checkpoint match its own config? arch {src.arch!r})") from None
    model.load_state_dict(weights, strict=True)
    return model.eval()
