"""Small helpers shared by the test modules."""

from __future__ import annotations

import copy


def deep_merge(a: dict, b: dict) -> dict:
    """A copy of ``a`` with ``b`` merged in, nested dicts merged key by key."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def padded_inputs(padded: bool):
    """A fixed (2, 4000) wave and its attention mask (ones = valid); row 1 padded after 2900 samples."""
    import torch

    g = torch.Generator().manual_seed(123)
    wave = torch.randn(2, 4000, generator=g)
    attention = torch.ones(2, 4000, dtype=torch.long)
    if padded:
        attention[1, 2900:] = 0
        wave[1, 2900:] = 0.0
    return wave, attention


def dotted_overrides(values: dict, prefix: str = "model") -> list[str]:
    """Hydra command-line overrides for a (nested) dict of config values: ``prefix.a.b=v``."""
    import json

    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += dotted_overrides(value, f"{prefix}.{key}")
        else:
            literal = json.dumps(list(value) if isinstance(value, tuple) else value).replace(" ", "")
            out.append(f"{prefix}.{key}={literal}")
    return out
