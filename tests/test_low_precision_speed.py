"""The low-precision speed transform (wav2vec2_lite/low_precision_speed.py) against the plain modules."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from _bf16_convs import rounded_bf16_convs
from torch import nn

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForPreTraining
from wav2vec2_lite import low_precision_speed as S
from wav2vec2_lite.inference_dtype import cast_for_inference
from wav2vec2_lite.modules.feature_encoder import FeatureEncoder
from wav2vec2_lite.serialization import load_model, save_model
from wav2vec2_lite.tools import hardware
from wav2vec2_lite.tools.op_census import census

from _helpers import MICRO_MODEL
from _tolerance import relative_error

AMX = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
AVX512_BF16 = ["avx2", "avx512f", "avx512_bf16"]
AVX2 = ["avx2"]
ALL = S.SpeedPlan(flat_weights=True, unfolded_convs=True, attention=True)


def _cpu(monkeypatch, flags):
    monkeypatch.setattr(
        "wav2vec2_lite.tools.hardware.cpu_kind",
        lambda: {"model": "test", "flags": flags, "torch_capability": "AVX512", "machine": "x86_64"},
    )


def _micro(**kw) -> Wav2Vec2Config:
    return Wav2Vec2Config.tiny(**{k: v for k, v in MICRO_MODEL.items() if k != "preset"} | kw)


def _pretraining(**kw) -> Wav2Vec2ForPreTraining:
    torch.manual_seed(0)
    return Wav2Vec2ForPreTraining(_micro(**kw)).train()


def _step(model, wave, speedup=None, autocast=True):
    """Loss and every parameter's gradient of one pretraining step (same masks, dropout draws)."""
    model.zero_grad()
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with speedup.cast() if speedup is not None else torch.autocast("cpu", enabled=autocast):
            loss = model(wave, generator=torch.Generator().manual_seed(3)).loss
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def _fast_types(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m) in S._PLAIN}


# ----------------------------------------------------------------------------- the plan per CPU

NO_AMX = ALL  # the unfolded convs are as fast as oneDNN's bf16 convs without AMX (docstring below)
EMULATED = S.SpeedPlan(flat_weights=True, unfolded_convs=False, attention=False)


@pytest.mark.parametrize(
    "flags, cap, kind",
    [
        (AMX, None, "amx"),
        (AVX512_BF16, None, "avx512_bf16"),
        (AVX2, None, "emulated"),
        (AMX, "AVX512_CORE_BF16", "avx512_bf16"),  # oneDNN kept off AMX: its bf16 kernels are AVX-512's
        (AMX, "AVX10_1_512", "avx512_bf16"),
        (AMX, "AVX512_CORE_AMX", "amx"),
        (AMX, "AVX512_CORE", "emulated"),  # no bf16 dot products either
        (AVX512_BF16, "AVX2", "emulated"),
        (AVX2, "AVX512_CORE_AMX", "emulated"),  # a cap never adds what the CPU lacks
        (None, None, None),
    ],
)
def test_the_cpu_kind_is_its_flags_under_onednns_cap(flags, cap, kind):
    assert hardware.bf16_kind(flags, cap) == kind


@pytest.mark.parametrize(
    "environ, cap",
    [
        ({}, None),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "AVX512_CORE_BF16"),
        ({"DNNL_MAX_CPU_ISA": "AVX2"}, "AVX2"),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "DNNL_MAX_CPU_ISA": "AVX2"}, "AVX512_CORE_AMX"),
        ({"ONEDNN_MAX_CPU_ISA": "ALL"}, None),
        ({"ONEDNN_MAX_CPU_ISA": "NOT_AN_ISA"}, None),  # oneDNN ignores a name it does not know
    ],
)
def test_onednns_isa_cap_is_read_from_the_environment(environ, cap):
    assert hardware.onednn_isa_cap(environ) == cap


@pytest.mark.parametrize("kind, want", [("amx", ALL), ("avx512_bf16", NO_AMX), ("emulated", EMULATED)])
def test_the_plan_is_a_function_of_the_cpu_kind(kind, want):
    """bf16 dot products, with AMX or without (AMD EPYC/Ryzen with avx512_bf16): every fast path;
    without AMX the unfolded convs run within 4 % of oneDNN's bf16 convs forward and 10 % faster
    backward, and several times faster than float32 convs where bf16 matmuls are (the EPYC: 883 vs
    207 GFLOP/s; docs/benchmarks/2026-12-06_no_amx_emulated.md). Emulated bf16 (AVX2): flat weights
    only. Other devices and dtypes: flat weights only."""
    assert S.plan_for("cpu", torch.bfloat16, kind) == want
    assert S.plan_for("cuda", torch.bfloat16, kind) == S.SpeedPlan(flat_weights=True)
    assert S.plan_for("cpu", torch.float16, kind) == S.SpeedPlan(flat_weights=True)
    with pytest.raises(ValueError, match="cpu_bf16"):
        S.plan_for("cpu", torch.bfloat16, "avx512")


@pytest.mark.parametrize(
    "flags, cap, want",
    [
        (AMX, None, ALL),
        (AVX512_BF16, None, NO_AMX),
        (AVX2, None, EMULATED),
        (AMX, "AVX512_CORE_BF16", NO_AMX),
    ],
)
def test_the_plan_follows_the_cpu_flags(monkeypatch, flags, cap, want):
    """choose_plan reads the flags (and oneDNN's ISA cap) at run time; what is swapped in follows
    the plan, for training and for bf16 inference."""
    _cpu(monkeypatch, flags)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert S.choose_plan("cpu", torch.bfloat16) == want
    assert S.choose_plan("cuda", torch.bfloat16) == S.SpeedPlan(flat_weights=True)
    model = _pretraining(attention_dropout=0.1)
    speedup = S.speed_up_training(model, torch.bfloat16)
    assert speedup.plan == want
    expected = {"FastLinear"}
    expected |= {"FastFeatureEncoder", "FastConvLayer", "CastConv1d"} if want.unfolded_convs else set()
    expected |= {"FastSelfAttention"} if want.attention else set()
    assert _fast_types(model) == expected
    # inference: the encoder's convs stored bf16 and unfolded with native bf16, float32 otherwise
    cast_for_inference(model, "bf16")
    encoder = model.wav2vec2.feature_encoder
    assert {p.dtype for p in encoder.parameters() if p.dim() == 3} == {
        torch.bfloat16 if want.unfolded_convs else torch.float32
    }
    assert _fast_types(model) == ({"FastFeatureEncoder", "FastConvLayer"} if want.unfolded_convs else set())
    assert model.wav2vec2.context.layers[0].attention.qkv.weight.dtype == torch.bfloat16
    cast_for_inference(model, "float32")
    assert _fast_types(model) == set() and {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_cpu_without_cpuinfo_asks_torch(monkeypatch):
    _cpu(monkeypatch, None)
    monkeypatch.setattr("wav2vec2_lite.tools.hardware.native_bf16", lambda device="cpu": True)
    assert S.choose_plan("cpu") == NO_AMX
    monkeypatch.setattr("wav2vec2_lite.tools.hardware.native_bf16", lambda device="cpu": False)
    assert S.choose_plan("cpu") == EMULATED


# ----------------------------------------------------------------------------- same model, same float32 run


def test_keys_values_and_a_float32_step_are_unchanged():
    """Swapping keeps the state dict (keys and values) and, outside autocast, the plain numbers
    bit for bit; plain_modules swaps back."""
    plain = _pretraining(attention_dropout=0.1)
    fast = copy.deepcopy(plain)
    speedup = S.speed_up_training(fast, torch.bfloat16, ALL)
    assert _fast_types(fast) == {
        "FastLinear",
        "FastFeatureEncoder",
        "FastConvLayer",
        "CastConv1d",
        "FastSelfAttention",
    }
    a, b = plain.state_dict(), fast.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    wave = torch.randn(2, 8000)
    ref_loss, ref_grads = _step(plain, wave, autocast=False)
    loss, grads = _step(fast, wave, autocast=False)
    assert torch.equal(loss, ref_loss) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads))
    assert speedup.weights.bound()
    S.plain_modules(fast)
    assert _fast_types(fast) == set()


# ----------------------------------------------------------------------------- flat weights


def test_flat_weights_give_autocasts_numbers_with_fewer_casts():
    """One cast op for all weights, one gather for their gradients: autocast's values, bit for bit."""
    plain = _pretraining()
    flat = copy.deepcopy(plain)
    speedup = S.speed_up_training(flat, torch.bfloat16, S.SpeedPlan(flat_weights=True))
    weights = speedup.weights
    assert weights.bound() and len(weights.params) > 10
    wave = torch.randn(2, 8000)
    loss, grads = _step(flat, wave, speedup)
    ref_loss, ref_grads = _step(plain, wave)
    assert torch.equal(loss, ref_loss)
    for (name, _), g, r in zip(plain.named_parameters(), grads, ref_grads):
        assert (g is None) == (r is None), name
        if g is not None:
            assert torch.equal(g, r) and g.dtype == torch.float32, name
    before, after = census(lambda: _step(plain, wave)), census(lambda: _step(flat, wave, speedup))
    assert after.cast_calls <= before.cast_calls - 2 * len(weights.params) + 2
    assert after.flops == before.flops  # the same work in the same dtypes
    assert all(layer.cast_weights is None for layer in weights.layers)  # nothing left behind
    # the unfolded convs' weights in the flat buffer: the numbers of casting them at each use
    unfolded = copy.deepcopy(plain)
    both = copy.deepcopy(plain)
    S.speed_up_training(unfolded, torch.bfloat16, ALL, flat_weights=False)
    speedup = S.speed_up_training(both, torch.bfloat16, ALL)
    assert any(isinstance(m, S.CastConv1d) for m in speedup.weights.layers)
    ref_loss, ref_grads = _step(unfolded, wave)
    loss, grads = _step(both, wave, speedup)
    assert torch.equal(loss, ref_loss) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads))


def test_flat_buffers_are_reused_only_when_nothing_else_holds_them():
    """The cast and gradient buffers are reused from step to step (no fresh pages to fault in),
    but never while a graph, a view or a ``.grad`` still uses them: two forwards before their
    backwards, gradients accumulated over steps and a graph run backward twice give autocast's
    numbers."""
    plain = _pretraining()
    flat = copy.deepcopy(plain)
    speedup = S.speed_up_training(flat, torch.bfloat16, S.SpeedPlan(flat_weights=True))
    weights = speedup.weights
    wave = torch.randn(2, 8000)
    _step(flat, wave, speedup)
    cast_ptr, grad_ptr = weights.cast_buffer.buffer.data_ptr(), weights.grad_buffer.buffer.data_ptr()
    flat.zero_grad()  # set_to_none: the gradient buffer is free again
    loss, grads = _step(flat, wave, speedup)
    assert weights.cast_buffer.buffer.data_ptr() == cast_ptr
    assert weights.grad_buffer.buffer.data_ptr() == grad_ptr
    ref_loss, ref_grads = _step(plain, wave)
    assert torch.equal(loss, ref_loss) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads))

    def forward(model, seed, cast):
        torch.manual_seed(seed)
        with torch.autocast("cpu", dtype=torch.bfloat16), cast():
            return model(wave, generator=torch.Generator().manual_seed(seed)).loss

    def accumulated(model, cast):
        model.zero_grad()
        first = forward(model, 1, cast)
        second = forward(model, 2, cast)  # the first graph still holds its cast weights
        if cast is speedup.cast:
            assert weights.cast_buffer.buffer.data_ptr() != cast_ptr  # so the second got its own
        second.backward()
        first.backward()  # accumulates into the .grad views of the second's gradient buffer
        forward(model, 3, cast).backward()
        return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]

    def twice(model, cast):
        model.zero_grad()
        model.wav2vec2.feature_encoder.lean_backward = False  # LeanConvStack runs backward once
        again = forward(model, 4, cast)
        again.backward(retain_graph=True)  # .grad: views of this pass's buffer
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(3)
        again.backward()  # the second pass over the graph must not write into those views
        return [p.grad for p in model.parameters()]

    for run in (accumulated, twice):
        expected, got = run(plain, contextlib.nullcontext), run(flat, speedup.cast)
        for (name, _), r, g in zip(plain.named_parameters(), expected, got):
            assert (r is None) == (g is None), (run.__name__, name)
            assert r is None or torch.equal(r, g), (run.__name__, name)


def test_a_bound_model_saves_loads_and_rebinds(tmp_path):
    model = _pretraining()
    speedup = S.speed_up_training(model, torch.bfloat16, ALL)
    weights = speedup.weights
    _step(model, torch.randn(2, 8000), speedup)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # an optimizer step writes through the views into the flat buffer
    save_model(model, tmp_path / "m")  # safetensors refuses shared storage: saved as copies
    loaded = load_model(tmp_path / "m")
    assert _fast_types(loaded) == set()  # a checkpoint is the plain model
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # storage swapped behind its back (assign=True): noticed and bound again, with the new values
    model.load_state_dict({k: v * 2 for k, v in loaded.state_dict().items()}, assign=True)
    assert not weights.bound()
    with weights.cast():
        layer = weights.layers[0]
        name = next(n for n, m in model.named_modules() if m is layer) + ".weight"
        assert torch.equal(layer.cast_weights[0], (loaded.state_dict()[name] * 2).bfloat16())
    assert weights.bound()


# ----------------------------------------------------------------------------- unfolded convs


def _encoder_step(enc, wave):
    enc.zero_grad()
    wave = wave.detach().requires_grad_()
    out = enc(wave)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weight).sum().backward()
    return [out.detach().float(), wave.grad] + [p.grad for p in enc.parameters()]


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("lean", [True, False])
def test_unfolded_convs_stay_within_bf16_rounding_of_float32(norm, lean):
    """The fast encoder under CPU bf16 autocast (bf16 matmuls over unfolded windows, norms on bf16
    with float32 statistics, a bf16 backward), LeanConvStack or the module path: output, input
    gradient and every parameter gradient within 3x what exact-kernel bf16 moves them from
    float32 (tests/_bf16_convs.py). The shapes include those oneDNN's bf16 convs get wrong
    (16 channels, kernel 4 and 16), where a wrong kernel errs by O(1)."""
    torch.manual_seed(0)
    cfg = _micro(
        conv_dim=[16, 16, 16],
        conv_kernel=[10, 4, 16],
        conv_stride=[5, 4, 4],
        feat_extract_norm=norm,
        conv_bias=norm == "layer",
        feature_grad_mult=1.0,
    )
    plain = FeatureEncoder(cfg, lean_backward=False)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.1 * torch.randn_like(p))
    wave = torch.randn(2, 16000)
    ref = _encoder_step(plain, wave)
    spread = [0.0] * len(ref)
    for seed in range(4):
        with rounded_bf16_convs(torch.Generator().manual_seed(seed)):
            draw = _encoder_step(plain, wave)
        spread = [max(s, relative_error(d, r)) for s, d, r in zip(spread, draw, ref)]
    fast = copy.deepcopy(plain)
    fast.lean_backward = lean
    speedup = S.speed_up_training(fast, torch.bfloat16, ALL)
    with torch.autocast("cpu", dtype=torch.bfloat16), speedup.cast():
        got = _encoder_step(fast, wave)
    assert all(g.dtype == torch.float32 for g in got[1:])
    names = ["output", "wave"] + [n for n, _ in plain.named_parameters()]
    errors = {n: (relative_error(g, r), s) for n, g, r, s in zip(names, got, ref, spread)}
    print({n: f"{e:.2g} (bf16 rounding {s:.2g})" for n, (e, s) in errors.items()})
    for name, (err, rounding) in errors.items():
        if norm == "layer" and ".norm." in name:
            assert 0 < err < 0.15, (name, err, rounding)  # the kernel's bf16 row sums (docstring)
        else:
            assert 0 < err <= 3 * rounding, (name, err, rounding)


def test_unfolded_conv1d_backward_is_the_convolutions():
    torch.manual_seed(0)
    for c_in, k, stride in ((1, 10, 5), (16, 3, 2), (16, 2, 2)):
        conv = nn.Conv1d(c_in, 8, k, stride=stride).double()
        x = torch.randn(2, c_in, 301, dtype=torch.float64, requires_grad=True)
        y = conv(x)
        g = torch.randn_like(y)
        want = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
        got = S.UnfoldedConvs.backward(g, x.detach(), conv, conv.weight, torch.float64, True, 0)
        for a, b in zip(got, want):  # float64 throughout: equal up to summation order
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- attention


def test_bf16_attention_with_dropout_never_leaves_bf16():
    """With attention dropout under CPU autocast the fast attention core computes in bf16 only
    (torch's SDPA would cast q, k, v up); without dropout it is SDPA, as plain."""
    model = _pretraining(attention_dropout=0.1)
    attention = model.wav2vec2.context.layers[0].attention
    S.speed_up_training(model, torch.bfloat16, ALL)
    q, k, v = (torch.randn(2, 2, 30, 32).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = census(lambda: attention.core(q, k, v, None, 0.1))
        torch.manual_seed(0)
        no_dropout = attention.core(q, k, v, None, 0.0)
    assert r.cast_calls == 0 and set(r.flops) == {"bfloat16"}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(no_dropout, F.scaled_dot_product_attention(q, k, v, None, 0.0))


# ----------------------------------------------------------------------------- compile_dense and DDP


def test_the_transform_under_ddp(tmp_path):
    """DDP (one gloo process) over a swapped model: the flat weights' gradients reach DDP's
    hooks, and the step's loss and gradients are the unwrapped model's. (It runs before the compile
    test: a gloo group started after inductor's compile workers hung here.)"""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _pretraining()
    twin = copy.deepcopy(model)
    speedup = S.speed_up_training(model, torch.bfloat16, ALL)
    twin_speedup = S.speed_up_training(twin, torch.bfloat16, ALL)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DDP(twin)
        wave = torch.randn(2, 8000)
        ref_loss, ref_grads = _step(model, wave, speedup)
        for p in twin.parameters():
            p.grad = None
        torch.manual_seed(5)
        with torch.autocast("cpu", dtype=torch.bfloat16), twin_speedup.cast():
            loss = wrapped(wave, generator=torch.Generator().manual_seed(3)).loss
        loss.backward()
    finally:
        dist.destroy_process_group()
    assert torch.equal(loss.detach(), ref_loss)
    for (name, p), r in zip(twin.named_parameters(), ref_grads):
        assert (p.grad is None) == (r is None), name
        if r is not None:
            assert torch.equal(p.grad, r), name


def test_the_transform_compiles_without_graph_breaks():
    """compile_dense after the transform: the same bf16 step, no graph break (dropout off so that
    both draw nothing). Compiled kernels fuse, so the loss agrees to bf16 rounding, not bit for bit."""
    from torch._dynamo.utils import counters

    from wav2vec2_lite.compile import compile_dense

    model = _pretraining(attention_dropout=0.0)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    twin = copy.deepcopy(model)
    eager = S.speed_up_training(model, torch.bfloat16, ALL)
    compiled = S.speed_up_training(twin, torch.bfloat16, ALL)
    compile_dense(twin)
    counters.clear()
    wave = torch.randn(2, 8000)
    ref_loss, ref_grads = _step(model, wave, eager)
    loss, grads = _step(twin, wave, compiled)
    assert not counters["graph_break"]
    assert relative_error(loss, ref_loss) < 1e-2
    assert all(relative_error(g, r) < 5e-2 for g, r in zip(grads, ref_grads) if r is not None)
