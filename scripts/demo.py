"""The main job: the whole wav2vec 2.0 story on the built-in offline speech corpus (minutes on 2 cores).

    python scripts/demo.py                                # the shipped checkpoint vs scratch,
                                                          # with 1 and 10 min of labels
    python scripts/demo.py --pretrained runs/my_pretrain  # any pretraining run or model folder instead

Steps (each is skipped when its output is already complete, so a re-run resumes):
 1. build the espeak-ng corpus (unlabeled / train_1min / train_10min / train_1h / valid / test; seed 0,
    the same held-out valid/test speakers and sentences as the shipped checkpoint's corpus);
 2. a short pretraining on ``unlabeled``: a pipeline check (the loss falls, the codebook is used),
    not the model that is fine-tuned;
 3. fine-tune the shipped pretrained checkpoint (``wav2vec2_lite.pretrained``) with CTC, and the
    same architecture from scratch, on 1 and 10 minutes of labels, 2 seeds each, the same budget
    per size for both arms; the runs go side by side, one core each;
 4. score every run's best-valid checkpoint on ``test``, print the table beside the committed label
    curve, write plots, transcribe a few test files.

This is a quick check, never used to choose anything: the label curve (docs/results/label_curve.md,
``w2v2-experiment`` on experiments/label_curve/spec.yaml) is the experiment, with lr trials chosen on
valid and test scored once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(cmd: list[str], log: Path) -> float:
    """Run one command (its progress bar on the terminal); return minutes taken."""
    print("\n$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"command failed with exit code {proc.returncode}: {' '.join(cmd)} (see {log})")
    return (time.time() - t0) / 60


def last_update(run_dir: Path) -> int:
    """The last update a run logged (0 before its first log line)."""
    metrics = run_dir / "metrics.jsonl"
    last = 0
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            if line.strip():
                try:
                    last = max(last, int(json.loads(line).get("update", 0)))
                except ValueError:  # a line being written right now
                    pass
    return last


def run_side_by_side(jobs: list[tuple[list[str], Path, int]], parallel: int) -> list[float]:
    """Run training commands ``parallel`` at a time, each logging to ``run_dir/train.log``, with one
    progress bar over all their updates; return each command's wall minutes (in ``jobs``' order).

    A tiny model keeps two cores busy only about half the time, so two 1-thread runs side by side
    finish in about the time of one 2-thread run."""
    from tqdm import tqdm

    minutes = [0.0] * len(jobs)
    pending = list(enumerate(jobs))
    active: dict[int, tuple[subprocess.Popen, float, object]] = {}
    total = sum(updates for _, _, updates in jobs)
    base = {i: last_update(rd) for i, (_, rd, _) in enumerate(jobs)}
    with tqdm(total=total, desc=f"fine-tuning {len(jobs)} runs, {parallel} at a time", unit="upd") as bar:
        bar.update(sum(base.values()))
        while pending or active:
            while pending and len(active) < parallel:
                i, (cmd, rd, _) = pending.pop(0)
                rd.mkdir(parents=True, exist_ok=True)
                log = open(rd / "train.log", "a")
                tqdm.write("$ " + " ".join(cmd) + f"  > {rd / 'train.log'}")
                active[i] = (
                    subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT),
                    time.time(),
                    log,
                )
            time.sleep(2.0)
            for i, (proc, t0, log) in list(active.items()):
                now = last_update(jobs[i][1])
                bar.update(now - base[i])
                base[i] = now
                if proc.poll() is None:
                    continue
                log.close()
                del active[i]
                if proc.returncode != 0:
                    for other, _, other_log in active.values():
                        other.terminate()
                        other.wait()
                        other_log.close()
                    raise SystemExit(
                        f"command failed with exit code {proc.returncode}: {' '.join(jobs[i][0])} "
                        f"(see {jobs[i][1] / 'train.log'})"
                    )
                minutes[i] = (time.time() - t0) / 60
    return minutes


def done(run_dir: Path, updates: int) -> bool:
    """A run is complete when its last checkpoint reached ``updates``."""
    return (
        last_update(run_dir) >= updates and (run_dir / "checkpoints" / "last" / "model.safetensors").is_file()
    )


def core_minutes(run_dir: Path) -> float:
    """Compute recorded for a run, in core-minutes (wall minutes x threads, summed over sittings)."""
    path = run_dir / "minutes.json"
    return json.loads(path.read_text()).get("core_minutes", 0.0) if path.is_file() else 0.0


def add_minutes(run_dir: Path, wall_minutes: float, threads: int) -> None:
    total = core_minutes(run_dir) + wall_minutes * threads
    (run_dir / "minutes.json").write_text(json.dumps({"core_minutes": total}))


def same_recipe(script: str, config: str, overrides: list[str], run_dir: Path) -> None:
    """A run folder is resumed or reused only for the recipe that made it: ``demo_step.json``
    records it, and a folder made with another one (e.g. an older demo) stops the demo."""
    recipe = {
        "script": script,
        "config": config,
        "overrides": [o for o in overrides if "max_updates" not in o],
    }
    path = run_dir / "demo_step.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != recipe:
            raise SystemExit(
                f"{run_dir} was trained with another recipe ({old['config']} {' '.join(old['overrides'])}); "
                f"remove it or pass another --out"
            )
    elif (run_dir / "metrics.jsonl").is_file():
        raise SystemExit(
            f"{run_dir} holds a run without a recorded demo recipe (an older demo?); "
            f"remove it or pass another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=1))


def train_cmd(
    script: str, config: str, overrides: list[str], run_dir: Path, updates: int
) -> list[str] | None:
    """The command that trains ``run_dir`` up to ``updates`` (None when that is already done)."""
    same_recipe(script, config, overrides, run_dir)
    if done(run_dir, updates):
        print(f"[demo] {run_dir} already complete ({updates} updates): skipped")
        return None
    return [
        sys.executable,
        f"scripts/{script}",
        "--config-name",
        config,
        *overrides,
        f"trainer.max_updates={updates}",
        f"run_dir={run_dir}",
        f"hydra.run.dir={run_dir}",
    ]


def gumbel_decay(updates: int) -> float:
    """Per-update decay of the Gumbel temperature that anneals 2 -> 0.5 over ~92 % of a run of
    ``updates`` (0.999 at 1500). A fixed decay reaches the floor early in a short run and the
    contrastive task stalls (docs/results/history.md, "What the recipe search found")."""
    return round(0.999 ** (1500 / updates), 7)


# Fine-tuning recipes: the first lr trial of each arm in the label curve's spec
# (experiments/label_curve/spec.yaml). Same architecture for both (the shipped checkpoint's:
# tiny, pre-LN); scratch trains every parameter from the first update.
ARMS = {
    "pretrained": ["finetune.freeze_feature_encoder=false", "ctc.feature_grad_mult=1.0", "optim.lr=4e-3"],
    "scratch": [
        "model=tiny",
        "model.layer_norm_first=true",
        "model.contrastive.num_codes_per_group=8",
        "finetune.freeze_feature_encoder=false",
        "finetune.freeze_finetune_updates=0",
        "ctc.feature_grad_mult=1.0",
        "optim.lr=2e-3",
    ],
}
SIZES = {"train_1min": 1, "train_10min": 10}  # subset -> labeled minutes


def pipeline_check_summary(run_dir: Path) -> str:
    """One line: the short pretraining's first and last valid loss and accuracy, and code usage."""
    valid = [r for r in _records(run_dir) if r.get("kind") == "valid"]
    if not valid:
        return "no validation recorded"
    a, b = valid[0], valid[-1]
    return (
        f"valid contrastive loss {a['loss']:.3f} -> {b['loss']:.3f} "
        f"(chance {b.get('chance_loss', float('nan')):.3f}), "
        f"accuracy {a['accuracy']:.3f} -> {b['accuracy']:.3f}, code perplexity {b['code_perplexity']:.1f}"
    )


def shipped_description(pretrained: str) -> str:
    """Which model the pretrained arm starts from, and how it was made (its provenance)."""
    from wav2vec2_lite import pretrained as bundles

    if pretrained not in bundles.available() or Path(pretrained).exists():
        return f"pretrained arm starts from {pretrained}"
    p = bundles.provenance(pretrained)
    c = p["corpus"]
    last = p["final_metrics"]["chosen"]
    return (
        f"pretrained arm starts from the shipped checkpoint '{pretrained}': "
        f"{p['num_parameters']:,} parameters, {p['objective']} objective, {p['updates']:,} updates "
        f"({p['wall_clock_minutes']:.0f} min on {p['num_threads']} threads of a "
        f"{p['cpu']['torch_capability']} CPU), {p['hours_of_audio_seen']:.0f} h of audio seen from "
        f"{c['unlabeled']['minutes'] / 60:.0f} h of synthesized speech "
        f"({c['unlabeled']['num_speakers']} speakers, none of valid/test), "
        f"valid accuracy {last['accuracy']:.3f}; code {p['code_version']}; "
        f"wav2vec2_lite/pretrained/{pretrained}/provenance.json has the exact commands"
    )


def committed_curve() -> str:
    """The ratio table of the committed label curve, or a line saying there is none yet."""
    results = ROOT / "experiments" / "label_curve"
    report = results / "report.md"
    if not report.is_file():
        plan = results / "plan.json"
        total = len(json.loads(plan.read_text())["runs"]) if plan.is_file() else 0
        done = len(list((results / "runs").glob("*.json"))) if (results / "runs").is_dir() else 0
        state = f"in progress, {done} of {total} runs done, test not scored" if total else "not run yet"
        return (
            f"The committed label curve: {state} (protocol, plan and where it stands: "
            "docs/results/label_curve.md); until it is scored, this quick check is the only comparison, "
            "and two seeds cannot settle it."
        )
    text = report.read_text(encoding="utf-8")
    part = text[text.index("## pretrained / scratch") :] if "## pretrained / scratch" in text else text
    return "The committed label curve (experiments/label_curve/report.md):\n" + part.split("\n\n## ")[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data/demo")
    p.add_argument("--out", type=Path, default=ROOT / "runs/demo")
    p.add_argument(
        "--pretrained",
        default="tiny-espeak-10h",
        help="the pretrained arm's start: a shipped checkpoint's name, a run or a model folder",
    )
    p.add_argument("--check-updates", type=int, default=300, help="updates of the pipeline-check pretraining")
    p.add_argument(
        "--updates",
        nargs="+",
        default=["train_1min=250", "train_10min=500"],
        metavar="SUBSET=N",
        help="fine-tuning updates per label size, the same for both arms",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--corpus-scale", type=float, default=None, help="scale every split of the corpus")
    p.add_argument("--precision", default="32", choices=["32", "bf16"])
    p.add_argument("--transcribe", type=int, default=3, help="test files to transcribe at the end")
    p.add_argument(
        "--cores",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="CPU cores to use: pretraining uses all, fine-tuning runs go side by side, one per core",
    )
    args = p.parse_args(argv)
    budgets: dict[str, int] = {}
    for item in args.updates:
        subset, _, n = item.partition("=")
        if subset not in SIZES or not n.isdigit() or int(n) < 1:
            p.error(f"--updates {item!r}: expected SUBSET=N with SUBSET in {sorted(SIZES)} and N >= 1")
        budgets[subset] = int(n)
    from wav2vec2_lite.pretrained import UnknownPretrainedError, resolve

    try:
        resolve(args.pretrained)
    except UnknownPretrainedError as e:
        p.error(f"--pretrained {e}")
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    # 1. corpus
    corpus_cmd = [sys.executable, "scripts/synth_corpus.py", "--out", str(args.data)]
    if args.corpus_scale is not None:
        corpus_cmd += ["--scale", str(args.corpus_scale)]
    run(corpus_cmd, args.data)

    common = [
        f"data.manifest_dir={args.data}",
        f"trainer.precision={args.precision}",
        "data.valid_subset=valid",
    ]
    # 2. the pipeline check: a short pretraining, all cores
    check_dir = args.out / "pretrain_check"
    check = [
        *common,
        "data.train_subset=unlabeled",
        f"schedule.total_updates={args.check_updates}",
        f"schedule.warmup_updates={max(1, args.check_updates // 10)}",
        f"model.contrastive.gumbel_temperature=[2.0,0.5,{gumbel_decay(args.check_updates)}]",
        f"trainer.valid_interval={max(1, args.check_updates // 3)}",
        f"trainer.num_threads={args.cores}",
    ]
    cmd = train_cmd("pretrain.py", "pretrain_demo", check, check_dir, args.check_updates)
    if cmd is not None:
        add_minutes(check_dir, run(cmd, check_dir), args.cores)
    print(f"[demo] pipeline check ({args.check_updates} updates): {pipeline_check_summary(check_dir)}")

    # 3. fine-tuning: the shipped checkpoint vs scratch, same labels, same budget, side by side
    arms = {
        "pretrained": (
            "finetune_pretrained",
            [f"finetune.pretrained={args.pretrained}", *ARMS["pretrained"]],
        ),
        "scratch": ("finetune_scratch", ARMS["scratch"]),
    }
    jobs, dirs = [], {}
    parallel = max(1, min(args.cores, len(arms) * len(budgets) * len(args.seeds)))
    threads = max(1, args.cores // parallel)
    for subset, updates in budgets.items():
        for arm, (folder, overrides) in arms.items():
            for seed in args.seeds:
                # the budget is in the folder name: a run of another length is another run
                rd = dirs[arm, subset, seed] = args.out / folder / f"{subset}_seed{seed}_u{updates}"
                cmd = train_cmd(
                    "finetune.py",
                    "finetune_demo",
                    [
                        *common,
                        f"data.train_subset={subset}",
                        f"trainer.seed={seed}",
                        f"trainer.valid_interval={max(1, updates // 5)}",
                        f"trainer.num_threads={threads}",
                        "trainer.progress=false",
                        *overrides,
                    ],
                    rd,
                    updates,
                )
                if cmd is not None:
                    jobs.append((cmd, rd, updates))
    for (_, rd, _), minutes in zip(jobs, run_side_by_side(jobs, parallel)):
        add_minutes(rd, minutes, threads)

    # 4. test scores of each run's best-valid checkpoint (nothing is chosen: one trial per arm)
    from wav2vec2_lite.asr.evaluate import by_kind, evaluate_split, sentence_kinds

    kinds = sentence_kinds(args.data)
    runs: dict[str, dict[str, list[dict]]] = {subset: {arm: [] for arm in arms} for subset in budgets}
    for (arm, subset, seed), rd in dirs.items():
        res = evaluate_split(rd, args.data, "test")
        row = {
            "dir": str(rd),
            "seed": seed,
            "test_cer": res.cer,
            "test_wer": res.wer,
            "minutes": core_minutes(rd),
        }
        for kind, part in by_kind(res, kinds).items():
            row[f"test_cer_{kind}"] = part.cer
        runs[subset][arm].append(row)
    table = _table(runs, budgets)
    print("\n[demo] " + shipped_description(args.pretrained))
    print("\n" + table + "\n" + committed_curve())
    results = {
        "pretrained": args.pretrained,
        "budgets": budgets,
        "runs": runs,
        "pipeline_check": pipeline_check_summary(check_dir),
        "total_minutes": (time.time() - t_start) / 60,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(table)
    _plots(args.out, check_dir, dirs)
    best = min(runs[max(budgets, key=SIZES.get)]["pretrained"], key=lambda r: r["test_cer"])
    _transcribe(Path(best["dir"]), args.data, args.transcribe)
    print(f"\n[demo] done in {(time.time() - t_start) / 60:.1f} min; results, plots and runs in {args.out}")


def _records(run_dir: Path) -> list[dict]:
    from wav2vec2_lite.tools.plots import read_records

    return read_records(run_dir)


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _table(runs: dict[str, dict[str, list[dict]]], budgets: dict[str, int]) -> str:
    """Test CER per label size and arm (mean ± sd over seeds) and the pretrained / scratch ratio."""
    lines = [
        "Quick check (short budgets, one lr per arm, 2 seeds; never used for selection):",
        "",
        "| labeled | updates | pretrained test CER % | scratch test CER % | ratio "
        "| per seed (pretrained / scratch) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for subset, arms in runs.items():
        pre, scr = ([r["test_cer"] for r in arms[a]] for a in ("pretrained", "scratch"))
        ratio = statistics.mean(pre) / statistics.mean(scr) if statistics.mean(scr) > 0 else float("nan")
        seeds = ", ".join(f"{100 * a:.1f} / {100 * b:.1f}" for a, b in zip(pre, scr))
        lines.append(
            f"| {SIZES[subset]} min ({subset}) | {budgets[subset]} "
            f"| {_mean_spread(pre)} | {_mean_spread(scr)} | {ratio:.2f} | {seeds} |"
        )
    return "\n".join(lines) + "\n"


def _plots(out: Path, check_dir: Path, dirs: dict[tuple[str, str, int], Path]) -> None:
    try:
        from wav2vec2_lite.serialization import read_config
        from wav2vec2_lite.tools.plots import FINETUNE_PANELS, PRETRAIN_PANELS, plot_curves, read_records
        from wav2vec2_lite.tools.report import chance_lines
    except ImportError:
        return

    try:
        chance = chance_lines(read_config(check_dir / "checkpoints" / "last"))
        written = plot_curves(
            {"pipeline check": read_records(check_dir)},
            PRETRAIN_PANELS,
            out / "pretrain_check.png",
            hlines=chance,
            title="pipeline check: a short pretraining",
        )
        print(f"[demo] wrote {written}")
        for subset in sorted({s for _, s, _ in dirs}):
            ft = {
                f"{arm} (seed {seed})": read_records(rd) for (arm, s, seed), rd in dirs.items() if s == subset
            }
            written = plot_curves(
                ft, FINETUNE_PANELS, out / f"finetune_{subset}.png", title=f"CTC fine-tuning on {subset}"
            )
            print(f"[demo] wrote {written}")
    except ImportError:
        print("[demo] matplotlib missing: no plots (pip install 'wav2vec2_lite[plot]')")


def _transcribe(model_dir: Path, data: Path, n: int) -> None:
    from wav2vec2_lite.asr.transcribe import Transcriber
    from wav2vec2_lite.data.manifest import read_labels, read_manifest

    tr = Transcriber.from_path(model_dir)
    manifest = read_manifest(data / "test.tsv")
    refs = read_labels(data / "test.wrd")
    print(f"\n[demo] transcribing {n} test files with {model_dir}:")
    for path, ref in list(zip(manifest.paths, refs))[:n]:
        out = tr.transcribe_file(manifest.root / path)
        print(f"  {path}\n    ref: {ref}\n    hyp: {out.text}")


if __name__ == "__main__":
    main()
