"""Counting casts and FLOPs by dtype (tools/op_census.py), and the bf16 step's casts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wav2vec2_lite.low_precision_speed import low_precision_attention
from wav2vec2_lite.tools import benchmarking as B
from wav2vec2_lite.tools.op_census import census

from _tolerance import assert_float32_close, float32_excess


def test_census_counts_casts_and_flops_by_dtype():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    r = census(lambda: (a.bfloat16() @ b.bfloat16()).float() + a.sum())
    assert r.cast_calls == 3 and r.casts_by_kind == {"float32->bfloat16": 2, "bfloat16->float32": 1}
    assert r.cast_bytes == 8 * 16 * 2 + 16 * 4 * 2 + 8 * 4 * 4
    assert r.flops == {"bfloat16": 2 * 8 * 16 * 4} and r.flop_share("bfloat16") == 1.0
    x, w = torch.randn(2, 3, 50), torch.randn(5, 3, 4)
    r = census(lambda: F.conv1d(x, w, stride=2))
    assert r.cast_calls == 0 and r.flops == {"float32": 2 * (2 * 5 * 24) * 3 * 4}
    assert census(lambda: a.clone()).cast_calls == 0  # a copy in the same dtype is not a cast
    parts, out = [a.bfloat16().reshape(-1), b.bfloat16().reshape(-1)], torch.empty(8 * 16 + 16 * 4)
    r = census(lambda: torch.cat(parts, out=out))  # a gather into a buffer of another dtype casts
    assert (
        r.cast_calls == 1 and r.casts_by_kind == {"bfloat16->float32": 1} and r.cast_bytes == out.numel() * 4
    )


def test_low_precision_attention_matches_sdpa_and_never_leaves_bf16():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    mask = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    mask[1, ..., 30:] = False  # padded keys of the second utterance
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    assert_float32_close(low_precision_attention(q, k, v, mask), ref, exact)  # same math in float32
    assert float32_excess(low_precision_attention(q * (1 + 1e-3), k, v, mask), ref, exact) > 1
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    out = low_precision_attention(qb, kb, vb, mask)

    def r(t):  # what a bf16 kernel stores: the exact result rounded to bf16
        return t.detach().bfloat16().double()

    scores = (r(r(qb) * 16**-0.5) @ r(kb).transpose(-2, -1)).masked_fill(~mask, float("-inf"))
    rounded = r(r(r(scores).softmax(-1)) @ r(vb))  # exact bf16 kernels, float32-or-better sums
    bound = 2 * float((rounded - ref).abs().max())  # how far bf16 rounding alone moves it
    assert out.dtype == torch.bfloat16 and 0 < float((out.detach().float() - ref).abs().max()) <= bound
    r = census(lambda: low_precision_attention(qb, kb, vb, mask, 0.1).sum().backward())
    assert r.cast_calls == 0 and set(r.flops) == {"bfloat16"}
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in (qb, kb, vb))
    # dropout zeroes whole attention weights: a row's outputs are no longer a convex combination
    torch.manual_seed(1)
    dropped = low_precision_attention(qb, kb, vb, mask, 0.5)
    assert not torch.equal(dropped, out)


@pytest.mark.parametrize("task", ["pretrain", "infer"])
def test_bf16_step_census_of_the_tiny_model(task, monkeypatch):
    """The benchmark's bf16 steps (pretraining: autocast; inference: bf16 weights): attention
    with dropout stays bf16 (no float32 SDPA fallback), so the casts are the weights' and the
    float32 islands' (convs, norms, losses). The speed transform's plan of a CPU with AMX."""
    monkeypatch.setattr(
        "wav2vec2_lite.tools.hardware.cpu_kind",
        lambda: {"model": "test", "flags": ["avx512_bf16", "amx_bf16"], "torch_capability": "AVX512"},
    )
    spec = B.BenchSpec(config="tiny", task=task, dtype="bfloat16", seconds=1.0, threads=1)
    cfg = spec.model_config()
    step = B._step_fn("ours", B._ours_model(spec, cfg), spec, B._inputs(spec, cfg))
    r = census(step)
    spec32 = B.BenchSpec(**{**spec.__dict__, "dtype": "float32"})
    fp32 = census(B._step_fn("ours", B._ours_model(spec32, cfg), spec32, B._inputs(spec32, cfg)))
    assert fp32.flop_share("bfloat16") == 0.0
    assert sum(r.flops.values()) == pytest.approx(
        sum(fp32.flops.values()), rel=0.02
    )  # same work, other dtypes
    assert r.flop_share("bfloat16") > 0.4
    print(task, r.to_dict())
    if task == "pretrain":
        # 168 casts and a bf16 share of 0.43 before: attention with dropout kept in bf16, the
        # feature encoder's convs in bf16 (unfolded matmuls), the weights cast in one op
        # (low_precision_speed with AMX, as the trainer applies it); what is left is the float32
        # residual stream's
        assert r.cast_calls <= 70 and r.flop_share("bfloat16") > 0.55
