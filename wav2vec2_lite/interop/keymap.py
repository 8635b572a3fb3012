"""Parameter-name maps between our modules and a foreign layout (transformers, fairseq).

A map is a list of ``(our_regex, foreign_templates)`` rules; a rule with several templates
concatenates those foreign tensors along dim 0 (our fused QKV projection). The codebook is
stored as (G, V, d) here and as (1, G·V, d) by both references.

Foreign tensors that find no place in our model are an error (:func:`split_dropped`), except
those a known conversion drops on purpose, listed in one place, :data:`DROPPED_ON_PURPOSE`,
and logged when dropped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Rule",
    "import_state_dict",
    "export_state_dict",
    "KnownDrop",
    "DROPPED_ON_PURPOSE",
    "split_dropped",
]

log = logging.getLogger(__name__)

Rule = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class KnownDrop:
    """Foreign tensors (``pattern``, a regex over the foreign name) that a conversion drops on
    purpose, and ``why``; ``without_objective``: only into a model without a pretraining
    objective (a backbone or a CTC model)."""

    source: str  # "transformers" | "fairseq"
    pattern: str
    why: str
    without_objective: bool = True


_PRETRAINING_ONLY = (
    "a pretraining checkpoint's quantizer and projections, which a backbone or CTC model built "
    "from it has no place for (they only compute pretraining targets)"
)
# The only foreign tensors ever dropped without an error. Everything else a checkpoint holds must
# find its place in our model: a missing or unexpected tensor means its config and weights disagree.
DROPPED_ON_PURPOSE: tuple[KnownDrop, ...] = (
    KnownDrop(
        "transformers",
        r"(quantizer\.codevectors|quantizer\.weight_proj\.\w+|project_q\.\w+|project_hid\.\w+)",
        _PRETRAINING_ONLY,
    ),
    KnownDrop(
        "transformers",
        r"(wav2vec2\.)?masked_spec_embed",
        "the mask embedding of a checkpoint saved with masking on, read with masking off "
        "(mask_time_prob = mask_feature_prob = 0: transformers builds none; only training masks)",
        without_objective=False,
    ),
    KnownDrop(
        "fairseq",
        r"(w2v_encoder\.w2v_model\.)?(quantizer\.vars|quantizer\.weight_proj\.\w+|project_q\.\w+"
        r"|final_proj\.\w+|target_glu\.0\.\w+)",
        _PRETRAINING_ONLY,
    ),
)


def split_dropped(source: str, unused: Iterable[str], where: str, *, model_has_objective: bool) -> list[str]:
    """Of the foreign tensors that found no place in our model, log those a known conversion drops
    on purpose (:data:`DROPPED_ON_PURPOSE` of ``source``; a pretraining checkpoint's target side
    only when the model has no pretraining objective to hold it) and return the others, sorted:
    an error for the caller to raise."""
    unused = sorted(unused)
    drops = [
        d
        for d in DROPPED_ON_PURPOSE
        if d.source == source and not (model_has_objective and d.without_objective)
    ]
    dropped = [k for k in unused if any(re.fullmatch(d.pattern, k) for d in drops)]
    if dropped:
        why = "; ".join(sorted({d.why for d in drops if any(re.fullmatch(d.pattern, k) for k in dropped)}))
        log.info("%s: dropped %d tensor(s) on purpose: %s (%s)", where, len(dropped), dropped, why)
    return [k for k in unused if k not in set(dropped)]


def _match(key: str, rules: list[Rule]) -> tuple[str, ...] | None:
    for pattern, templates in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return tuple(m.expand(t) for t in templates)
    return None


def import_state_dict(
    ours: Mapping[str, Tensor],
    foreign: Mapping[str, Tensor],
    rules: list[Rule],
    source: str,
    optional: tuple[str, ...] = (),
) -> dict[str, Tensor]:
    """Build our state dict (keys and shapes of ``ours``) from ``foreign`` tensors.

    Raises ``KeyError`` naming every missing foreign key and ``ValueError`` on a shape
    mismatch. Our keys matching a regex in ``optional`` keep their value when the foreign
    side lacks them (e.g. transformers omits the mask embedding when masking is off).
    """
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for key, ref in ours.items():
        names = _match(key, rules)
        if names is None:
            raise KeyError(f"no {source} name is known for our parameter {key!r}")
        if any(n not in foreign for n in names):
            if any(re.fullmatch(o, key) for o in optional):
                out[key] = ref.detach().clone()
            else:
                missing += [n for n in names if n not in foreign]
            continue
        used.update(names)
        value = torch.cat([foreign[n] for n in names], 0) if len(names) > 1 else foreign[names[0]]
        if value.numel() == ref.numel() and value.shape != ref.shape and key.endswith("codebook"):
            value = value.reshape(ref.shape)
        if value.shape != ref.shape:
            raise ValueError(
                f"{source} tensor {names} has shape {tuple(value.shape)}; "
                f"our {key!r} needs {tuple(ref.shape)} (do the configs match?)"
            )
        out[key] = value.detach().clone().to(ref.dtype)
    if missing:
        raise KeyError(
            f"{source} state dict lacks {len(missing)} tensor(s): {missing[:8]}"
            + (" ..." if len(missing) > 8 else "")
        )
    return out


def export_state_dict(
    ours: Mapping[str, Tensor], rules: list[Rule], foreign_shapes: Mapping[str, torch.Size] | None = None
) -> dict[str, Tensor]:
    """Our state dict -> foreign names (fused tensors split evenly along dim 0)."""
    out: dict[str, Tensor] = {}
    for key, value in ours.items():
        names = _match(key, rules)
        if names is None:
            raise KeyError(f"no foreign name is known for our parameter {key!r}")
        parts = value.chunk(len(names), 0) if len(names) > 1 else (value,)
        for name, part in zip(names, parts):
            if foreign_shapes is not None and name in foreign_shapes and part.shape != foreign_shapes[name]:
                part = part.reshape(foreign_shapes[name])
            out[name] = part.detach().clone()
    return out
