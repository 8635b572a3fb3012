"""``w2v2-experiment plan|run|status|report|score-test SPEC``: an ablation, label curve or recipe
comparison from one spec file (docs/ablations.md). User errors print one line and exit with 2
(Ctrl-C 130, a closed pipe 141; ``--debug`` shows the traceback), as every console script."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wav2vec2_lite.cli.common import console_script, debug_wanted
from wav2vec2_lite.experiments.jobs import SlurmOptions
from wav2vec2_lite.experiments.spec import ExperimentError, load_mapping

__all__ = ["main"]


def _slurm(args, plan: dict) -> SlurmOptions | None:
    """The spec's SLURM settings with the command line's over them; None without --slurm."""
    given = {"partition": args.partition, "gpus_per_node": args.gpus, "timeout_min": args.time_min}
    given = {k: v for k, v in given.items() if v is not None}
    if not args.slurm and given:
        raise ExperimentError("--partition, --gpus and --time-min are SLURM settings: add --slurm")
    return SlurmOptions(**{**plan["spec"]["slurm"], **given}) if args.slurm else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="w2v2-experiment",
        description="One engine for ablations, label curves and recipe comparisons (docs/ablations.md).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser(
        "plan", help="validate the spec, compose every run's config, write plan.json (commit it)"
    )
    sp.add_argument("--force", action="store_true", help="amend an existing plan (say why in the spec)")
    sr = sub.add_parser("run", help="do the runs without a summary (resumable), as submitit jobs")
    sr.add_argument("--only", help="fnmatch pattern on run ids, e.g. 'contrastive-*' or '*-p1*'")
    sr.add_argument("--jobs", type=int, help="runs at a time here (default: cores // threads_per_run)")
    sr.add_argument(
        "--in-process", action="store_true", help="one run after another in this process (debugging)"
    )
    sr.add_argument(
        "--allow-uncommitted-plan", action="store_true", help="run although plan.json is not committed"
    )
    sr.add_argument("--slurm", action="store_true", help="submit to SLURM (the spec's slurm settings)")
    sr.add_argument("--partition", help="SLURM partition (overrides the spec's)")
    sr.add_argument("--gpus", type=int, help="GPUs per SLURM job (overrides the spec's)")
    sr.add_argument("--time-min", type=int, help="SLURM time limit per job, minutes (overrides the spec's)")
    sub.add_parser("status", help="what is done and left")
    sub.add_parser("score-test", help="score test once, for the choices made on valid")
    sub.add_parser("report", help="report.md (tables, CIs, Welch's t) and the plot")
    one = sub.add_parser("run-one", help=argparse.SUPPRESS)  # what each submitted job executes
    for s in (sp, sr, one, *(sub.choices[n] for n in ("status", "score-test", "report"))):
        s.add_argument("spec", type=Path, help="the experiment's spec (YAML or JSON)")
    one.add_argument("run_id")
    return p


@console_script("w2v2-experiment")
def main(argv: list[str] | None = None) -> int:
    argv, debug = debug_wanted(sys.argv[1:] if argv is None else list(argv))
    args = _parser().parse_args(argv)
    # imported here so that --help answers without loading torch
    from wav2vec2_lite.experiments import engine, report, runs, scoring
    from wav2vec2_lite.experiments import plan as plans
    from wav2vec2_lite.probes.protocol import ProbeError

    try:
        if args.cmd == "plan":
            new = plans.make_plan(load_mapping(args.spec))
            out = plans.write_plan(new, plans.plan_path(new["spec"], args.spec), args.force)
            print(
                f"wrote {out}: {len(new['runs'])} runs (plan {new['sha256'][:12]}); commit it before running"
            )
            return 0
        plan, _ = plans.load_spec_and_plan(args.spec)
        if args.cmd == "run":
            engine.run_plan(
                plan, args.spec, only=args.only, jobs=args.jobs, slurm=_slurm(args, plan),
                in_process=args.in_process, allow_uncommitted=args.allow_uncommitted_plan,
            )  # fmt: skip
        elif args.cmd == "run-one":
            runs.execute(plan, args.run_id)
        elif args.cmd == "status":
            print(engine.plan_status(plan))
        elif args.cmd == "score-test":
            print(f"wrote {scoring.score_test(plan)}; commit it")
        else:
            for path in report.write_report(plan):
                print(f"wrote {path}")
    except (ExperimentError, ProbeError) as e:
        if debug:
            raise
        print(f"w2v2-experiment: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
