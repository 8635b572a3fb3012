"""Run experiment pieces as subprocesses, a few side by side, each with its own thread count.

Two cores shared by two 2-thread jobs slow both 10-20x (OpenMP oversubscription), so
experiments that run pieces in parallel give each ``threads`` threads (1 on a 2-core machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

__all__ = ["Job", "run_side_by_side"]

Job = tuple[str, list[str], Path]
"""``(name, command arguments after ``python``, log file)``."""


def run_side_by_side(
    jobs: list[Job], parallel: int, threads: int, log: Callable[[str], None], tag: str
) -> list[str]:
    """Run ``python ARGS`` for each job, ``parallel`` at a time with ``OMP_NUM_THREADS=threads``
    and this checkout first on ``PYTHONPATH``; output goes to the job's log file. After a failure
    nothing new starts (the running ones finish). Returns the names of the jobs that failed."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    pending, active, failed = list(jobs), {}, []
    while pending or active:
        while pending and len(active) < parallel:
            name, args, log_path = pending.pop(0)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            logf = open(log_path, "a")
            log(f"[{tag}] started {name} (log: {log_path})")
            active[name] = (
                subprocess.Popen([sys.executable, *args], stdout=logf, stderr=subprocess.STDOUT, env=env),
                logf,
            )
        time.sleep(0.5)
        for name, (proc, logf) in list(active.items()):
            if proc.poll() is not None:
                logf.close()
                del active[name]
                if proc.returncode != 0:
                    failed.append(name)
                    pending.clear()
    return failed
