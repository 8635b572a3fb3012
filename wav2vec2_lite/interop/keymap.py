"""Parameter-name maps between our modules and a foreign layout (transformers, fairseq).

A map is a list of ``(our_regex, foreign_templates)`` rules; a rule with several templates
concatenates those foreign tensors along dim 0 (our fused QKV projection). The codebook is
stored as (G, V, d) here and as (1, G·V, d) by both references.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["Rule", "import_state_dict", "export_state_dict"]

Rule = tuple[str, tuple[str, ...]]


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
