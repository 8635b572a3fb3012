"""The benchmark's Markdown tables (``scripts/benchmark.py --out X.json`` also writes ``X.md``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_markdown"]


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"config `{report['config']}`, batch {report['batch']} × {report['seconds']:g} s, "
        f"device {report['device']}, {report['threads']} threads, "
        f"median of {report['repeats']} interleaved runs after {report['warmup']} warmup; "
        f"torch {report['torch']}, transformers {report.get('transformers')}",
        "",
        "matmul peak: " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in report["peak_flops"].items()),
        "",
        "| task | dtype | speedup vs HF best | vs HF eager | vs HF sdpa | HF best | util ours | util HF best "
        "| peak mem ours/HF | step mem ours/HF | speedup, CPU-time clock |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        u = r["utilisation"]
        lines.append(
            f"| {r['task']} | {r['dtype']}{' compiled' if r.get('compile') else ''} | "
            f"**{r['speedup']:.2f}×** | {r['speedup_vs_eager']:.2f}× | "
            f"{r['speedup_vs_sdpa']:.2f}× | {r['hf_best'][3:]} | {u['ours']:.0%} | {u[r['hf_best']]:.0%} | "
            + (
                f"{r['memory_ratio']:.2f} | {r['step_memory_ratio']:.2f} |"
                if "memory_ratio" in r
                else "– | – |"
            )
            + f" {r.get('speedup_cpu_time', float('nan')):.2f}× |"
        )
    compiled = [r for r in report["rows"] if r.get("compile")]
    if compiled:
        lines += [
            "",
            "Compilation (first call minus the median step, seconds)",
            "",
            "| task | dtype | ours | HF best |",
            "|---|---|---|---|",
        ]
        for r in compiled:
            first, med, hf = r["first_call_s"], r["median_s"], r["hf_best"]
            lines.append(
                f"| {r['task']} | {r['dtype']} | {first['ours'] - med['ours']:.1f} | "
                f"{first[hf] - med[hf]:.1f} |"
            )
    if any("census" in r for r in report["rows"]):
        lines += [
            "",
            "Casts and FLOPs of one step (`tools/op_census.py`: dtype casts, and the share of matmul, "
            "conv and attention FLOPs computed in bf16)",
            "",
            "| task | dtype | HF | casts ours (calls / MB) | casts HF | bf16 FLOP share ours | HF |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["rows"]:
            if "census" not in r:
                continue
            c, hf = r["census"], r["hf_best"]
            lines.append(
                f"| {r['task']} | {r['dtype']} | {hf[3:]} | {c['ours']['cast_calls']} / "
                f"{c['ours']['cast_mb']:.0f} | {c[hf]['cast_calls']} / {c[hf]['cast_mb']:.0f} | "
                f"{c['ours']['bf16_flop_share']:.0%} | {c[hf]['bf16_flop_share']:.0%} |"
            )
    for r in report["rows"]:
        if "profile" not in r:
            continue
        prof, hf = r["profile"], r["hf_best"]
        lines += [
            "",
            f"{r['task']} / {r['dtype']}: self time per op in one step (`torch.profiler`, ms)",
            "",
            f"| op | ours | HF {hf[3:]} |",
            "|---|---|---|",
        ]
        lines += [f"| `{op}` | {t['ours']:.0f} | {t[hf]:.0f} |" for op, t in prof["ops"]]
        lines.append(f"| all ops | {prof['total_ms']['ours']:.0f} | {prof['total_ms'][hf]:.0f} |")
    if report.get("scaling"):
        lines += [
            "",
            "| input | batch | task | dtype | HF | s per audio-s, ours | s per audio-s, HF | speedup "
            "| peak RSS ours / HF (MB) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["scaling"]:
            if "speedup" not in r:
                lines.append(
                    f"| {r['seconds']:g} s | {r['batch']} | {r['task']} | {r['dtype']} | {r['hf'][3:]} | "
                    f"failed: {json.dumps({k: v.get('error') for k, v in r['results'].items()})} ||||"
                )
                continue
            sp = r["s_per_audio_s"]
            mem = r["results"]
            lines.append(
                f"| {r['seconds']:g} s | {r['batch']} | {r['task']} | {r['dtype']} | {r['hf'][3:]} | "
                f"{sp['ours']:.3f} | {sp[r['hf']]:.3f} | **{r['speedup']:.2f}×** | "
                f"{mem['ours']['rss_peak_mb']:.0f} / {mem[r['hf']]['rss_peak_mb']:.0f} "
                f"({r['memory_ratio']:.2f}) |"
            )
    return "\n".join(lines) + "\n"
