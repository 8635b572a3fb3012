"""Command line of the label-curve protocol (``scripts/label_curve.py``; ``python -m
wav2vec2_lite.tools.label_curve_cli``): plan, run, status, score-test, report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wav2vec2_lite.tools import label_curve_report as rep
from wav2vec2_lite.tools.label_curve import load_plan, make_plan, plan_status, run_plan, write_plan
from wav2vec2_lite.tools.label_curve_spec import LabelCurveError, load_mapping

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="label_curve",
        description="The label-curve protocol: pretrained vs from-scratch "
        "CTC fine-tuning at several label sizes (docs/results/label_curve.md).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("plan", help="validate a spec and write the plan (commit it before the first run)")
    sp.add_argument("--spec", type=Path, required=True)
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--force", action="store_true", help="replace an existing plan file")
    sr = sub.add_parser("run", help="train the runs without a summary (resumable)")
    sr.add_argument("--plan", type=Path, required=True)
    sr.add_argument("--only", help="fnmatch pattern on run ids, e.g. 'pretrained-train_10min-*'")
    sr.add_argument("--jobs", type=int, default=1, help="runs side by side (threads_per_run threads each)")
    for name, text in (
        ("status", "what is done and left"),
        ("score-test", "score test once, for the choices on valid"),
        ("report", "markdown tables and the plot"),
    ):
        sub.add_parser(name, help=text).add_argument("--plan", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd == "plan":
            plan = make_plan(load_mapping(args.spec))
            print(
                f"wrote {write_plan(plan, args.out, args.force)}: {len(plan['runs'])} runs; "
                f"commit it before the first run"
            )
        elif args.cmd == "run":
            if args.jobs < 1:
                raise LabelCurveError(f"--jobs: an integer >= 1 (got {args.jobs})")
            run_plan(args.plan, args.only, args.jobs)
        elif args.cmd == "status":
            print(plan_status(load_plan(args.plan)))
        else:
            if args.cmd == "score-test":
                print(f"wrote {rep.score_test(load_plan(args.plan))}; commit it")
            else:
                for path in rep.write_report(load_plan(args.plan)):
                    print(f"wrote {path}")
    except LabelCurveError as e:
        print(f"label_curve: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
