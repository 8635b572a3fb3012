"""Mixed precision with the Linear weights cast in one op (train/low_precision_weights.py)."""

from __future__ import annotations

import copy

import torch

from wav2vec2_lite.serialization import load_model, save_model
from wav2vec2_lite.tools import benchmarking as B
from wav2vec2_lite.tools.op_census import census
from wav2vec2_lite.train.low_precision_weights import LowPrecisionWeights


def _setup():
    spec = B.BenchSpec(config="tiny", task="pretrain", dtype="bfloat16", seconds=1.0, threads=1)
    cfg = spec.model_config()
    return B._ours_model(spec, cfg), B._inputs(spec, cfg)


def _step(model, x, weights=None):
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if weights is None:
            loss = model(x["wave"], mask_indices=x["mask"], negative_indices=x["negatives"]).loss
        else:
            with weights.cast():
                loss = model(x["wave"], mask_indices=x["mask"], negative_indices=x["negatives"]).loss
    loss.backward()
    return loss.detach()


def test_one_flat_cast_gives_autocasts_numbers_with_fewer_casts():
    plain, x = _setup()
    flat = copy.deepcopy(plain)
    weights = LowPrecisionWeights(flat, torch.bfloat16)
    assert weights.bound() and len(weights.params) > 10
    assert torch.equal(_step(plain, x), _step(flat, x, weights))
    for (name, a), b in zip(plain.named_parameters(), flat.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name
            assert b.grad.dtype == torch.float32
    before, after = census(lambda: _step(plain, x)), census(lambda: _step(flat, x, weights))
    assert after.cast_calls <= before.cast_calls - 2 * len(weights.params) + 2
    assert after.flops == before.flops  # the same work in the same dtypes
    assert all(layer.low_precision is None for layer in weights.layers)  # nothing left behind


def test_a_bound_model_saves_loads_and_rebinds(tmp_path):
    model, x = _setup()
    weights = LowPrecisionWeights(model, torch.bfloat16)
    _step(model, x, weights)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # an optimizer step writes through the views into the flat buffer
    save_model(model, tmp_path / "m")  # safetensors refuses shared storage: saved as copies
    loaded = load_model(tmp_path / "m")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # storage swapped behind its back (assign=True): noticed and bound again, with the new values
    model.load_state_dict({k: v * 2 for k, v in loaded.state_dict().items()}, assign=True)
    assert not weights.bound()
    with weights.cast():
        layer = weights.layers[0]
        assert torch.equal(layer.low_precision[0], (loaded.state_dict()[_name(model, layer)] * 2).bfloat16())
    assert weights.bound()


def _name(model, layer) -> str:
    return next(n for n, m in model.named_modules() if m is layer) + ".weight"
