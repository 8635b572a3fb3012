"""Small helpers shared by the test modules."""

from __future__ import annotations

import copy


def deep_merge(a: dict, b: dict) -> dict:
    """A copy of ``a`` with ``b`` merged in, nested dicts merged key by key."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
