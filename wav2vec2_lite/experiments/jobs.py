"""An experiment's runs as submitit jobs: on this machine (at most N at a time) or on SLURM.

Each job is ``python ARGS`` with its own log file, ``OMP_NUM_THREADS`` set to its thread
count (two 2-thread jobs on two cores slow both 10-20x) and this checkout first on
``PYTHONPATH``. submitit's local executor starts every job it is given at once, so
:func:`run_jobs` submits the next job only when one finishes; on a cluster the scheduler
queues them. submitit keeps its own files (the pickled job, its stdout) in ``folder``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Job", "SlurmOptions", "make_executor", "run_jobs"]

CHECKOUT = Path(__file__).resolve().parents[2]

Job = tuple[str, list[str], Path]
"""``(name, command arguments after python, log file)``."""


@dataclass(kw_only=True)
class SlurmOptions:
    """Where and how a SLURM cluster runs the jobs (submitit's ``slurm_*`` parameters)."""

    partition: str | None = None
    """The partition (``sbatch --partition``); None: the cluster's default."""
    gpus_per_node: int = 0
    """GPUs per job."""
    timeout_min: int = 240
    """Wall-clock limit per job, minutes (``sbatch --time``)."""
    mem_gb: int | None = None
    """Memory per job (``sbatch --mem``); None: the partition's default."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further submitit ``slurm_*`` parameters without the prefix (e.g. ``{"account": "speech"}``)."""


@dataclass
class _Command:
    """``python ARGS`` with stdout and stderr appended to ``log``; a non-zero exit raises, naming the log."""

    args: list[str]
    log: Path
    threads: int

    def __call__(self) -> None:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(self.threads),
            "PYTHONPATH": os.pathsep.join([str(CHECKOUT), os.environ.get("PYTHONPATH", "")]),
        }
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as out:
            code = subprocess.run(
                [sys.executable, *self.args], stdout=out, stderr=subprocess.STDOUT, env=env
            ).returncode
        if code:
            raise RuntimeError(f"exit status {code}; see {self.log}")


def make_executor(folder: str | Path, *, threads: int, slurm: SlurmOptions | None = None):
    """submitit's local executor, or its SLURM executor with ``slurm``'s settings."""
    import submitit  # optional: submitit (the experiments extra)

    if slurm is None:
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=7 * 24 * 60)  # submitit kills a local job after this
        return executor
    executor = submitit.SlurmExecutor(folder=str(folder))
    chosen = {"partition": slurm.partition, "gpus_per_node": slurm.gpus_per_node}
    chosen["mem"] = slurm.mem_gb and f"{slurm.mem_gb}GB"  # unset (None, 0): the cluster's default
    params = {"cpus_per_task": threads, "time": slurm.timeout_min, **slurm.extra}
    executor.update_parameters(**params | {k: v for k, v in chosen.items() if v})
    return executor


def run_jobs(
    jobs: list[Job],
    *,
    folder: str | Path,
    parallel: int,
    threads: int,
    log: Callable[[str], None],
    tag: str,
    slurm: SlurmOptions | None = None,
    poll_s: float = 0.5,
) -> list[str]:
    """Run every job through submitit, at most ``parallel`` at a time; after a failure nothing new
    starts (the running ones finish). Returns the names of the jobs that failed."""
    executor = make_executor(folder, threads=threads, slurm=slurm)
    pending, active, failed = list(jobs), {}, []
    while pending or active:
        while pending and len(active) < parallel:
            name, args, log_path = pending.pop(0)
            active[name] = executor.submit(_Command(args, Path(log_path), threads))
            log(f"[{tag}] started {name} as job {active[name].job_id} (log: {log_path})")
        time.sleep(poll_s)
        for name, job in list(active.items()):
            if job.done():
                del active[name]
                if job.exception() is not None:
                    failed.append(name)
                    pending.clear()
    return failed
