"""Running a plan: the runs without a summary, as submitit jobs, in dependency order.

Pretraining, probe and baseline runs go first, fine-tuning runs after all of them (a fine-tuning
run of a variant the engine pretrains needs that checkpoint; select one pretraining seed's chain
with ``--only '*-p1*'`` to finish it sooner). Locally at most ``jobs`` run at a time (``jobs`` ×
threads per run ≤ the cores: two 2-thread jobs on two cores slow both 10-20×); on SLURM the
scheduler queues them. A run that fails stops new ones from starting; running it again resumes.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path

from wav2vec2_lite.experiments.jobs import SlurmOptions, run_jobs
from wav2vec2_lite.experiments.plan import check_committed
from wav2vec2_lite.experiments.runs import execute
from wav2vec2_lite.experiments.spec import ExperimentError
from wav2vec2_lite.experiments.summaries import load_summaries, summary_path, test_scores_path
from wav2vec2_lite.interop.sources import detect

__all__ = ["run_plan", "plan_status", "select"]


def select(plan: dict, only: str | None) -> list[dict]:
    runs = [r for r in plan["runs"] if only is None or fnmatch.fnmatchcase(r["id"], only)]
    if not runs:
        raise ExperimentError(
            f"--only {only!r} matches none of the plan's run ids (e.g. {plan['runs'][0]['id']})"
        )
    return runs


def _check_inputs(plan: dict, todo: list[dict], done: dict) -> None:
    """Every file the runs read is there (corpus splits, checkpoints), so that a missing one fails
    now rather than hours in."""
    spec, corpus = plan["spec"], Path(plan["spec"]["corpus"])
    needed = set()
    for r in todo:
        if r["kind"] == "finetune":
            needed |= {f"{r['valid_subset']}.tsv", "test.tsv", "dict.ltr.txt", f"{r['subset']}.tsv"}
        elif r["kind"] == "pretrain":
            needed |= {f"{r['train_subset']}.tsv", f"{r['valid_subset']}.tsv"}
        if r["kind"] != "finetune" and spec["probe"]:
            needed |= {f"{spec['probe'][k]}.{e}" for k in ("train", "valid") for e in ("tsv", "ltr")}
            needed.add("dict.ltr.txt")
    missing = sorted(str(corpus / n) for n in needed if not (corpus / n).is_file())
    if missing:
        raise ExperimentError(f"missing: {', '.join(missing)} (build the corpus first)")
    for r in todo:
        path, after = r.get("checkpoint_path"), r.get("after")
        if after in done and not Path(path).is_dir():  # run folders do not always outlive a machine
            raise ExperimentError(
                f"run {r['id']} fine-tunes {path}, which is gone although {after} is summarized; remove "
                f"{summary_path(plan, after)} to pretrain it again (its probes are redone too)"
            )
        if path and not after:
            try:
                detect(path)
            except Exception as e:  # detect's errors say what is wrong with the path
                raise ExperimentError(f"run {r['id']}: checkpoint {path}: {str(e).splitlines()[0]}") from None


def run_plan(
    plan: dict,
    spec_path: Path,
    *,
    only: str | None = None,
    jobs: int | None = None,
    slurm: SlurmOptions | None = None,
    in_process: bool = False,
    allow_uncommitted: bool = False,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Do the selected runs that have no summary yet; returns their ids."""
    if (scored := test_scores_path(plan)).is_file():
        raise ExperimentError(
            f"{scored} exists: test was scored already; runs added now could change its choices"
        )
    why = check_committed(Path(plan["path"]))
    if why and not allow_uncommitted:
        raise ExperimentError(
            f"{why}: commit the plan before the first run (or pass --allow-uncommitted-plan)"
        )
    threads, cores = plan["spec"]["threads_per_run"], os.cpu_count() or 1
    jobs = max(1, cores // threads) if jobs is None else jobs
    if jobs < 1:
        raise ExperimentError(f"--jobs: an integer >= 1 (got {jobs})")
    if slurm is None and jobs * threads > cores:
        raise ExperimentError(
            f"--jobs {jobs} × {threads} thread(s) per run > {cores} cores here: "
            f"jobs would slow each other 10-20×"
        )
    selected = select(plan, only)
    done = load_summaries(plan)
    todo = [r for r in selected if r["id"] not in done]
    log(
        f"[experiment] {len(selected) - len(todo)} of {len(selected)} selected runs already summarized; "
        f"{len(todo)} to do"
    )
    if not todo:
        return []
    _check_inputs(plan, todo, done)
    first = [r for r in todo if r["kind"] != "finetune"]
    first_ids = {r["id"] for r in first}
    blocked = [r for r in todo if r.get("after") and r["after"] not in done and r["after"] not in first_ids]
    if blocked:
        raise ExperimentError(
            f"run {blocked[0]['id']} fine-tunes the checkpoint of {blocked[0]['after']}, which is neither "
            f"done nor selected; run it first (or widen --only)"
        )
    then = [r for r in todo if r["kind"] == "finetune"]
    for phase in (first, then):
        if not phase:
            continue
        if in_process:
            for r in phase:
                log(f"[experiment] {r['id']}")
                execute(plan, r["id"])
            continue
        runs_dir = Path(plan["spec"]["runs_dir"])
        command = ["-m", "wav2vec2_lite.experiments.cli", "run-one", str(spec_path)]
        pieces = [(r["id"], [*command, r["id"]], runs_dir / "logs" / f"{r['id']}.log") for r in phase]
        parallel = jobs if slurm is None else len(pieces)
        failed = run_jobs(
            pieces, folder=runs_dir / "submitit", parallel=parallel, threads=threads, log=log,
            tag="experiment", slurm=slurm,
        )  # fmt: skip
        if failed:
            raise ExperimentError(
                f"run(s) {', '.join(failed)} failed; see {runs_dir / 'logs'}/RUN.log (running the command "
                f"again resumes)"
            )
    return [r["id"] for r in todo]


def plan_status(plan: dict) -> str:
    """Done and left per kind, variant and size; what is next; whether test was scored."""
    done, runs = load_summaries(plan), plan["runs"]
    cells: dict[tuple[str, str, str], list[int]] = {}
    for r in runs:
        cell = cells.setdefault((r["kind"], r.get("variant", ""), r.get("subset", "")), [0, 0])
        cell[r["id"] not in done] += 1
    lines = [f"{plan['spec']['name']} (plan {plan['sha256'][:12]}): {len(done)} of {len(runs)} runs done"]
    lines += [f"  {k:<9} {v:<32} {s:<16} done {d:>3}  left {n:>3}" for (k, v, s), (d, n) in cells.items()]
    left = [r["id"] for r in runs if r["id"] not in done]
    lines += [f"next: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}"] if left else []
    if plan["spec"]["finetune"]:
        scored = test_scores_path(plan).is_file()
        lines.append(f"test: scored ({test_scores_path(plan)})" if scored else "test: not scored yet")
    return "\n".join(lines)
