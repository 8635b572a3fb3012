"""The benchmark's command line: every task and dtype, the memory probes, the length sweep
(``scripts/benchmark.py``; the measurements themselves are in :mod:`.benchmarking`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import torch

from wav2vec2_lite.tools import benchmarking as bench
from wav2vec2_lite.tools.benchmark_report import render_markdown
from wav2vec2_lite.tools.benchmarking import (
    TASKS,
    BenchSpec,
    census_steps,
    impls_for,
    profile_ops,
    speedup_row,
    time_interleaved,
)
from wav2vec2_lite.tools.hardware import matmul_peak, native_bf16

__all__ = ["build_parser", "main", "run_benchmark", "run_scaling"]


# ----------------------------------------------------------------------------- the whole benchmark
def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    if args.dtype == "auto":
        dtypes = ["float32", "bfloat16"] if native_bf16(args.device) else ["float32"]
        if dtypes == ["float32"]:
            log(
                "this CPU has no native bf16 (no avx512_bf16/amx_bf16): bf16 skipped; "
                "force it with --dtype bfloat16"
            )
    else:
        dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    tasks = (
        list(TASKS) if args.tasks == "all" else [] if args.tasks in ("", "none") else args.tasks.split(",")
    )
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "config": args.config,
        "batch": args.batch,
        "seconds": args.seconds,
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "memory_method": "peak RSS (VmHWM) of a fresh process per measurement"
        if args.device == "cpu"
        else "torch.cuda.max_memory_allocated in a fresh process",
        "peak_flops": {},
        "rows": [],
        "scaling": [],
        "native_bf16": native_bf16(args.device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability() if args.device == "cpu" else None,
    }
    try:
        import transformers  # optional: transformers (hf extra)

        report["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        raise SystemExit("the benchmark needs transformers (pip install 'wav2vec2_lite[hf]')")
    for dt in dtypes:
        n = 2048 if dt == "float32" or report["native_bf16"] else 512  # emulated bf16 is far slower
        report["peak_flops"][dt] = matmul_peak(getattr(torch, dt), args.device, n=n)
        log(f"matmul peak {dt}: {report['peak_flops'][dt] / 1e9:.0f} GFLOP/s")
    variants = [
        (task, dt, comp) for task in tasks for dt in dtypes for comp in (False, True)[: 1 + args.compile]
    ]
    for task, dt, comp in variants:
        spec = BenchSpec(
            args.config, args.batch, args.seconds, task, dt, args.device, args.threads, compile=comp
        )
        res = time_interleaved(spec, impls_for(task, dt), warmup=args.warmup, repeats=args.repeats, log=log)
        row = {"task": task, "dtype": dt, "compile": comp, **speedup_row(res)}
        med, hf_best = row["median_s"], row["hf_best"]
        row |= {
            "speedup_vs_eager": med["hf_eager"] / med["ours"],
            "speedup_vs_sdpa": med["hf_sdpa"] / med["ours"],
            "speedup_cpu_time": res["median_cpu_s"][hf_best] / res["median_cpu_s"]["ours"],
            "median_cpu_s": res["median_cpu_s"],
            "flops": res["flops"],
            "utilisation": {k: res["flops"] / v / report["peak_flops"][dt] for k, v in med.items()},
        }
        if args.memory and not comp:  # a compiled step's memory is measured eager (a fresh process each)
            mem = {impl: bench.run_probe(spec, impl) for impl in ("ours", hf_best)}
            row["memory"] = mem
            if all("rss_peak_mb" in m for m in mem.values()):
                key = "cuda_peak_mb" if args.device.startswith("cuda") else "rss_peak_mb"
                row["memory_ratio"] = mem["ours"][key] / mem[hf_best][key]
                if key == "rss_peak_mb":
                    row["step_memory_ratio"] = mem["ours"]["step_rss_mb"] / max(
                        mem[hf_best]["step_rss_mb"], 1e-9
                    )
        if not comp:
            row["census"] = census_steps(spec, ("ours", hf_best))
        if args.profile and not comp:
            row["profile"] = profile_ops(spec, ("ours", hf_best))
        report["rows"].append(row)
        log(
            f"{task}/{dt}{' compiled' if comp else ''}: speedup {row['speedup']:.2f}x vs HF {hf_best}"
            + (f", memory ratio {row.get('memory_ratio', float('nan')):.2f}" if args.memory else "")
        )
    if args.scaling:
        report["scaling"] = run_scaling(args, log)
    return report


def run_scaling(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Time per audio-second at each length; every implementation in its own process."""
    rows = []
    for seconds in [float(s) for s in args.scaling.split(",")]:
        batch = 1 if seconds >= args.scaling_batch1_from else args.batch
        spec = BenchSpec(
            args.config, batch, seconds, args.scaling_task, args.scaling_dtype, args.device, args.threads
        )
        hf_impl = "hf_" + args.scaling_hf_attn
        res = {}
        for impl in ("ours", hf_impl):
            res[impl] = bench.run_probe(spec, impl, warmup=1, repeats=args.scaling_repeats)
        audio = batch * seconds
        row = {
            "seconds": seconds,
            "batch": batch,
            "task": spec.task,
            "dtype": spec.dtype,
            "hf": hf_impl,
            "results": res,
        }
        if all(r.get("median_s") for r in res.values()):
            row["s_per_audio_s"] = {k: r["median_s"] / audio for k, r in res.items()}
            row["speedup"] = res[hf_impl]["median_s"] / res["ours"]["median_s"]
            row["memory_ratio"] = res["ours"]["rss_peak_mb"] / res[hf_impl]["rss_peak_mb"]
        rows.append(row)
        log(
            f"scaling {seconds:g}s x{batch}: "
            + json.dumps({k: row.get(k) for k in ("speedup", "memory_ratio")})
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config", default="base", choices=["tiny", "base", "large"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "both"],
        help="auto: float32, plus bfloat16 where the hardware has it",
    )
    p.add_argument(
        "--tasks",
        default="all",
        help="comma list of pretrain,finetune,infer (default all; none: only --scaling)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the fresh-process memory probes"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also a torch.compile row per task and dtype: ours' dense "
        "part, HF's whole model (compile time = first call minus the median step)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile one step of ours and HF's best per row: self time per aten op",
    )
    p.add_argument(
        "--scaling", default="", help="comma list of input seconds, e.g. 2,4,8,16,32 (off by default)"
    )
    p.add_argument("--scaling-task", default="pretrain", choices=list(TASKS))
    p.add_argument("--scaling-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--scaling-hf-attn", default="sdpa", choices=["eager", "sdpa"])
    p.add_argument(
        "--scaling-batch1-from",
        type=float,
        default=16.0,
        help="use batch 1 from this length on (memory: HF needs 18 GB at 2 x 32 s eager)",
    )
    p.add_argument("--scaling-repeats", type=int, default=1)
    p.add_argument("--out", default="", help="write the JSON report here (and the markdown next to it)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.out:  # before minutes of measuring: a report that cannot be written is said at once
        folder = os.path.dirname(os.path.abspath(args.out))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"--out {args.out}: cannot create its folder ({e.strerror})") from None
        if os.path.isdir(args.out) or not os.access(folder, os.W_OK):
            raise SystemExit(f"--out {args.out}: not a writable file path")
    report = run_benchmark(args, log=lambda s: print(s, file=sys.stderr, flush=True))
    md = render_markdown(report)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(md)
    return report


if __name__ == "__main__":
    main()
