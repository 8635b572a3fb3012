#!/usr/bin/env python
"""The CUDA path in one command (``scripts/gpu_check.sh``): the ``cuda`` tests, then a short BASE
benchmark against transformers, in a wall-clock budget, the JSON report written as it goes.

Stages, each in its own process with its own deadline (killed at it, with what it had written kept):

1. ``tests``: ``pytest -m cuda -x tests/test_cuda.py`` (fail-fast; a failure skips the benchmark
   unless ``--keep-going``);
2. ``eager``: pretraining and fine-tuning steps, float32 / bf16 / fp16, ours vs transformers
   (eager and sdpa attention), interleaved medians (``tools/benchmarking.time_interleaved``),
   then the peak GPU memory of one step of ours and of transformers' faster mode
   (``benchmarking.probe``: ``torch.cuda.max_memory_allocated``);
3. ``compiled``: the same with ``torch.compile`` (ours' dense part, transformers' whole model,
   against its sdpa mode only), bf16 first, as long as the budget lasts; rows left out are
   recorded as skipped.

Without CUDA it prints one line and exits 0, writing nothing. Exit status: 0 all passed, 1 a test
or a measurement failed. ``--out`` (default ``$OUT/gpu_check.json`` when ``OUT`` is set, else
``./gpu_check.json``); the table goes next to it as ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TASKS = ("pretrain", "finetune")
DTYPES = ("float32", "bfloat16", "float16")
COMPILED_ORDER = [(t, d) for d in ("bfloat16", "float32", "float16") for t in TASKS]


def plan(stage: str) -> list[tuple[str, str, bool]]:
    """The rows of a benchmark stage, in the order they are measured."""
    if stage == "eager":
        return [(t, d, False) for t in TASKS for d in DTYPES]
    return [(t, d, True) for t, d in COMPILED_ORDER]


# ----------------------------------------------------------------------------- the report file
def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def save(path: Path, report: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a file), with the table beside it."""
    report["elapsed_s"] = round(time.time() - report["started_unix"], 1)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)
    path.with_suffix(".md").write_text(render(report))


def render(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    bench = report.get("benchmark", {})
    lines = [
        f"# gpu_check {report['started']}: {report.get('status', '?')}",
        "",
        f"{env.get('device')} (sm {env.get('capability')}), torch {env.get('torch')} (CUDA "
        f"{env.get('cuda')}), transformers {env.get('transformers')}; BASE, batch {bench.get('batch')} "
        f"× {bench.get('seconds')} s; median of {bench.get('repeats')} interleaved steps after "
        f"{bench.get('warmup')} warmup; TF32 matmul {env.get('tf32_matmul')}, "
        f"TF32 cuDNN {env.get('tf32_cudnn')}",
        "",
    ]
    for name, stage in report.get("stages", {}).items():
        lines.append(
            f"- {name}: {stage.get('status')} ({stage.get('wall_s', '?')} s) {stage.get('summary', '')}"
        )
    lines += [
        "",
        "| task | dtype | compiled | ours s | HF eager s | HF sdpa s | speedup vs HF best | "
        "peak GPU GiB ours | HF best | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    gib = lambda mb: f"{mb / 1024:.2f}" if isinstance(mb, (int, float)) else "–"  # noqa: E731
    for r in report.get("rows", []):
        head = f"| {r['task']} | {r['dtype']} | {'yes' if r['compile'] else 'no'} |"
        if "median_s" not in r:
            lines.append(head + f" {r.get('skipped') or r.get('error', '?')} ||||||")
            continue
        med = r["median_s"]
        cell = lambda k: f"{med[k]:.3f}" if k in med else "–"  # noqa: E731
        mem = r.get("cuda_peak_mb", {})
        ratio = f"{mem['ours'] / mem[r['hf_best']]:.2f}" if len(mem) == 2 else "–"
        lines.append(
            head + f" {cell('ours')} | {cell('hf_eager')} | {cell('hf_sdpa')} | **{r['speedup']:.2f}×** "
            f"({r['hf_best'][3:]}) | {gib(mem.get('ours'))} | {gib(mem.get(r['hf_best']))} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- stages run by the parent
def run_stage(cmd: list[str], deadline: float, log: Path) -> tuple[int | None, float]:
    """``cmd`` in its own process group until it exits or ``deadline`` (then the whole group is
    killed: torch.compile's worker processes too). Returns (exit status or None if killed, wall s)."""
    t0 = time.time()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc: int | None = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, round(time.time() - t0, 1)


def tail(path: Path, chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:]


def test_outcomes(junit: Path) -> dict[str, Any]:
    """Per test: outcome and seconds, from pytest's JUnit XML."""
    out: dict[str, Any] = {}
    if not junit.exists():
        return out
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = child.tag
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        out[case.get("name")] = {"outcome": outcome, "s": round(float(case.get("time", 0)), 2)}
    return out


def parent(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}): nothing checked, nothing written"
        )
        return 0
    start = time.time()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        import transformers

        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    props = torch.cuda.get_device_properties(0)
    report: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "started_unix": start,
        "budget_s": args.budget,
        "status": "running",
        "command": sys.argv,
        "environment": {
            "device": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "transformers": hf_version,
            "python": sys.version.split()[0],
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
        },
        "benchmark": {
            "config": "base",
            "batch": args.batch,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "method": "tools/benchmarking.time_interleaved (ours, HF eager, HF sdpa; same weights, inputs, "
            "masks and distractors; one forward+backward per step, synchronized; median). bf16: autocast, "
            "ours with the trainer's one-op weight cast. fp16 the same under float16 autocast (no "
            "GradScaler: a scalar multiply of the loss). Memory: benchmarking.probe in "
            "this process after the timing (each model built alone, max_memory_allocated over one step, "
            "eager). Compiled rows: ours' dense part (compile_dense) vs HF's whole model, sdpa only.",
        },
        "stages": {},
        "rows": [],
    }
    save(out, report)
    print(f"gpu_check: {props.name}, torch {torch.__version__}; writing {out}", flush=True)
    deadline = start + args.budget
    failed = False
    logs = Path(tempfile.mkdtemp(prefix="gpu_check_"))

    # 1. the cuda tests
    junit = logs / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-x", "-v", "-rfEsxX", "-p", "no:cacheprovider"]
    cmd += ["tests/test_cuda.py", f"--junitxml={junit}"]
    rc, wall = run_stage(cmd, min(deadline, start + args.tests_limit), logs / "tests.log")
    outcomes = test_outcomes(junit)
    counts = {k: sum(o["outcome"] == k for o in outcomes.values()) for k in ("passed", "failure", "error")}
    status = "timed out" if rc is None else "passed" if rc == 0 else "failed"
    report["stages"]["tests"] = {
        "status": status,
        "exit": rc,
        "wall_s": wall,
        "summary": (tail(logs / "tests.log", 300).strip().splitlines() or [""])[-1],
        "counts": counts,
        "tests": outcomes,
        "log_tail": tail(logs / "tests.log"),
    }
    save(out, report)
    print(f"gpu_check: tests {status} in {wall} s: {counts}", flush=True)
    failed |= status != "passed"
    if status == "failed" and not args.keep_going:
        report["stages"]["benchmark"] = {
            "status": "skipped",
            "summary": "a test failed (--keep-going runs it anyway)",
        }
        return finish(out, report, failed)

    # 2. eager rows, 3. compiled rows, each a child process writing rows into the report
    stages = [("eager", args.eager_limit)] + ([("compiled", None)] if args.compile else [])
    for name, limit in stages:
        left = deadline - time.time()
        if left < {"eager": 20, "compiled": 60}[name]:  # a compiled row compiles 2 BASE models
            report["stages"][name] = {"status": "skipped", "summary": f"over budget ({left:.0f} s left)"}
            save(out, report)
            continue
        stage_deadline = deadline if limit is None else min(deadline, time.time() + limit)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--out", str(out)]
        cmd += [
            "--deadline",
            f"{stage_deadline:.1f}",
            "--batch",
            str(args.batch),
            "--seconds",
            str(args.seconds),
        ]
        cmd += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        rc, wall = run_stage(cmd, stage_deadline, logs / f"{name}.log")
        report = load(out)  # the child's rows
        status = "killed at its deadline" if rc is None else "done" if rc == 0 else "failed"
        if rc is None and report.get("in_flight"):
            report["rows"].append({**report.pop("in_flight"), "skipped": "killed at the stage deadline"})
        report.pop("in_flight", None)
        done = {(r["task"], r["dtype"], r["compile"]) for r in report["rows"]}
        why = f"not reached: the {name} stage was {status}"
        report["rows"] += [
            {"task": t, "dtype": d, "compile": c, "skipped": why}
            for t, d, c in plan(name)
            if (t, d, c) not in done
        ]
        errors = [r for r in report["rows"] if "error" in r]
        report["stages"][name] = {
            "status": status,
            "exit": rc,
            "wall_s": wall,
            "log_tail": tail(logs / f"{name}.log"),
        }
        failed |= rc not in (0, None) or bool(errors)
        save(out, report)
        print(f"gpu_check: {name} benchmark {status} in {wall} s", flush=True)
        if errors and not args.keep_going:
            break
    return finish(out, report, failed)


def finish(out: Path, report: dict[str, Any], failed: bool) -> int:
    report["status"] = "failed" if failed else "passed"
    save(out, report)
    print(render(report), flush=True)
    print(f"gpu_check: {report['status']} in {report['elapsed_s']} s; {out}", flush=True)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- a benchmark stage (child)
def measure(task: str, dtype: str, compiled: bool, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from wav2vec2_lite.tools.benchmarking import BenchSpec, probe, speedup_row, time_interleaved

    on_cuda = args.device.startswith("cuda")
    spec = BenchSpec(args.config, args.batch, args.seconds, task, dtype, args.device, compile=compiled)
    impls = ("ours", "hf_sdpa") if compiled else ("ours", "hf_eager", "hf_sdpa")
    res = time_interleaved(spec, impls, warmup=args.warmup, repeats=args.repeats)
    row = {"task": task, "dtype": dtype, "compile": compiled, **speedup_row(res)}
    med, hf_best = row["median_s"], row["hf_best"]
    row |= {
        "speedup_spread": [
            min(res["times_s"][hf_best]) / max(res["times_s"]["ours"]),
            max(res["times_s"][hf_best]) / min(res["times_s"]["ours"]),
        ],
        "tflops_ours": res["flops"] / med["ours"] / 1e12,
        "tflops_hf_best": res["flops"] / med[hf_best] / 1e12,
    }
    if compiled:
        row["compile_s"] = {k: res["first_call_s"][k] - med[k] for k in med}
    elif on_cuda:  # peak memory of one step of each, built alone (nothing else of this process on the GPU)
        row["cuda_peak_mb"] = {}
        for impl in ("ours", hf_best):
            gc.collect()
            torch.cuda.empty_cache()
            row.setdefault("cuda_allocated_before_mb", {})[impl] = torch.cuda.memory_allocated() / 2**20
            row["cuda_peak_mb"][impl] = probe(spec, impl)["cuda_peak_mb"]
    return row


def child(args: argparse.Namespace) -> int:
    import torch

    torch.backends.cudnn.benchmark = False  # the default, stated: no autotuning per shape
    rows = plan(args.stage)
    out, last = Path(args.out), None
    for i, (task, dtype, compiled) in enumerate(rows):
        left = args.deadline - time.time()
        need = 1.1 * last if last is not None else 0.0
        if left < need or left < 5:
            report = load(out)
            why = f"over budget ({left:.0f} s left" + (f"; the last row took {last:.0f} s)" if last else ")")
            report["rows"] += [{"task": t, "dtype": d, "compile": c, "skipped": why} for t, d, c in rows[i:]]
            save(out, report)
            return 0
        report = load(out)
        report["in_flight"] = {"task": task, "dtype": dtype, "compile": compiled}
        save(out, report)
        t0 = time.time()
        try:
            row = measure(task, dtype, compiled, args)
        except Exception as e:  # recorded, and the stage stops: fail fast
            row = {"task": task, "dtype": dtype, "compile": compiled, "error": f"{type(e).__name__}: {e}"}
        row["wall_s"] = round(time.time() - t0, 1)
        last = row["wall_s"] if last is None else max(last, row["wall_s"])
        report = load(out)
        report.pop("in_flight", None)
        report["rows"].append(row)
        save(out, report)
        print(
            json.dumps({k: row.get(k) for k in ("task", "dtype", "compile", "speedup", "wall_s", "error")}),
            flush=True,
        )
        if "error" in row:
            return 1
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = (
        Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")
    )
    p.add_argument("--out", default=str(default_out), help=f"the JSON report (default {default_out})")
    p.add_argument("--budget", type=float, default=270.0, help="seconds for everything (default 270)")
    p.add_argument("--tests-limit", type=float, default=130.0, help="seconds for the tests (default 130)")
    p.add_argument("--eager-limit", type=float, default=80.0, help="seconds for the eager rows (default 80)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="no compiled rows")
    p.add_argument("--keep-going", action="store_true", help="benchmark even after a test failed")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="input length (default 8 x 10 s)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stage", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    p.add_argument("--config", default="base", help=argparse.SUPPRESS)  # tests: tiny on the CPU
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return child(args) if args.stage else parent(args)


if __name__ == "__main__":
    sys.exit(main())
