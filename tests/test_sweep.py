"""summarize_sweep: table of final metrics per run of a Hydra multirun folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wav2vec2_lite.tools.sweep import collect_sweep, seed_table, sweep_table

from _helpers import CLI_MICRO_MODEL

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(folder: Path, negatives: int, acc: float, seed: int = 1) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(
        f"- model.contrastive.num_negatives={negatives}\n- trainer.seed={seed}\n"
    )
    rows = [
        {"kind": "train", "update": 10, "loss": 4.0},
        {"kind": "valid", "update": 10, "accuracy": acc / 2, "loss": 4.2},
        {"kind": "train", "update": 20, "loss": 3.0},
        {"kind": "valid", "update": 20, "accuracy": acc, "loss": 3.5},
    ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_table_has_one_row_per_run_with_final_metrics(tmp_path):
    for i, (k, acc) in enumerate([(10, 0.3), (100, 0.2)]):
        _fake_run(tmp_path / str(i), k, acc)
    runs = collect_sweep(tmp_path)
    assert [r.overrides["model.contrastive.num_negatives"] for r in runs] == ["10", "100"]
    assert [r.valid["accuracy"] for r in runs] == [0.3, 0.2] and runs[0].updates == 20
    table = sweep_table(runs)
    assert "model.contrastive.num_negatives" in table and "trainer.seed" not in table  # only swept keys
    assert "| 0 | 10 | 20 | 0.3 | 3.5 |" in table


def test_cli_writes_summary_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    _fake_run(tmp_path / "0", 10, 0.3)
    _fake_run(tmp_path / "1", 50, 0.4)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summarize_sweep.py"), str(tmp_path), "--plot", "accuracy"],
        check=True,
        capture_output=True,
    )
    assert "0.4" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "sweep_accuracy.png").stat().st_size > 1000


def test_seeds_of_one_setting_are_grouped_as_mean_and_sd(tmp_path, capsys):
    from wav2vec2_lite.cli import sweep_summary

    for i, (k, seed, acc) in enumerate([(10, 1, 0.3), (10, 2, 0.5), (100, 1, 0.2), (100, 2, 0.2)]):
        _fake_run(tmp_path / str(i), k, acc, seed)
    runs = collect_sweep(tmp_path)
    grouped = seed_table(runs, ["accuracy"])
    assert "| model.contrastive.num_negatives | seeds | valid accuracy (mean ± sd) |" in grouped
    assert "| 10 | 1, 2 | 0.4 ± 0.1414 |" in grouped and "| 100 | 1, 2 | 0.2 ± 0 |" in grouped
    assert "trainer.seed" in sweep_table(runs)  # the per-run table keeps the seed column
    assert seed_table(runs[::2], ["accuracy"]) == ""  # one seed per setting: nothing to group
    sweep_summary([str(tmp_path), "--metrics", "accuracy"])
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("| run |") and "Mean ± sd over seeds (trainer.seed):" in summary
    capsys.readouterr()


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run with metrics.jsonl"):
        collect_sweep(tmp_path)


@pytest.mark.slow
def test_a_seed_sweep_through_the_joblib_launcher_is_summarised_as_mean_and_sd(tmp_path):
    """Quick sweeps stay Hydra multiruns: ``hydra/launcher=joblib`` runs them side by side on this
    machine (one thread each), and ``w2v2-sweep-summary`` groups the seeds."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from wav2vec2_lite.train.toy_data import make_toy_corpus

    corpus = make_toy_corpus(tmp_path / "toy", train=6, valid=2, seed=1)
    sweep = tmp_path / "sweep"
    tiny = [*CLI_MICRO_MODEL, "data.max_sample_size=8000", "data.max_tokens=40000", "trainer.progress=false",
            "trainer.num_threads=1"]  # fmt: skip
    ran = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "-m", "--config-name", "pretrain_tiny",
         f"data.manifest_dir={corpus}", *tiny, "trainer.max_updates=2", "trainer.seed=1,2",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    runs = collect_sweep(sweep)
    assert sorted(r.overrides["trainer.seed"] for r in runs) == ["1", "2"] and all(
        r.updates == 2 for r in runs
    )
    grouped = seed_table(runs, ["loss"])
    assert grouped.splitlines()[2].startswith("| all | 1, 2 |") or grouped.splitlines()[2].startswith(
        "| all | 2, 1 |"
    )


def test_the_submitit_slurm_launcher_takes_the_cluster_settings():
    """On a cluster the same sweep goes through ``hydra/launcher=submitit_slurm``; here only its
    configuration is checked (no cluster): partition, GPUs and time reach the launcher."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    shown = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "--config-name", "pretrain_tiny",
         "data.manifest_dir=/x", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
         "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=90", "--cfg", "hydra",
         "--package", "hydra.launcher"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    for line in ("partition: gpu", "gpus_per_node: 1", "timeout_min: 90", "submitit_launcher.SlurmLauncher"):
        assert line in shown.stdout, (line, shown.stdout)
