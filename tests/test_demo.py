"""The README's main job end to end at a miniature size
(corpus -> pretrain -> fine-tune x2 -> test -> plots)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _demo_module():
    """scripts/demo.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    """Corpus -> pipeline-check pretraining -> the shipped checkpoint and scratch fine-tuned at two
    label sizes -> test table beside the committed curve -> plots -> transcripts; then a rerun
    redoes no training."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "runs"),
        "--corpus-scale",
        "0.04",
        "--check-updates",
        "6",
        "--updates",
        "train_1min=4",
        "train_10min=6",
        "--seeds",
        "1",
        "--transcribe",
        "2",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert results["pretrained"] == "tiny-espeak-10h" and results["budgets"] == {
        "train_1min": 4,
        "train_10min": 6,
    }
    for subset, updates in results["budgets"].items():
        for arm in ("pretrained", "scratch"):
            (run,) = results["runs"][subset][arm]
            assert 0.0 <= run["test_cer"] <= 2.0 and 0.0 <= run["test_wer"] <= 2.0
            assert Path(run["dir"], "checkpoints", "last", "model.safetensors").is_file()
            assert Path(run["dir"]).name == f"{subset}_seed1_u{updates}"  # the budget names the folder
        pre, scr = (results["runs"][subset][a][0]["test_cer"] for a in ("pretrained", "scratch"))
        assert (
            f"| {100 * pre:.1f} | {100 * scr:.1f} |" in first.stdout
        )  # the table reports results.json's CER
    assert "pipeline check (6 updates): valid contrastive loss" in first.stdout
    assert (
        "shipped checkpoint 'tiny-espeak-10h'" in first.stdout and "never used for selection" in first.stdout
    )
    assert "The committed label curve" in first.stdout
    assert first.stdout.count("ref: ") == 2 and first.stdout.count("hyp: ") == 2
    for png in ("pretrain_check.png", "finetune_train_1min.png", "finetune_train_10min.png"):
        assert (tmp_path / "runs" / png).stat().st_size > 10_000
    # the pretrained arm really started from the shipped weights (conv layer 1 before any update is theirs)
    from wav2vec2_lite import pretrained

    shipped = pretrained.load("tiny-espeak-10h")
    ft = json.loads(Path(results["runs"]["train_1min"]["pretrained"][0]["dir"], "run.json").read_text())
    assert "finetune.pretrained=tiny-espeak-10h" in ft["argv"]
    assert (
        shipped.config.hidden_size
        == json.loads(
            Path(
                results["runs"]["train_1min"]["scratch"][0]["dir"], "checkpoints", "last", "config.json"
            ).read_text()
        )["config"]["hidden_size"]
    )
    # a second run finds every step complete and redoes none of the training
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("already complete") == 5


def test_demo_refuses_an_unknown_pretrained_model_in_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--pretrained",
            "no-such-model",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not the name of a shipped pretrained checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_reuses_a_run_folder_only_for_its_own_recipe(tmp_path):
    demo = _demo_module()
    run = tmp_path / "pretrain"
    demo.same_recipe("pretrain.py", "pretrain_demo", ["a=1"], run)
    demo.same_recipe("pretrain.py", "pretrain_demo", ["a=1"], run)  # same recipe: resumable
    with pytest.raises(SystemExit, match="another recipe"):
        demo.same_recipe("pretrain.py", "pretrain_tiny", ["a=1"], run)
    old = tmp_path / "old_run"
    old.mkdir()
    (old / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit, match="without a recorded demo recipe"):
        demo.same_recipe("pretrain.py", "pretrain_demo", [], old)


def test_gumbel_decay_anneals_over_the_same_share_of_any_run_length():
    import math

    demo = _demo_module()
    assert demo.gumbel_decay(1500) == 0.999  # configs/pretrain_demo.yaml's value
    for updates in (1500, 6000, 20000):
        floor_at = math.log(0.5 / 2.0) / math.log(demo.gumbel_decay(updates))  # first update at tau = 0.5
        assert 0.90 < floor_at / updates < 0.94


def test_side_by_side_runs_report_minutes_and_a_failure_names_its_log(tmp_path):
    demo = _demo_module()
    ok = [([sys.executable, "-c", f"print('run {i}')"], tmp_path / f"ok{i}", 1) for i in range(3)]
    minutes = demo.run_side_by_side(ok, parallel=2)
    assert len(minutes) == 3 and all(0 < m < 1 for m in minutes)
    assert [(tmp_path / f"ok{i}" / "train.log").read_text() for i in range(3)] == [
        f"run {i}\n" for i in range(3)
    ]
    slow = tmp_path / "slow"
    jobs = [
        ([sys.executable, "-c", "import time; time.sleep(60)"], slow, 1),
        ([sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"], tmp_path / "bad", 1),
    ]
    with pytest.raises(SystemExit, match=r"exit code 3.*bad[/\\]train\.log"):
        demo.run_side_by_side(jobs, parallel=2)


def test_result_table_gives_mean_spread_and_ratio_per_label_size():
    demo = _demo_module()
    runs = {
        "train_1min": {
            "pretrained": [{"test_cer": 0.2}, {"test_cer": 0.4}],
            "scratch": [{"test_cer": 0.6}, {"test_cer": 0.6}],
        },
        "train_10min": {"pretrained": [{"test_cer": 0.5}], "scratch": [{"test_cer": 0.5}]},
    }
    table = demo._table(runs, {"train_1min": 500, "train_10min": 800})
    one, ten = table.splitlines()[-2:]
    assert one == "| 1 min (train_1min) | 500 | 30.0 ± 14.1 | 60.0 ± 0.0 | 0.50 | 20.0 / 60.0, 40.0 / 60.0 |"
    assert ten == "| 10 min (train_10min) | 800 | 50.0 | 50.0 | 1.00 | 50.0 / 50.0 |"
    assert "never used for selection" in table
