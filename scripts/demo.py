"""The main job: the whole wav2vec 2.0 story on the built-in offline speech corpus.

    python scripts/demo.py            # default: the short demo (minutes on a CPU)
    FULL=1 python scripts/demo.py     # the longer "does pretraining help?" experiment (hours, resumable)

Timings and results of both: docs/results/history.md.

Steps (each is skipped when its output is already complete, so a re-run resumes):
 1. build the espeak-ng corpus (unlabeled / train_10min / train_1h / valid / test);
 2. pretrain a tiny wav2vec 2.0 on ``unlabeled`` (self-supervised, no transcripts);
 3. fine-tune it with CTC on ``train_10min`` (head-only warm-up; feature encoder frozen, FULL: trained);
 4. fine-tune the same architecture from scratch on the same labels and budget (all parameters);
    the fine-tuning runs go side by side, one core each;
 5. score both on ``test`` (CER, WER), print a table, write plots, transcribe a few test files.
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
                active[i] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), time.time(), log)
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
                    raise SystemExit(f"command failed with exit code {proc.returncode}: {' '.join(jobs[i][0])} "
                                     f"(see {jobs[i][1] / 'train.log'})")
                minutes[i] = (time.time() - t0) / 60
    return minutes


def done(run_dir: Path, updates: int) -> bool:
    """A run is complete when its last checkpoint reached ``updates``."""
    return last_update(run_dir) >= updates and (run_dir / "checkpoints" / "last" / "model.safetensors").is_file()


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
    recipe = {"script": script, "config": config, "overrides": [o for o in overrides if "max_updates" not in o]}
    path = run_dir / "demo_step.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != recipe:
            raise SystemExit(f"{run_dir} was trained with another recipe ({old['config']} {' '.join(old['overrides'])}); "
                             f"remove it or pass another --out")
    elif (run_dir / "metrics.jsonl").is_file():
        raise SystemExit(f"{run_dir} holds a run without a recorded demo recipe (an older demo?); "
                         f"remove it or pass another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=1))


def train_cmd(script: str, config: str, overrides: list[str], run_dir: Path, updates: int) -> list[str] | None:
    """The command that trains ``run_dir`` up to ``updates`` (None when that is already done)."""
    same_recipe(script, config, overrides, run_dir)
    if done(run_dir, updates):
        print(f"[demo] {run_dir} already complete ({updates} updates): skipped")
        return None
    return [sys.executable, f"scripts/{script}", "--config-name", config, *overrides,
            f"trainer.max_updates={updates}", f"run_dir={run_dir}", f"hydra.run.dir={run_dir}"]


def lr_scale_tag(lr_scale: dict[str, float] | None) -> str:
    """``{"lm_head": 4.0}`` → ``"_lrscale_lm_head4"``: names a per-part-lr variant's runs and results."""
    return "_lrscale_" + "_".join(f"{k}{v:g}" for k, v in lr_scale.items()) if lr_scale else ""


def finetune_arms(pre_dir: Path, pretrained_encoder: str = "frozen",
                  lr_scale: dict[str, float] | None = None) -> dict[str, tuple[str, list[str]]]:
    """Each fine-tuning arm's run folder and overrides: the pretrained model (its conv feature
    encoder ``frozen`` or ``trained`` too; ``lr_scale``: per-part learning rates, in the folder
    name) and the same architecture from scratch, which trains every parameter from the first
    update at one lr."""
    scratch = ["model=tiny", "model.layer_norm_first=true", "model.num_codes_per_group=8",
               "finetune.freeze_feature_encoder=false", "finetune.freeze_finetune_updates=0",
               "ctc.feature_grad_mult=1.0"]
    pretrained = ("finetune_pretrained", [f"finetune.pretrained={pre_dir}"])
    if pretrained_encoder == "trained":
        pretrained = ("finetune_pretrained_encoder_trained",
                      [*pretrained[1], "finetune.freeze_feature_encoder=false", "ctc.feature_grad_mult=1.0"])
    if lr_scale:
        pretrained = (pretrained[0] + lr_scale_tag(lr_scale),
                      [*pretrained[1], *(f"+optim.lr_scale.{k}={v:g}" for k, v in lr_scale.items())])
    return {"pretrained": pretrained, "scratch": ("finetune_scratch", scratch)}


def gumbel_decay(updates: int) -> float:
    """Per-update decay of the Gumbel temperature that anneals 2 -> 0.5 over ~92 % of a run of
    ``updates`` (0.999 at the default 1500). The tiny recipe's fixed decay reaches the floor early
    in a run and the contrastive task stalls; scaled to the run it keeps improving
    (docs/results/history.md, "What the recipe search found")."""
    return round(0.999 ** (1500 / updates), 7)


def main(argv: list[str] | None = None) -> None:
    full = os.environ.get("FULL", "0") not in ("", "0")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / ("data/demo_full" if full else "data/demo"))
    p.add_argument("--out", type=Path, default=ROOT / ("runs/demo_full" if full else "runs/demo"))
    # FULL: at the default 1500 updates the pretrained arm is level with scratch within the seed
    # spread, so the long run pretrains 10x longer, in resumable stages (docs/results/history.md)
    p.add_argument("--pretrain-updates", type=int, default=15000 if full else 1500)
    p.add_argument("--pretrain-stage-updates", type=int, default=6000,
                   help="FULL: pretrain in resumable stages of this many updates (each well under 1 h)")
    # The demo recipes train without the paper's L2 feature penalty: the conv features then grow,
    # but the paper's weight 10 held the task at chance in a probe, so it stays off by default
    # (docs/results/history.md, first round; docs/benchmarks.md, "Figures formerly in docstrings")
    p.add_argument("--feature-penalty", type=float, default=None,
                   help="pretraining's feature_penalty_weight (default: the recipe's, 0; the paper: 10)")
    # The pretrained arm's conv feature encoder: frozen during fine-tuning (the paper's recipe, the
    # demo's default) or fine-tuned with the rest. FULL trains it: frozen, the long run's pretrained
    # model under-fitted train_10min (docs/results/history.md, second round)
    p.add_argument("--pretrained-encoder", choices=["frozen", "trained"], default="trained" if full else "frozen",
                   help="fine-tune the pretrained model's conv feature encoder too (trained) or not (frozen)")
    # FULL: at 1500 updates the pretrained arm still under-fitted; 3000 let it fit
    # (docs/results/history.md, third round)
    p.add_argument("--finetune-updates", type=int, default=3000 if full else 1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3] if full else [1])
    # FULL: two trials per arm, each arm's pair from its own earlier valid results (1500 updates):
    # 1e-3 lost to 2e-3 on every pretrained seed, so the pretrained arm tries 2e-3 and 4e-3; scratch
    # chose 1e-3 once and 2e-3 twice (and 2e-3 stalled one seed), so it keeps those two
    # (docs/results/history.md, third round)
    p.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 4e-3] if full else [2e-3],
                   help="fine-tuning learning rates tried per arm (chosen on valid, never on test)")
    p.add_argument("--scratch-lrs", type=float, nargs="+", default=[1e-3, 2e-3] if full else None,
                   help="the scratch arm's own learning rates (default: --lrs; FULL: 1e-3 2e-3); give it as many as --lrs, "
                        "so both arms get the same number of trials")
    p.add_argument("--lr-scale", nargs="+", default=[], metavar="PREFIX=SCALE",
                   help="the pretrained arm's per-part learning rates (optim.lr_scale), e.g. lm_head=4 "
                        "wav2vec2.context=0.5: multiples of each trial's lr; its runs go to their own folder")
    p.add_argument("--corpus-scale", type=float, default=None, help="scale every split of the corpus")
    p.add_argument("--precision", default="32", choices=["32", "bf16"])
    p.add_argument("--transcribe", type=int, default=3, help="test files to transcribe at the end")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)),
                   help="CPU cores to use: pretraining uses all, fine-tuning runs go side by side, one per core")
    args = p.parse_args(argv)
    lrs = {"pretrained": args.lrs, "scratch": args.scratch_lrs or args.lrs}
    if len(lrs["scratch"]) != len(lrs["pretrained"]):
        p.error(f"--scratch-lrs gives {len(lrs['scratch'])} learning rates and --lrs {len(lrs['pretrained'])}: "
                f"both arms get the same number of trials")
    lr_scale: dict[str, float] = {}
    for item in args.lr_scale:
        prefix, _, value = item.partition("=")
        try:
            lr_scale[prefix] = float(value)
        except ValueError:
            p.error(f"--lr-scale {item!r}: expected PREFIX=SCALE, e.g. lm_head=4")
        if not prefix or not lr_scale[prefix] > 0:
            p.error(f"--lr-scale {item!r}: expected PREFIX=SCALE with SCALE > 0, e.g. lm_head=4")
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    # 1. corpus
    corpus_cmd = [sys.executable, "scripts/synth_corpus.py", "--out", str(args.data)]
    if full:
        corpus_cmd.append("--full")
    if args.corpus_scale is not None:
        corpus_cmd += ["--scale", str(args.corpus_scale)]
    run(corpus_cmd, args.data)

    common = [f"data.manifest_dir={args.data}", f"trainer.precision={args.precision}", "data.valid_subset=valid"]
    # 2. pretraining (resumable stages), all cores
    pre_dir = args.out / "pretrain"
    pre_overrides = [*common, "data.train_subset=unlabeled", f"schedule.total_updates={args.pretrain_updates}",
                     f"model.gumbel_temperature=[2.0,0.5,{gumbel_decay(args.pretrain_updates)}]",
                     f"trainer.num_threads={args.cores}"]
    if args.feature_penalty is not None:
        pre_overrides.append(f"model.feature_penalty_weight={args.feature_penalty}")
    stage = args.pretrain_stage_updates if full else args.pretrain_updates
    target = 0
    while target < args.pretrain_updates:
        target = min(target + stage, args.pretrain_updates)
        cmd = train_cmd("pretrain.py", "pretrain_demo", pre_overrides, pre_dir, target)
        if cmd is not None:
            add_minutes(pre_dir, run(cmd, pre_dir), args.cores)
    pre_minutes = core_minutes(pre_dir)

    # 3 + 4. fine-tuning: pretrained vs from scratch, same labels, same budget, same trials; the
    # runs go side by side, one core each (the thread count is part of each run's recorded recipe)
    arms = finetune_arms(pre_dir, args.pretrained_encoder, lr_scale)
    trials = [(arm, seed, lr) for arm in arms for seed in args.seeds for lr in lrs[arm]]
    parallel = max(1, min(args.cores, len(trials)))
    threads = max(1, args.cores // parallel)
    jobs, dirs = [], {}
    for arm, seed, lr in trials:
        folder, overrides = arms[arm]
        # the budget is in the folder name: a run of another length is another run, never resumed
        # into this one (its lr schedule spans its own length)
        rd = dirs[arm, seed, lr] = args.out / folder / f"seed{seed}_lr{lr:g}_u{args.finetune_updates}"
        cmd = train_cmd("finetune.py", "finetune_demo",
                        [*common, "data.train_subset=train_10min", f"optim.lr={lr}", f"trainer.seed={seed}",
                         f"trainer.num_threads={threads}", "trainer.progress=false", *overrides],
                        rd, args.finetune_updates)
        if cmd is not None:
            jobs.append((cmd, rd, args.finetune_updates))
    for (_, rd, _), minutes in zip(jobs, run_side_by_side(jobs, parallel)):
        add_minutes(rd, minutes, threads)

    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for arm in arms:
        for seed in args.seeds:
            tried = []
            for lr in lrs[arm]:
                rd = dirs[arm, seed, lr]
                valid = [r for r in _records(rd) if r.get("kind") == "valid"]
                # CER, then WER: at this size WER sits near 100 % for a long time while CER moves
                best_valid = min(((r["cer"], r["wer"]) for r in valid), default=(float("inf"), float("inf")))
                tried.append({"dir": rd, "lr": lr, "valid_cer": best_valid[0], "valid_wer": best_valid[1],
                              "minutes": core_minutes(rd)})
            best = min(tried, key=lambda t: (t["valid_cer"], t["valid_wer"]))  # chosen on valid, never on test
            runs[arm].append({**best, "seed": seed, "trial_minutes": sum(t["minutes"] for t in tried)})

    # 5. test scores
    from wav2vec2_lite.asr.evaluate import by_kind, evaluate_split, sentence_kinds

    kinds = sentence_kinds(args.data)
    for arm, trials in runs.items():
        for t in trials:
            res = evaluate_split(t["dir"], args.data, "test")
            t.update(test_wer=res.wer, test_cer=res.cer)
            # WER on the closed command domain: meaningful at a size where open-vocabulary WER is ~100 %
            for kind, part in by_kind(res, kinds).items():
                t.update({f"test_wer_{kind}": part.wer, f"test_cer_{kind}": part.cer})
    table = _table(runs, pre_minutes, encoder_trained=args.pretrained_encoder == "trained", lr_scale=lr_scale)
    print("\n" + table)
    results = {arm: [{k: (str(v) if isinstance(v, Path) else v) for k, v in t.items()} for t in trials]
               for arm, trials in runs.items()}
    results["pretrain_minutes"] = pre_minutes
    results["total_minutes"] = (time.time() - t_start) / 60
    # a per-part-lr variant keeps its own results beside the one-lr demo's, never over them
    tag = lr_scale_tag(lr_scale)
    (args.out / f"results{tag}.json").write_text(json.dumps(results, indent=2))
    (args.out / f"results{tag}.md").write_text(table)
    _plots(args.out, pre_dir, runs, tag)
    _transcribe(runs["pretrained"][0]["dir"], args.data, args.transcribe)
    print(f"\n[demo] done in {(time.time() - t_start) / 60:.1f} min; results, plots and runs in {args.out}")


def _records(run_dir: Path) -> list[dict]:
    from wav2vec2_lite.tools.plots import read_records

    return read_records(run_dir)


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _table(runs: dict[str, list[dict]], pre_minutes: float, encoder_trained: bool = False,
           lr_scale: dict[str, float] | None = None) -> str:
    domain = all("test_wer_domain" in t for trials in runs.values() for t in trials)
    lines = ["| model | test CER % | test WER % |" + (" WER % on commands |" if domain else "")
             + " seeds | fine-tune lr (chosen on valid) | compute (core-min) |",
             "| --- | --- | --- |" + (" --- |" if domain else "") + " --- | --- | --- |"]
    for arm, trials in runs.items():
        compute = sum(t["trial_minutes"] for t in trials) + (pre_minutes if arm == "pretrained" else 0.0)
        label = ("pretrained + fine-tuned" + (" (conv encoder trained too)" if encoder_trained else "")
                 + "".join(f", lr × {v:g} on {k}" for k, v in (lr_scale or {}).items())
                 if arm == "pretrained" else "from scratch (same labels, same budget)")
        cells = [label, _mean_spread([t["test_cer"] for t in trials]), _mean_spread([t["test_wer"] for t in trials])]
        if domain:
            cells.append(_mean_spread([t["test_wer_domain"] for t in trials]))
        cells += [str(len(trials)), ", ".join(format(t["lr"], "g") for t in trials), f"{compute:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    pre, scr = (statistics.mean(t["test_cer"] for t in runs[a]) for a in ("pretrained", "scratch"))
    ratio = pre / scr if scr > 0 else float("nan")
    lines.append("")
    lines.append(f"CER ratio pretrained / scratch = {ratio:.2f} (the paper's effect: < 1; target of the long run ≤ 0.6)")
    return "\n".join(lines) + "\n"


def _plots(out: Path, pre_dir: Path, runs: dict[str, list[dict]], tag: str = "") -> None:
    try:
        from wav2vec2_lite.tools.plots import FINETUNE_PANELS, PRETRAIN_PANELS, plot_curves, read_records
    except ImportError:
        return
    import math

    try:
        k = json.loads((pre_dir / "checkpoints" / "last" / "config.json").read_text())["config"]["num_negatives"]
        chance = {"contrastive_loss": math.log(k + 1)}
        print(f"[demo] wrote {plot_curves({'pretrain': read_records(pre_dir)}, PRETRAIN_PANELS, out / 'pretrain.png', hlines=chance, title='self-supervised pretraining')}")
        ft = {f"{arm} (seed {t['seed']})": read_records(t["dir"]) for arm, trials in runs.items() for t in trials}
        print(f"[demo] wrote {plot_curves(ft, FINETUNE_PANELS, out / f'finetune{tag}.png', title='CTC fine-tuning on train_10min')}")
    except ImportError:
        print("[demo] matplotlib missing: no plots (pip install 'wav2vec2_lite[plot]')")


def _transcribe(model_dir: Path, data: Path, n: int) -> None:
    from wav2vec2_lite.data.manifest import read_labels, read_manifest
    from wav2vec2_lite.asr.transcribe import Transcriber

    tr = Transcriber.from_path(model_dir)
    manifest = read_manifest(data / "test.tsv")
    refs = read_labels(data / "test.wrd")
    print(f"\n[demo] transcribing {n} test files with {model_dir}:")
    for path, ref in list(zip(manifest.paths, refs))[:n]:
        out = tr.transcribe_file(manifest.root / path)
        print(f"  {path}\n    ref: {ref}\n    hyp: {out.text}")


if __name__ == "__main__":
    main()
