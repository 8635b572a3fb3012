"""What a step costs and what the machine can do: analytic FLOPs, native bf16, matmul peak.

The utilisation of a benchmark is :func:`model_flops` of its step over :func:`matmul_peak`
measured in the same run and dtype, the same formula for every implementation.
"""

from __future__ import annotations

import math
import platform
import time

import torch

from wav2vec2_lite.config import Wav2Vec2Config

__all__ = ["model_flops", "native_bf16", "matmul_peak", "sync"]


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
