"""Small helpers shared by the test modules."""

from __future__ import annotations

import copy

# A 2-layer model small enough for many short training runs in the tests. Its positional conv
# (4 channels per group, kernel 16) is one of the shapes oneDNN's bf16 convolution gets wrong
# on AMX CPUs: it must stay float32 (tests/test_inference_dtype.py).
MICRO_MODEL = dict(
    preset="tiny",
    num_layers=2,
    hidden_size=64,
    ffn_dim=128,
    num_heads=2,
    conv_dim=[32] * 7,
    pos_conv_kernel=16,
    pos_conv_groups=16,
    mask_time_length=3,
    mask_time_prob=0.5,
    layerdrop=0.0,
    contrastive=dict(codevector_dim=32, final_dim=32, num_codes_per_group=16, num_negatives=10),
)

# A 1-layer model as command-line overrides, for the tests that run the console scripts.
CLI_MICRO_MODEL = [
    "model.num_layers=1",
    "model.hidden_size=64",
    "model.num_heads=2",
    "model.ffn_dim=64",
    "model.conv_dim=[16,16,16,16,16,16,16]",
    "model.contrastive.num_codes_per_group=8",
    "model.contrastive.num_negatives=5",
]


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
