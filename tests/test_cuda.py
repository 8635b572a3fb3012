"""The CUDA path: mixed precision with the trainer, fused attention, deterministic resume, HF
parity in float32, pinned loading, ``torch.compile``.

Tests marked ``cuda`` run only where torch sees a CUDA GPU (``pytest -m cuda``, or
``bash scripts/gpu_check.sh``, which also benchmarks against transformers); elsewhere they are
skipped with the reason. The unmarked tests check on the CPU what the CUDA path relies on: the
fp16 overflow path through the trainer (CPU fp16 autocast with a ``GradScaler("cpu")``), what our
attention hands to ``scaled_dot_product_attention`` (the conditions of torch's fused kernels),
the deterministic set-up, the non-blocking copies, and ``gpu_check.sh`` on a machine without CUDA.

Tolerances are derived from the computation (tests/_tolerance.py): a float32 result is compared
with the float64 result of the same computation, and another float32 kernel may differ from the
reference by a few times the reference's own rounding error; a low-precision run is compared
with how far stochastic rounding to its dtype alone moves the same value.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.modules.context import SelfAttention
from wav2vec2_lite.train import trainer as trainer_module
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.precision import Precision
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import Trainer

from _bf16 import _LOW_PRECISION_OPS as _LOW_OPS  # what autocast runs in low precision
from _helpers import MICRO_MODEL, deep_merge, padded_inputs
from _tolerance import assert_float32_close

# cuBLAS is deterministic only with a fixed workspace, and reads this when it is first used in the
# process: set before any test touches CUDA (scripts/gpu_check.sh exports it too). No effect on CPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

REPO = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA,
    reason="needs a CUDA GPU (torch.cuda.is_available() is False here); on a GPU: pytest -m cuda, "
    "or bash scripts/gpu_check.sh",
)


def on_cuda(fn):
    """Marked ``cuda`` (``pytest -m cuda`` selects it) and skipped without a GPU."""
    return pytest.mark.cuda(needs_cuda(fn))


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_cuda])]

# Dropout off where two runs must differ by rounding alone: CUDA's dropout kernels map random
# numbers to elements by vector width, which depends on the dtype, so float32 and bf16 runs would
# draw different masks. Masks, distractors and Gumbel noise come from the trainer's CPU generator.
NO_DROPOUT = dict(
    dropout_input=0.0,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    layerdrop=0.0,
    contrastive=dict(dropout_features=0.0),
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(
        tmp_path_factory.mktemp("toy"), train=32, valid=0, seed=0, min_words=2, max_words=3
    )


def make_cfg(task: str, corpus: Path, device: str, precision: str = "32", **over):
    base = {
        "task": task,
        "model": dict(MICRO_MODEL),
        "data": {
            "manifest_dir": str(corpus),
            "valid_subset": None,
            "max_sample_size": 12000 if task == "pretrain" else None,
            "min_sample_size": 4000 if task == "pretrain" else 0,
            "max_tokens": 48000,
        },
        "optim": {"lr": 2e-3, "clip_norm": 5.0},
        "schedule": {"name": "polynomial", "warmup_updates": 2},
        "trainer": {
            "device": device,
            "precision": precision,
            "max_updates": 4,
            "log_interval": 1,
            "save_interval": 1000,
            "progress": False,
            "valid_interval": 0,
            "seed": 3,
        },
    }
    if task == "finetune":
        base["ctc"] = {"mask_time_prob": 0.2, "mask_time_length": 3, "mask_channel_prob": 0.0}
    return to_run_config(deep_merge(base, over))


def train_rows(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir / "metrics.jsonl", kind="train")


@contextlib.contextmanager
def fp32_exact():
    """TF32 off for matmuls and cuDNN convolutions (cuDNN's convs default to TF32 on Ampere and
    later); the legacy flags, which set conv and RNN alike (mixing them with the per-op
    ``fp32_precision`` flags makes a later read of ``allow_tf32`` raise)."""
    was = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = was


@contextlib.contextmanager
def deterministic():
    """torch's deterministic algorithms (an op without one raises, naming itself) and no cuDNN
    autotuning; the cuBLAS workspace must already be fixed (set at this module's import)."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if config not in (":4096:8", ":16:8"):
        raise RuntimeError(f"CUBLAS_WORKSPACE_CONFIG={config!r}: set :4096:8 before CUDA starts")
    was = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.benchmark = was[2]


class _InfGrad(torch.autograd.Function):
    """The identity forward; an infinite gradient backward: a finite loss whose gradients overflow."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g * float("inf")


# ----------------------------------------------------------------------------- emulated low precision


class rounded(TorchFunctionMode):
    """Exact-kernel autocast in ``dtype`` on ``device_type`` with stochastic rounding: each op autocast
    runs in low precision gets its float operands rounded up or down at random to ``dtype``'s
    mantissa (probability by distance), is computed in float32, and its result is rounded to
    nearest in ``dtype``. tests/_bf16.py's ``rounded_bf16`` for any device and for fp16 (whose
    exponent range it does not model: the loss scale keeps the values in it). The spread of a loss
    over seeds is how far rounding to ``dtype`` alone moves it."""

    def __init__(self, dtype: torch.dtype, device_type: str, seed: int) -> None:
        super().__init__()
        self.dtype, self.device_type, self.seed = dtype, device_type, seed
        self.drop = 23 - round(-math.log2(torch.finfo(dtype).eps))  # float32 mantissa bits below dtype's
        self.generators: dict[torch.device, torch.Generator] = {}

    def _round(self, v):
        if isinstance(v, (list, tuple)):
            return type(v)(self._round(u) for u in v)
        if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
            return v
        g = self.generators.get(v.device)
        if g is None:
            g = self.generators[v.device] = torch.Generator(v.device).manual_seed(self.seed)
        bits = v.float().contiguous().view(torch.int32)
        noise = torch.randint(0, 1 << self.drop, bits.shape, generator=g, device=v.device, dtype=torch.int32)
        return ((bits + noise) & ~((1 << self.drop) - 1)).view(torch.float32)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _LOW_OPS or not torch.is_autocast_enabled(self.device_type):
            return func(*args, **kwargs)
        args, kwargs = self._round(args), {k: self._round(v) for k, v in kwargs.items()}
        with torch.autocast(self.device_type, enabled=False):
            out = func(*args, **kwargs)
        return out.to(self.dtype)


def _with_loss_wrapper(trainer: Trainer, context) -> Trainer:
    real_loss = trainer.task.loss

    def wrapped(*args):
        with context:
            return real_loss(*args)

    trainer.task.loss = wrapped
    return trainer


# ----------------------------------------------------------------------------- fp16 overflow (CPU and CUDA)
def test_fp16_skip_restarts_the_growth_count():
    """After an overflow the scale grows again only after ``growth_interval`` clean updates, as an
    overflowing ``GradScaler.update`` has it (``Precision.skip`` used to keep the count: the halved
    scale doubled back at the next clean update)."""
    prec = Precision("fp16", "cpu", growth_interval=2)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def backward():
        with prec.autocast():
            loss = model(torch.randn(3, 4)).float().sum()
        prec.scale(loss).backward()
        prec.unscale_(opt)

    def clean():
        backward()
        prec.step(opt)
        opt.zero_grad()

    clean()
    backward()
    prec.skip()
    opt.zero_grad()
    assert prec.loss_scale == 64.0
    clean()
    assert prec.loss_scale == 64.0  # one clean update since the overflow: not grown yet
    clean()
    assert prec.loss_scale == 128.0  # two: grown by growth_factor 2


@pytest.mark.parametrize("device", DEVICES)
def test_forced_fp16_overflow_skips_the_update_and_backs_off_the_scale(corpus, tmp_path, device):
    """The second update's loss is finite but its gradients are infinite (an overflow): the weights
    stay as they were, the update is not counted as a failure, the scale halves and the next
    applied update reports it."""
    cfg = make_cfg("pretrain", corpus, device, "fp16", trainer={"max_updates": 3})
    trainer = Trainer(cfg, tmp_path)
    assert trainer.precision.uses_scaler and trainer.precision.device_type == device
    real_loss, calls, weights = trainer.task.loss, {"n": 0}, {}

    def overflowing(model, batch, generator):
        loss_sum, sums = real_loss(model, batch, generator)
        calls["n"] += 1
        if calls["n"] == 2:
            weights.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            loss_sum = _InfGrad.apply(loss_sum)
        return loss_sum, sums

    trainer.task.loss = overflowing
    scale0 = trainer.precision.loss_scale
    real_skip, skipped = trainer._skip, []

    def skip(loss_sum, *, overflow):
        skipped.append((overflow, trainer.update))
        after = {k: v.detach() for k, v in trainer.model.state_dict().items()}
        assert all(torch.equal(weights[k], after[k]) for k in weights)  # nothing applied
        real_skip(loss_sum, overflow=overflow)

    trainer._skip = skip
    result = trainer.fit()
    assert skipped == [(True, 1)]  # an overflow, at the second group (after update 1)
    assert result["nonfinite_total"] == 0 and trainer.overflow_total == 1
    rows = train_rows(tmp_path)
    assert [r["update"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss_scale"] == scale0 and rows[0]["fp16_overflows"] == 0
    assert rows[1]["loss_scale"] == scale0 / 2 and rows[1]["fp16_overflows"] == 1
    assert all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("precision", ["fp16", "32"])
def test_an_update_with_nothing_to_learn_from_is_dropped_not_counted_as_overflow(corpus, tmp_path, precision):
    """A group whose sample size is 0 (e.g. no frame masked) is dropped and logged: in fp16 the loss
    scale and its growth count stay (it used to count as an overflow and halve the scale), and it
    is not a non-finite failure in any precision."""
    cfg = make_cfg("pretrain", corpus, "cpu", precision, trainer={"max_updates": 3})
    trainer = Trainer(cfg, tmp_path)
    real_loss, calls = trainer.task.loss, {"n": 0}

    def empty_second(model, batch, generator):
        loss_sum, sums = real_loss(model, batch, generator)
        calls["n"] += 1
        if calls["n"] == 2:
            loss_sum, sums = 0.0 * loss_sum, sums.map(lambda v: 0.0 * v)
        return loss_sum, sums

    trainer.task.loss = empty_second
    scale0 = trainer.precision.loss_scale
    result = trainer.fit()
    assert result["nonfinite_total"] == 0 and trainer.overflow_total == 0
    events = read_metrics(tmp_path / "metrics.jsonl", kind="event")
    assert [(e["event"], e["update"]) for e in events] == [("skipped_empty", 1)]
    rows = train_rows(tmp_path)
    assert [r["update"] for r in rows] == [1, 2, 3]
    if precision == "fp16":
        assert [r["loss_scale"] for r in rows] == [scale0] * 3
        assert trainer.precision.scaler.state_dict()["_growth_tracker"] == 3  # three clean updates


# ----------------------------------------------------------------------------- attention kernels
def _sdpa_calls(model, *args, **kwargs) -> list[dict]:
    """What each call of scaled_dot_product_attention received during ``model(*args, **kwargs)``."""
    calls = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        calls.append(
            dict(q=q, k=k, v=v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, kw=kw)
        )
        return real(q, k, v, attn_mask, dropout_p, is_causal, **kw)

    F.scaled_dot_product_attention = recording
    try:
        model(*args, **kwargs)
    finally:
        F.scaled_dot_product_attention = real
    return calls


@pytest.mark.parametrize("padded", [False, True])
def test_attention_hands_sdpa_what_its_fused_kernels_take(padded):
    """Flash attention (bf16/fp16) takes no mask; the memory-efficient kernel takes a mask too
    (and float32). Both want 4-D (B, H, T, d) inputs with unit stride in d, d a multiple of 8 up
    to 256, and no causal flag. The model hands SDPA no mask when nothing is padded (flash
    eligible) and a bool key mask (B, 1, 1, T) when something is; in training, its dropout."""
    cfg = Wav2Vec2Config.tiny(**{**NO_DROPOUT, "attention_dropout": 0.1, "layerdrop": 0.0})
    model = Wav2Vec2ForCTC(cfg).train()
    wave, attention = padded_inputs(padded)
    calls = _sdpa_calls(model, wave, padding_mask=~attention.bool() if padded else None)
    assert len(calls) == cfg.num_layers
    for c in calls:
        q, k, v = c["q"], c["k"], c["v"]
        b, h, t, d = q.shape
        assert q.shape == k.shape == v.shape and (b, h) == (2, cfg.num_heads)
        assert d == cfg.hidden_size // cfg.num_heads and d % 8 == 0 and d <= 256
        assert all(x.stride(-1) == 1 for x in (q, k, v))
        assert not c["is_causal"] and not c["kw"] and c["dropout_p"] == 0.1
        if padded:
            mask = c["attn_mask"]
            assert mask.dtype == torch.bool and mask.shape == (b, 1, 1, t)
            assert mask[0].all() and not mask[1, 0, 0, -1]  # True = attend; row 1's padded tail masked
        else:
            assert c["attn_mask"] is None
    model.eval()
    assert all(c["dropout_p"] == 0.0 for c in _sdpa_calls(model, wave))


def _attention_inputs(device, dtype, padded):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 150, 768, generator=g)  # BASE: 12 heads of 64
    mask = None
    if padded:
        mask = torch.ones(2, 1, 1, 150, dtype=torch.bool)
        mask[1, ..., 97:] = False
    return x.to(device, dtype), (mask.to(device) if mask is not None else None)


@on_cuda
@pytest.mark.parametrize(
    "dtype,padded,backend",
    [
        ("bfloat16", False, "FLASH_ATTENTION"),
        ("float16", False, "FLASH_ATTENTION"),
        ("bfloat16", True, "EFFICIENT_ATTENTION"),
        ("float16", True, "EFFICIENT_ATTENTION"),
        ("float32", True, "EFFICIENT_ATTENTION"),
        ("float32", False, "EFFICIENT_ATTENTION"),
    ],
)
def test_attention_runs_on_a_fused_kernel(dtype, padded, backend):
    """Our attention, forward and backward, with only that fused kernel allowed (SDPA raises if it
    would need the math fallback), agrees with the math kernel: within 8x the math kernel's own
    error against float64 (the same-computation bound of tests/_tolerance.py, in ``dtype``'s
    epsilon; one unit in the last place of the output's magnitude at least)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    cfg = Wav2Vec2Config.base(attention_dropout=0.0)
    attn = SelfAttention(cfg).cuda().to(getattr(torch, dtype))
    x, mask = _attention_inputs("cuda", getattr(torch, dtype), padded)

    def run(backends, module, inp):
        inp = inp.detach().requires_grad_()
        with sdpa_kernel(backends):
            y = module(inp, None if mask is None else mask.to(inp.device))
        y.float().square().sum().backward()
        return y.detach(), inp.grad

    exact_attn = SelfAttention(cfg).double()
    exact_attn.load_state_dict(attn.state_dict())  # the same (rounded) weights, in float64
    with fp32_exact():
        fused = run([getattr(SDPBackend, backend)], attn, x)
        math_ = run([SDPBackend.MATH], attn, x)
        exact = run([SDPBackend.MATH], exact_attn, x.double().cpu())
    eps = torch.finfo(getattr(torch, dtype)).eps
    for got, ref, ex, what in zip(fused, math_, exact, ("output", "input gradient")):
        err = float((ref.double().cpu() - ex).abs().max())
        bound = 8 * max(err, eps * float(ex.abs().max()))
        worst = float((got.double() - ref.double()).abs().max())
        assert worst <= bound, f"{what}: fused vs math {worst:.3g} > {bound:.3g}"


@on_cuda
@pytest.mark.parametrize("padded", [False, True])
def test_training_step_needs_no_math_attention(padded):
    """A bf16 pretraining step of the whole model with SDPA's math fallback disallowed."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny()).cuda().train()
    prec = Precision("bf16", "cuda")
    prec.attach(model)
    wave, attention = padded_inputs(padded)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused), prec.autocast():
        out = model(
            wave.cuda(),
            padding_mask=(~attention.bool()).cuda() if padded else None,
            generator=torch.Generator().manual_seed(0),
        )
    out.loss.backward()
    assert math.isfinite(float(out.loss))


# ----------------------------------------------------------------------------- float32: CUDA vs CPU, HF
def _copy_to(model, device):
    twin = type(model)(model.config)
    twin.load_state_dict(model.state_dict())
    return twin.to(device)


@on_cuda
def test_float32_training_step_matches_the_cpu():
    """One pretraining step in training mode (Gumbel noise from the trainer's CPU generator, dropout
    off) on CUDA with TF32 off: loss and every gradient within 8x the CPU float32 step's own error
    against the float64 step (tests/_tolerance.py)."""
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**NO_DROPOUT)).train()
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))

    def step(device, dtype):
        m = _copy_to(model, device).to(dtype).train()
        out = m(wave.to(device, dtype), generator=torch.Generator().manual_seed(2))
        out.loss.backward()
        names = [n for n, p in m.named_parameters() if p.grad is not None]
        return [out.loss.detach()] + [p.grad for p in m.parameters() if p.grad is not None], names

    with fp32_exact():
        got, names = step("cuda", torch.float32)
        ref, _ = step("cpu", torch.float32)
        exact, _ = step("cpu", torch.float64)
    for g, r, e, name in zip(got, ref, exact, ["loss"] + names):
        assert_float32_close(g.cpu(), r, e, name)


@on_cuda
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_transformers_parity_on_cuda_in_float32(attn, padded):
    """CTC logits of ours and transformers' model with the same weights on CUDA, TF32 off: within
    8x our CPU float32 logits' error against float64 (both are float32 kernels of one computation)."""
    transformers = pytest.importorskip("transformers")
    from wav2vec2_lite.interop import to_hf

    assert transformers is not None
    torch.manual_seed(0)
    ours = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(vocab_size=32)).eval()
    hf = to_hf(ours).eval()
    hf.set_attn_implementation(attn)
    wave, attention = padded_inputs(padded)
    pad = ~attention.bool() if padded else None
    with torch.no_grad(), fp32_exact():
        ref = ours(wave, padding_mask=pad).logits
        exact = _copy_to(ours, "cpu").double().eval()(wave.double(), padding_mask=pad).logits
        ours_cuda = ours.cuda()(wave.cuda(), padding_mask=pad.cuda() if padded else None).logits.cpu()
        hf_cuda = hf.cuda()(wave.cuda(), attention_mask=attention.cuda() if padded else None).logits.cpu()
    frames = ours.feature_output_lengths(attention.sum(-1)).tolist()
    for i, n in enumerate(frames):  # transformers' padded frames are not defined to match
        assert_float32_close(ours_cuda[i, :n], ref[i, :n], exact[i, :n], f"ours cuda, row {i}")
        assert_float32_close(hf_cuda[i, :n], ref[i, :n], exact[i, :n], f"transformers {attn} cuda, row {i}")


# ----------------------------------------------------------------------------- mixed precision curves
CURVE_UPDATES = 8


@pytest.fixture(scope="module")
def float32_curve(corpus, tmp_path_factory):
    """Each task's float32 loss curve on CUDA (TF32 off, dropout off), run once for both dtypes."""
    curves: dict[str, list[float]] = {}

    def curve(task: str) -> list[float]:
        if task not in curves:
            run = tmp_path_factory.mktemp(f"float32_{task}")
            over = dict(model=NO_DROPOUT, trainer={"max_updates": CURVE_UPDATES})
            with fp32_exact():
                Trainer(make_cfg(task, corpus, "cuda", "32", **over), run).fit()
            curves[task] = [r["loss"] for r in train_rows(run)]
        return curves[task]

    return curve


@on_cuda
@pytest.mark.parametrize("task", ["pretrain", "finetune"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_follows_the_float32_loss_curve(corpus, float32_curve, tmp_path, task, precision):
    """Same seed, batches, masks, distractors and Gumbel noise, dropout off: the low-precision run's
    per-update loss against the float32 run's (TF32 off).

    Update 1 is the forward at the shared initial weights, so its difference is rounding alone:
    at most 4x the RMS relative change of that loss over 3 draws of stochastically rounded operands
    (``rounded``). Later updates also carry the rounding of every earlier update's gradients, which
    the trajectories amplify: each stays closer to the float32 loss than the float32 loss moves
    from one update to the next (its median relative change), i.e. rounding moves the curve less
    than training does. An fp16 overflow skips an update and shifts the data against the float32
    run, so only the updates before the first overflow compare; the first must not overflow."""
    n = CURVE_UPDATES
    over = dict(model=NO_DROPOUT, trainer={"max_updates": n})
    ref = float32_curve(task)
    with fp32_exact():
        Trainer(make_cfg(task, corpus, "cuda", precision, **over), tmp_path / "low").fit()
        one = make_cfg(task, corpus, "cuda", precision, **deep_merge(over, {"trainer": {"max_updates": 1}}))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        draws = []
        for seed in range(3):
            t = _with_loss_wrapper(Trainer(one, tmp_path / f"draw{seed}"), rounded(dtype, "cuda", seed))
            t.fit()
            draws.append(train_rows(tmp_path / f"draw{seed}")[0]["loss"])
    rows = train_rows(tmp_path / "low")
    assert len(ref) == n and len(rows) == n
    aligned = [r["loss"] for r in rows if r.get("fp16_overflows", 0) == 0]
    assert aligned, f"fp16 overflowed at the first update (loss scale {rows[0].get('loss_scale')})"
    rel = [abs(a - f) / abs(f) for f, a in zip(ref, aligned)]
    sensitivity = math.sqrt(sum(((d - ref[0]) / ref[0]) ** 2 for d in draws) / len(draws))
    moves = sorted(abs(b - a) / abs(a) for a, b in zip(ref, ref[1:]))
    per_update = moves[len(moves) // 2]
    print(f"{task} {precision}: relative difference per update {[f'{r:.1e}' for r in rel]}, ")
    print(f"  update-1 rounding sensitivity {sensitivity:.2e}, float32 median move {per_update:.2e}")
    assert 0 < sensitivity < 0.01  # the emulation did round, and the loss is not ill-conditioned
    assert rel[0] <= 4 * sensitivity
    assert max(rel[1:], default=0.0) <= max(per_update, 4 * sensitivity)


# ----------------------------------------------------------------------------- resume, bit for bit
def test_deterministic_setup_sets_and_restores_the_flags(monkeypatch):
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    with pytest.raises(RuntimeError, match="CUBLAS_WORKSPACE_CONFIG"):
        with deterministic():
            pass


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_resume_repeats_the_run_bit_for_bit(corpus, tmp_path, device, precision):
    """4 updates straight vs 2 + resumed 2, with deterministic algorithms (an op without one raises).
    Pretraining only: CTC's CUDA backward has no deterministic implementation (torch's list)."""
    over = dict(trainer={"max_updates": 4, "save_interval": 2})
    with deterministic():
        straight = Trainer(make_cfg("pretrain", corpus, device, precision, **over), tmp_path / "a")
        straight.fit()
        first = deep_merge(over, {"trainer": {"max_updates": 2}})
        Trainer(make_cfg("pretrain", corpus, device, precision, **first), tmp_path / "b").fit()
        resumed = Trainer(make_cfg("pretrain", corpus, device, precision, **over), tmp_path / "b")
        assert resumed.update == 2
        resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = lambda d: [r["loss"] for r in train_rows(d)]  # noqa: E731
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


# ----------------------------------------------------------------------------- loading
def test_batches_go_to_the_device_without_blocking(monkeypatch):
    """Host-to-device copies of a batch are asynchronous (they overlap compute from pinned memory)."""
    seen = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        seen.append(kwargs.get("non_blocking"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    batch = {"waveform": torch.zeros(2, 3), "lengths": torch.ones(2), "texts": ["a", "b"]}
    moved = trainer_module._to_device(batch, torch.device("cpu"))
    assert seen == [True, True] and moved["texts"] == ["a", "b"]


def test_the_trainer_pins_batches_only_for_cuda(corpus, tmp_path, monkeypatch):
    """Pinned (page-locked) batches make the trainer's non-blocking copies overlap compute on CUDA;
    on the CPU there is nothing to overlap, and pinning would only cost a copy."""
    import wav2vec2_lite.data.pipeline as pipeline

    trainer = Trainer(make_cfg("pretrain", corpus, "cpu"), tmp_path / "cpu")
    assert trainer.data.loader.pin_memory is False
    asked = []
    real = pipeline.DataLoader

    def loader(*args, **kwargs):
        asked.append(kwargs.get("pin_memory"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "DataLoader", loader)
    pipeline.TrainingData(trainer.cfg.data, trainer.task, trainer.model.config, seed=0, pin_memory=True)
    assert asked and all(asked)


@on_cuda
def test_cuda_training_loads_pinned_batches(corpus, tmp_path):
    trainer = Trainer(make_cfg("pretrain", corpus, "cuda"), tmp_path)
    assert trainer.data.loader.pin_memory
    batch = next(iter(trainer.data.loader))
    assert batch["waveform"].is_pinned()


# ----------------------------------------------------------------------------- torch.compile
@on_cuda
def test_compiled_step_matches_eager_on_cuda():
    """``compile_dense`` on CUDA (TF32 off): a CTC training step's loss and gradients within 8x the
    eager float32 step's own error against float64 (fused kernels sum in another order)."""
    from wav2vec2_lite.compile import compile_dense

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(vocab_size=32, **NO_DROPOUT)).train()
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(1, 32, (2, 12), generator=torch.Generator().manual_seed(2))

    def step(m, device, dtype):
        m = m.to(device, dtype).train()
        out = m(wave.to(device, dtype), labels=labels.to(device))
        out.loss.backward()
        return [out.loss.detach().cpu()] + [p.grad.cpu() for p in m.parameters() if p.grad is not None]

    with fp32_exact():
        compiled = step(compile_dense(_copy_to(model, "cuda")), "cuda", torch.float32)
        eager = step(_copy_to(model, "cuda"), "cuda", torch.float32)
        exact = step(_copy_to(model, "cpu"), "cpu", torch.float64)
    for i, (c, e, x) in enumerate(zip(compiled, eager, exact)):
        assert_float32_close(c, e, x, "loss" if i == 0 else f"gradient {i}")


# ----------------------------------------------------------------------------- the script
@pytest.mark.skipif(HAS_CUDA, reason="checks the machine-without-CUDA path")
def test_gpu_check_without_cuda_says_so_and_exits_cleanly(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**env, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA"), proc.stdout
    assert not out.exists() and not (tmp_path / "gpu_check.json").exists()  # nothing written
    assert list(tmp_path.iterdir()) == []


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _empty_report(gpu_check, path: Path) -> None:
    import time

    gpu_check.save(path, {"started": "now", "started_unix": time.time(), "stages": {}, "rows": []})


def test_gpu_check_kills_a_stage_with_its_children_at_the_deadline(tmp_path):
    import time

    gpu_check = _gpu_check()
    pidfile = tmp_path / "pid"
    t0 = time.time()
    rc, wall = gpu_check.run_stage(
        ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], time.time() + 1.5, tmp_path / "log"
    )
    assert rc is None and wall < 10 and time.time() - t0 < 10
    status = Path(f"/proc/{pidfile.read_text().strip()}/status")
    assert not status.exists() or "\nState:\tZ" in status.read_text()  # gone (or a zombie not reaped)


def test_gpu_check_writes_each_row_and_records_what_the_budget_left_out(tmp_path, monkeypatch):
    import time

    gpu_check = _gpu_check()
    out = tmp_path / "r.json"
    _empty_report(gpu_check, out)
    seen = []

    def measure(task, dtype, compiled, args):
        seen.append(len(gpu_check.load(out)["rows"]))  # the rows before this one are on disk already
        time.sleep(0.4)
        return {"task": task, "dtype": dtype, "compile": compiled, "median_s": {"ours": 1.0, "hf_sdpa": 2.0},
                "hf_best": "hf_sdpa", "speedup": 2.0}  # fmt: skip

    monkeypatch.setattr(gpu_check, "measure", measure)
    args = gpu_check.build_parser().parse_args(["--stage", "eager", "--out", str(out)])
    args.deadline = time.time() + 6.0  # a row starts only with 5 s left (and 1.1x the slowest row)
    assert gpu_check.child(args) == 0
    rows = gpu_check.load(out)["rows"]
    assert len(rows) == 6 and seen == list(range(len(seen))) and 1 <= len(seen) < 6
    assert all("median_s" in r for r in rows[: len(seen)])
    assert all(r["skipped"].startswith("over budget") for r in rows[len(seen) :])
    table = out.with_suffix(".md").read_text()
    assert "**2.00×** (sdpa)" in table and "over budget" in table


def test_gpu_check_measures_an_fp16_row_with_the_benchmark_functions():
    """The row code on the CPU with the tiny config (the float16 spec: autocast to float16, ours with
    the trainer's speed transform); a dtype the benchmark does not know is refused, not run as float32."""
    pytest.importorskip("transformers")
    gpu_check = _gpu_check()
    args = gpu_check.build_parser().parse_args(
        ["--config", "tiny", "--device", "cpu", "--batch", "1", "--seconds", "1", "--warmup", "0"]
    )
    args.repeats = 1
    row = gpu_check.measure("pretrain", "float16", False, args)
    assert set(row["median_s"]) == {"ours", "hf_eager", "hf_sdpa"} and row["speedup"] > 0
    assert row["dtype"] == "float16" and "cuda_peak_mb" not in row
    from wav2vec2_lite.tools.benchmarking import BenchSpec

    with pytest.raises(ValueError, match="BenchSpec.dtype: float32, bfloat16 or float16"):
        BenchSpec("tiny", dtype="fp16")
