"""What a step costs and what the machine can do: analytic FLOPs, native bf16, matmul peak.

The utilisation of a benchmark is :func:`model_flops` of its step over :func:`matmul_peak`
measured in the same run and dtype, the same formula for every implementation.
"""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Iterable, Mapping

import torch

from wav2vec2_lite.config import Wav2Vec2Config

__all__ = ["model_flops", "native_bf16", "bf16_kind", "onednn_isa_cap", "matmul_peak", "sync"]


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_flops(
    cfg: Wav2Vec2Config, batch: int, samples: int, task: str, num_masked: int | None = None
) -> float:
    """Analytic FLOPs of one step (multiply-add = 2), the same formula for every implementation.

    Forward: conv feature encoder (sum over layers of 2·T_l·C_out·C_in·k), feature projection,
    positional conv (grouped), per block QKV + output projection + attention scores and
    weighted sum (4·T²·D) + FFN; heads: CTC projection (fine-tune / inference), or for
    pretraining the quantizer logits and ``project_q`` over the masked frames, ``final_proj``
    and the cosine logits against K+1 candidates per masked frame. Backward = 2 × forward of
    every part that trains (fine-tuning freezes the conv encoder: forward only).
    Elementwise work (norms, GELU, softmax) is not counted.
    """
    t = samples
    conv = 0.0
    c_in = 1
    for c_out, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride):
        t = (t - k) // s + 1
        conv += 2.0 * t * c_out * c_in * k
        c_in = c_out
    frames, d, c = t, cfg.hidden_size, cfg.conv_dim[-1]
    proj = 2.0 * frames * c * d
    pos = 2.0 * frames * d * (d // cfg.pos_conv_groups) * cfg.pos_conv_kernel
    block = (
        2.0 * frames * d * 3 * d
        + 2.0 * frames * d * d
        + 4.0 * frames * frames * d
        + 4.0 * frames * d * cfg.ffn_dim
    )
    body = proj + pos + cfg.num_layers * block
    if task == "pretrain":
        n = num_masked if num_masked is not None else 0.49 * frames * batch
        n_per = n / batch
        q = cfg.contrastive
        g_v = q.num_code_groups * q.num_codes_per_group
        heads = n_per * (
            2.0 * c * g_v
            + 2.0 * g_v * (q.codevector_dim // q.num_code_groups)
            + 2.0 * q.codevector_dim * q.final_dim
            + 2.0 * d * q.final_dim
            + 2.0 * (q.num_negatives + 1) * q.final_dim
        )
    else:
        heads = 2.0 * frames * d * cfg.vocab_size
    fwd = batch * (conv + body + heads)
    if task == "infer":
        return fwd
    if task == "finetune":
        return fwd + 2.0 * batch * (body + heads)
    return 3.0 * fwd


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_kind() -> dict:
    """CPU model, which of the bf16-relevant ``CPU_FLAGS`` it has (None where /proc/cpuinfo is
    unreadable) and torch's CPU capability."""
    model, flags = platform.processor() or "unknown", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and flags is None:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "model": model,
        "flags": None if flags is None else [f for f in CPU_FLAGS if f in flags],
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }


#: oneDNN's ISA caps (``ONEDNN_MAX_CPU_ISA``, ``DNNL_MAX_CPU_ISA``; enum ``dnnl_cpu_isa_t``) and their
#: bit masks: an ISA contains another when its mask holds all of the other's bits.
ONEDNN_ISAS = {
    "SSE41": 0x1,
    "AVX": 0x3,
    "AVX2": 0x7,
    "AVX2_VNNI": 0xF,
    "AVX2_VNNI_2": 0x1F,
    "AVX512_CORE": 0x27,
    "AVX512_CORE_VNNI": 0x67,
    "AVX512_CORE_BF16": 0xE7,
    "AVX10_1_512": 0x1EF,
    "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512_AMX": 0xFEF,
    "AVX512_CORE_AMX": 0xFEF,
    "AVX10_1_512_AMX_FP16": 0x1FEF,
    "AVX512_CORE_AMX_FP16": 0x1FEF,
}
_ONEDNN_BF16, _ONEDNN_AMX = ONEDNN_ISAS["AVX512_CORE_BF16"], ONEDNN_ISAS["AVX10_1_512_AMX"]


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> str | None:
    """The ISA that ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) caps oneDNN at, upper
    case; None for no cap (unset, ``ALL``/``DEFAULT``, or a name oneDNN does not know and ignores)."""
    environ = os.environ if environ is None else environ
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = environ.get(var, "").strip().upper()
        if value:
            return value if value in ONEDNN_ISAS else None
    return None


def bf16_kind(flags: Iterable[str] | None, isa_cap: str | None = None) -> str | None:
    """How a CPU with these /proc/cpuinfo ``flags`` runs bf16 matmuls: ``"amx"`` (``amx_bf16``),
    ``"avx512_bf16"`` (bf16 dot products, no AMX), ``"emulated"`` (neither), None where the flags
    are unknown. ``isa_cap`` (:func:`onednn_isa_cap`) lowers it to what oneDNN may use: a CPU with
    AMX capped at ``AVX512_CORE_BF16`` runs oneDNN's bf16 kernels as one without AMX does."""
    if flags is None:
        return None
    flags = set(flags)
    kind = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "emulated"
    if isa_cap is not None:
        mask = ONEDNN_ISAS[isa_cap]
        if kind == "amx" and mask & _ONEDNN_AMX != _ONEDNN_AMX:
            kind = "avx512_bf16"
        if kind == "avx512_bf16" and mask & _ONEDNN_BF16 != _ONEDNN_BF16:
            kind = "emulated"
    return kind


def native_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls run in hardware here (CUDA, or a CPU with AVX512-BF16 / AMX)."""
    if device.startswith("cuda"):
        return True
    cpu = cpu_kind()
    if cpu["flags"] is None:  # not Linux: let torch decide
        return "AVX512" in cpu["torch_capability"]
    return "avx512_bf16" in cpu["flags"] or "amx_bf16" in cpu["flags"]


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n matmul in ``dtype`` (the utilisation denominator)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = math.inf
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best
