"""Side-by-side benchmark of wav2vec2_lite against Hugging Face transformers.

Same config, same weights (``to_hf``), same inputs, same masks and distractors, same
thread count. Timings are interleaved in one process (ours, HF eager, HF sdpa, ours, ...)
after a warmup and summarised by medians; the result is always a *ratio* (speedup =
HF time / our time, against HF's faster attention setting for that dtype). Peak memory
is the peak RSS (``VmHWM``) of a fresh subprocess per measurement (CUDA: ``max_memory_allocated``).
Scaling runs each implementation in its own process per input length.

Utilisation uses one analytic FLOP count for both implementations (:func:`model_flops`)
over the matmul peak measured in the same run and dtype; each row also counts casts and the
bf16 share of FLOPs (``op_census``). bf16 inference meets HF's autocast and HF's bf16 weights.
Command line: ``scripts/benchmark.py`` (:mod:`.benchmark_cli`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile

from wav2vec2_lite.compile import compile_dense
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.inference_dtype import cast_for_inference
from wav2vec2_lite.interop import to_hf
from wav2vec2_lite.interop.hf import config_to_hf
from wav2vec2_lite.low_precision_speed import speed_up_training
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.modules.feature_encoder import conv_output_lengths
from wav2vec2_lite.objectives.masking import compute_span_mask, sample_negatives
from wav2vec2_lite.tools.benchmark_report import render_markdown
from wav2vec2_lite.tools.hardware import model_flops, sync
from wav2vec2_lite.tools.op_census import census

__all__ = [
    "BenchSpec",
    "census_steps",
    "impls_for",
    "model_flops",
    "probe",
    "profile_ops",
    "run_probe",
    "time_interleaved",
    "render_markdown",
    "speedup_row",
]

TASKS = ("pretrain", "finetune", "infer")
IMPLS = ("ours", "hf_eager", "hf_sdpa")
BF16_WEIGHTS = "_bf16w"  # an HF impl whose weights and inputs are bf16 (no autocast)
BF16_INFER_IMPLS = IMPLS + ("hf_eager" + BF16_WEIGHTS, "hf_sdpa" + BF16_WEIGHTS)


def impls_for(task: str, dtype: str) -> tuple[str, ...]:
    """bf16 inference also meets HF with bf16 weights: ours runs that way (``--dtype bfloat16``)."""
    return BF16_INFER_IMPLS if (task, dtype) == ("infer", "bfloat16") else IMPLS


SAMPLE_RATE = 16000


LOW_PRECISION = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""Autocast dtypes a spec may name (float16: for CUDA; the trainer's fp16 loss scaling is not timed)."""


@dataclass
class BenchSpec:
    """What one measurement runs."""

    config: str = "base"
    batch: int = 2
    seconds: float = 4.0
    task: str = "pretrain"
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 2
    seed: int = 0
    compile: bool = False
    """``torch.compile`` both: ours' dense part (``compile_dense``), HF's whole model (in place)."""

    def __post_init__(self) -> None:
        if self.dtype not in LOW_PRECISION and self.dtype != "float32":
            raise ValueError(f"BenchSpec.dtype: float32, {' or '.join(LOW_PRECISION)} (got {self.dtype!r})")

    def model_config(self) -> Wav2Vec2Config:
        # layerdrop 0 so that every step does the same work (a skipped block is a timing
        # lottery); everything else as configured, dropout included.
        cfg = Wav2Vec2Config.preset(self.config, layerdrop=0.0)
        if self.task == "pretrain":
            cfg = cfg.replace(mask_time_prob=0.65, mask_time_length=10, contrastive={"num_negatives": 100})
        return cfg


# ----------------------------------------------------------------------------- models and steps


def _bf16_weights(impl: str, spec: BenchSpec) -> bool:
    """Runs with bf16 weights and no autocast: our bf16 inference mode, HF's ``*_bf16w``."""
    return (
        spec.dtype == "bfloat16" and spec.task == "infer" and (impl == "ours" or impl.endswith(BF16_WEIGHTS))
    )


def _autocast(spec: BenchSpec, impl: str = "ours"):
    if spec.dtype in LOW_PRECISION and not _bf16_weights(impl, spec):
        return torch.autocast(spec.device.split(":")[0], dtype=LOW_PRECISION[spec.dtype])
    return contextlib.nullcontext()


def _ours_model(spec: BenchSpec, cfg: Wav2Vec2Config) -> torch.nn.Module:
    torch.manual_seed(spec.seed)
    model = Wav2Vec2ForPreTraining(cfg) if spec.task == "pretrain" else Wav2Vec2ForCTC(cfg)
    if spec.task == "finetune":
        model.freeze_feature_encoder()
    model = model.train(spec.task != "infer").to(spec.device)
    if _bf16_weights("ours", spec):
        cast_for_inference(model, torch.bfloat16)  # bf16 Linear weights, float32 convs and norms
    elif spec.dtype in LOW_PRECISION:  # training as the trainer does it (the fast modules for this device)
        model.speedup = speed_up_training(model, LOW_PRECISION[spec.dtype])
    if spec.compile:
        compile_dense(model)
    return model


def _hf_from(ours: torch.nn.Module, spec: BenchSpec, attn: str) -> torch.nn.Module:
    """HF's model with ``ours``' weights; ``attn`` is ``eager`` or ``sdpa``, with ``_bf16w``
    for the whole model in bf16 (``torch_dtype=bfloat16``)."""
    bf16_weights = attn.endswith(BF16_WEIGHTS)
    attn = attn.removesuffix(BF16_WEIGHTS)
    source = ours.cpu() if spec.device != "cpu" else ours
    if any(
        p.dtype != torch.float32 for p in source.parameters()
    ):  # ours in its bf16 mode: HF from a float32 copy
        source = copy.deepcopy(source).float()
    hf = to_hf(source)
    if bf16_weights:
        hf = hf.to(torch.bfloat16)
    hf.set_attn_implementation(attn)
    if spec.compile:
        hf.compile(dynamic=True)
    if spec.task == "finetune":
        hf.freeze_feature_encoder()
    hf = hf.train(spec.task != "infer").to(spec.device)
    if spec.device != "cpu":
        ours.to(spec.device)
    return hf


def _inputs(spec: BenchSpec, cfg: Wav2Vec2Config) -> dict[str, torch.Tensor]:
    """Wave, and for pretraining the masks and distractors both implementations use."""
    g = torch.Generator().manual_seed(spec.seed + 1)
    samples = int(round(spec.seconds * SAMPLE_RATE))
    wave = torch.randn(spec.batch, samples, generator=g)
    frames = int(conv_output_lengths(torch.tensor([samples]), cfg.conv_kernel, cfg.conv_stride)[0])
    out = {"wave": wave.to(spec.device)}
    if spec.task == "pretrain":
        mask = compute_span_mask(
            spec.batch,
            frames,
            cfg.mask_time_prob,
            cfg.mask_time_length,
            min_masks=cfg.mask_time_min_masks,
            generator=g,
        )
        neg = sample_negatives(mask, cfg.contrastive.num_negatives, generator=g)
        out.update(
            mask=mask.to(spec.device),
            negatives=neg.to(spec.device),
            hf_negatives=(neg + torch.arange(spec.batch)[:, None, None] * frames).to(spec.device),
        )
    elif spec.task == "finetune":
        n_labels = max(2, int(frames * 0.3))
        labels = torch.randint(1, cfg.vocab_size, (spec.batch, n_labels), generator=g)
        out["labels"] = labels.to(spec.device)
    return out


def _step_fn(
    impl: str, model: torch.nn.Module, spec: BenchSpec, x: dict[str, torch.Tensor]
) -> Callable[[], None]:
    """A closure running one step of ``spec.task`` on ``model`` (ours or HF)."""
    hf = impl != "ours"
    params = [p for p in model.parameters() if p.requires_grad]
    weights = getattr(model, "speedup", None)
    cast_weights = weights.cast if weights is not None else contextlib.nullcontext

    def pretrain() -> None:
        for p in params:
            p.grad = None
        with _autocast(spec, impl), cast_weights():
            if hf:
                loss = model(
                    x["wave"], mask_time_indices=x["mask"], sampled_negative_indices=x["hf_negatives"]
                ).loss
            else:
                loss = model(x["wave"], mask_indices=x["mask"], negative_indices=x["negatives"]).loss
        loss.backward()

    def finetune() -> None:
        for p in params:
            p.grad = None
        with _autocast(spec, impl), cast_weights():
            if hf:
                loss = model(x["wave"], labels=x["labels"]).loss
            else:
                loss = model(x["wave"], labels=x["labels"]).loss
        loss.backward()

    wave = x["wave"].bfloat16() if impl.endswith(BF16_WEIGHTS) else x["wave"]

    def infer() -> None:
        with torch.no_grad(), _autocast(spec, impl):
            model(wave).logits

    return {"pretrain": pretrain, "finetune": finetune, "infer": infer}[spec.task]


def _timed(fn: Callable[[], None], device: str, cpu: list[float] | None = None) -> float:
    """Wall seconds of one call; appends the process CPU seconds to ``cpu`` if given (a second
    clock that is less disturbed by other jobs on a shared machine)."""
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    sync(device)
    t1 = time.perf_counter()
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return t1 - t0


def _setup(spec: BenchSpec) -> None:
    if spec.device == "cpu":
        torch.set_num_threads(spec.threads)


# ----------------------------------------------------------------------------- interleaved timing
def time_interleaved(
    spec: BenchSpec,
    impls: tuple[str, ...] = IMPLS,
    warmup: int = 1,
    repeats: int = 3,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Median step time of each implementation, runs interleaved round-robin in this process."""
    _setup(spec)
    cfg = spec.model_config()
    ours = _ours_model(spec, cfg)
    models = {"ours": ours}
    for impl in impls:
        if impl.startswith("hf_"):
            models[impl] = _hf_from(ours, spec, impl[3:])
    x = _inputs(spec, cfg)
    steps = {k: _step_fn(k, m, spec, x) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    first: dict[str, float] = {}  # the first call: compilation, lazy buffers
    order = list(steps)
    for r in range(warmup + repeats):
        for k in order if r % 2 == 0 else order[::-1]:  # alternate who goes first
            torch.manual_seed(spec.seed + r)
            c: list[float] = []
            t = _timed(steps[k], spec.device, c)
            first.setdefault(k, t)
            if r >= warmup:
                times[k].append(t)
                cpu[k].append(c[0])
        if log:
            log(
                f"  {spec.task}/{spec.dtype} round {r + 1}/{warmup + repeats}: "
                + ", ".join(f"{k} {times[k][-1]:.3f}s" if times[k] else k for k in order)
            )
    num_masked = int(x["mask"].sum()) if "mask" in x else None
    flops = model_flops(cfg, spec.batch, x["wave"].shape[1], spec.task, num_masked)
    del models, steps, ours
    gc.collect()
    return {
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "times_s": times,
        "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "flops": flops,
        "first_call_s": first,
    }


def speedup_row(res: dict[str, Any]) -> dict[str, Any]:
    """What every benchmark row reports of a :func:`time_interleaved` result: the step times,
    transformers' best mode (the faster of its attention implementations) and ours' speedup over it."""
    med = res["median_s"]
    hf_best = min((k for k in med if k.startswith("hf_")), key=med.__getitem__)
    return {
        "first_call_s": res["first_call_s"],
        "median_s": med,
        "times_s": res["times_s"],
        "hf_best": hf_best,
        "speedup": med[hf_best] / med["ours"],
    }


def profile_ops(
    spec: BenchSpec, impls: tuple[str, ...] = ("ours", "hf_eager"), warmup: int = 1, top: int = 12
) -> dict[str, Any]:
    """Where one step's time goes: ``torch.profiler`` self time per aten op (ms) of each
    implementation on the same weights and inputs, after ``warmup`` steps.

    Returns ``{"total_ms": {impl: ms}, "ops": [(op, {impl: ms}), ...]}``: the ``top`` ops by
    their largest time in either implementation (the same kernels under the same names, so
    the rows compare)."""
    _setup(spec)
    cfg = spec.model_config()
    ours = _ours_model(spec, cfg)
    models = {"ours": ours, **{i: _hf_from(ours, spec, i[3:]) for i in impls if i.startswith("hf_")}}
    x = _inputs(spec, cfg)
    per_op: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    for impl in impls:
        step = _step_fn(impl, models[impl], spec, x)
        for _ in range(warmup):
            step()
        torch.manual_seed(spec.seed)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        averages = prof.key_averages()
        total[impl] = sum(e.self_cpu_time_total for e in averages) / 1e3
        for e in averages:
            if e.key.startswith("aten::"):
                per_op.setdefault(e.key, {})[impl] = e.self_cpu_time_total / 1e3
    ranked = sorted(per_op.items(), key=lambda kv: -max(kv[1].values()))[:top]
    del models, ours
    gc.collect()
    return {"total_ms": total, "ops": [(op, {i: t.get(i, 0.0) for i in impls}) for op, t in ranked]}


def census_steps(spec: BenchSpec, impls: tuple[str, ...] = ("ours", "hf_sdpa")) -> dict[str, dict[str, Any]]:
    """Casts (calls, MB) and FLOPs by dtype of one step of each implementation
    (:mod:`~wav2vec2_lite.tools.op_census`): counts, so they do not depend on the machine's load."""
    _setup(spec)
    cfg = spec.model_config()
    ours = _ours_model(spec, cfg)
    models = {"ours": ours, **{i: _hf_from(ours, spec, i[3:]) for i in impls if i.startswith("hf_")}}
    x = _inputs(spec, cfg)
    out = {}
    for impl in impls:
        step = _step_fn(impl, models[impl], spec, x)
        step()  # warm: lazily built buffers are not part of a step
        torch.manual_seed(spec.seed)
        out[impl] = census(step).to_dict()
    del models, ours
    gc.collect()
    return out


# ----------------------------------------------------------------------------- subprocess probes
def _peak_rss_kb() -> int:
    """Peak resident set of this process (``VmHWM``; ``ru_maxrss`` where /proc is missing).

    ``ru_maxrss`` alone is wrong in a child: Linux carries the parent's peak across fork.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def probe(spec: BenchSpec, impl: str, warmup: int = 0, repeats: int = 1) -> dict[str, Any]:
    """Run ``impl`` alone in this (fresh) process: peak memory and step times."""
    _setup(spec)
    import transformers  # optional: transformers (hf extra); both sides pay its footprint, so totals compare

    cfg = spec.model_config()
    if impl == "ours":
        model = _ours_model(spec, cfg)
    else:  # HF built straight from the config: memory does not depend on the weights' values
        cls = transformers.Wav2Vec2ForPreTraining if spec.task == "pretrain" else transformers.Wav2Vec2ForCTC
        hf_cfg = config_to_hf(cfg)
        model = cls(hf_cfg)
        model.set_attn_implementation(impl[3:].removesuffix(BF16_WEIGHTS))
        if spec.task == "finetune":
            model.freeze_feature_encoder()
        model = model.train(spec.task != "infer").to(spec.device)
        if impl.endswith(BF16_WEIGHTS):
            model = model.to(torch.bfloat16)
    x = _inputs(spec, cfg)
    step = _step_fn(impl, model, spec, x)
    gc.collect()
    base_kb = _peak_rss_kb()
    if spec.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for r in range(warmup + repeats):
        torch.manual_seed(spec.seed + r)
        t = _timed(step, spec.device)
        if r >= warmup:
            times.append(t)
    peak_kb = _peak_rss_kb()
    out = {
        "impl": impl,
        "rss_before_step_mb": base_kb / 1024,
        "rss_peak_mb": peak_kb / 1024,
        "step_rss_mb": (peak_kb - base_kb) / 1024,
        "times_s": times,
        "median_s": statistics.median(times) if times else None,
    }
    if spec.device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


#: glibc's malloc raises its mmap threshold each time a large block is freed,
#: after which freed activations stay in the heap and RSS keeps counting them; a fixed
#: threshold makes the resident set follow the live tensors, for both implementations alike.
PROBE_ENV = {"TRANSFORMERS_VERBOSITY": "error", "MALLOC_MMAP_THRESHOLD_": "65536"}


def run_probe(
    spec: BenchSpec, impl: str, warmup: int = 0, repeats: int = 1, timeout: float = 3600
) -> dict[str, Any]:
    """:func:`probe` in a fresh Python process (clean peak RSS, :data:`PROBE_ENV`)."""
    payload = json.dumps({"spec": spec.__dict__, "impl": impl, "warmup": warmup, "repeats": repeats})
    proc = subprocess.run(
        [sys.executable, "-m", "wav2vec2_lite.tools.benchmarking", "--probe", payload],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **PROBE_ENV},
    )
    if proc.returncode != 0:
        return {
            "impl": impl,
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}",
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the fresh process of run_probe: --probe PAYLOAD
    _payload = json.loads(sys.argv[sys.argv.index("--probe") + 1])
    print(
        json.dumps(
            probe(BenchSpec(**_payload["spec"]), _payload["impl"], _payload["warmup"], _payload["repeats"])
        )
    )
