"""experiments.jobs: a study's runs as submitit jobs, at most N at a time here, or on SLURM (the job
script it would send, checked without a cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from wav2vec2_lite.experiments.jobs import SlurmOptions, make_executor, run_jobs

submitit = pytest.importorskip("submitit")

# each job records when it ran and how many threads it was given, then sleeps or fails
SCRIPT = """
import json, os, sys, time
start = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    json.dump({"start": start, "end": time.time(), "threads": os.environ["OMP_NUM_THREADS"]}, f)
sys.exit(int(sys.argv[3]))
"""


def _job(tmp: Path, name: str, sleep: float = 0.5, code: int = 0):
    return (
        name,
        ["-c", SCRIPT, str(tmp / f"{name}.json"), str(sleep), str(code)],
        tmp / "logs" / f"{name}.log",
    )


def test_local_jobs_run_at_most_n_at_a_time_with_their_thread_count(tmp_path):
    messages = []
    jobs = [_job(tmp_path, f"j{i}") for i in range(4)]
    failed = run_jobs(jobs, folder=tmp_path / "submitit", parallel=2, threads=1, log=messages.append, tag="t")
    assert failed == []
    spans = [json.loads((tmp_path / f"j{i}.json").read_text()) for i in range(4)]
    assert {s["threads"] for s in spans} == {"1"}
    for s in spans:  # at any job's start, at most 2 jobs are running (itself included)
        assert sum(o["start"] <= s["start"] < o["end"] for o in spans) <= 2
    assert len(messages) == 4 and all("started j" in m and "as job" in m for m in messages)


def test_after_a_failure_nothing_new_starts_and_the_failure_is_named(tmp_path):
    jobs = [_job(tmp_path, "ok", 2.0), _job(tmp_path, "bad", 0.1, code=3), _job(tmp_path, "never")]
    failed = run_jobs(jobs, folder=tmp_path / "submitit", parallel=2, threads=1, log=lambda m: None, tag="t")
    assert failed == ["bad"]
    assert (tmp_path / "ok.json").is_file()  # the running one finished
    assert not (tmp_path / "never.json").exists() and not (tmp_path / "logs" / "never.log").exists()


def test_slurm_job_script_carries_partition_gpus_time_and_threads(tmp_path, monkeypatch):
    """No cluster: sbatch is replaced by an echo of what sbatch prints, and the job script
    submitit wrote is read back."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is there"
    monkeypatch.setattr(
        submitit.SlurmExecutor,
        "_make_submission_command",
        lambda self, path: ["echo", "Submitted batch job 4242"],
    )
    options = SlurmOptions(
        partition="gpu", gpus_per_node=1, timeout_min=90, mem_gb=32, extra={"account": "asr"}
    )
    executor = make_executor(tmp_path / "submitit", threads=4, slurm=options)
    job = executor.submit(sys.exit, 0)
    assert job.job_id == "4242"
    script = Path(job.paths.submission_file).read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=32GB",
        "#SBATCH --account=asr",
    ):
        assert line in script, (line, script)
    assert f"{sys.executable} -u -m submitit.core._submit" in script
