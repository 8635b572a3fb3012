"""The README's main job end to end at a miniature size (corpus -> pretrain -> fine-tune x2 -> test -> plots)."""

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
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--data", str(tmp_path / "data"), "--out",
           str(tmp_path / "runs"), "--corpus-scale", "0.04", "--pretrain-updates", "6", "--finetune-updates", "6",
           "--transcribe", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((tmp_path / "runs" / "results.json").read_text())
    for arm in ("pretrained", "scratch"):
        (run,) = results[arm]
        assert 0.0 <= run["test_cer"] <= 2.0 and 0.0 <= run["test_wer"] <= 2.0
        assert f"| {100 * run['test_cer']:.1f} |" in first.stdout  # the table reports results.json's CER
        assert Path(run["dir"], "checkpoints", "last", "model.safetensors").is_file()
        assert Path(run["dir"]).name == "seed1_lr0.002_u6"  # the budget names the folder: never resumed into
    assert "| pretrained + fine-tuned |" in first.stdout and "CER ratio pretrained / scratch" in first.stdout
    assert first.stdout.count("ref: ") == 2 and first.stdout.count("hyp: ") == 2
    for png in ("pretrain.png", "finetune.png"):
        assert (tmp_path / "runs" / png).stat().st_size > 10_000
    # a second run finds every step complete and redoes none of the training
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("already complete") == 3


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
    assert [(tmp_path / f"ok{i}" / "train.log").read_text() for i in range(3)] == [f"run {i}\n" for i in range(3)]
    slow = tmp_path / "slow"
    jobs = [([sys.executable, "-c", "import time; time.sleep(60)"], slow, 1),
            ([sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"], tmp_path / "bad", 1)]
    with pytest.raises(SystemExit, match=r"exit code 3.*bad[/\\]train\.log"):
        demo.run_side_by_side(jobs, parallel=2)


def test_result_table_adds_command_domain_wer_when_every_run_has_it(tmp_path):
    demo = _demo_module()

    def trial(cer, wer, domain=None):
        t = {"test_cer": cer, "test_wer": wer, "lr": 2e-3, "trial_minutes": 5.0}
        return t if domain is None else {**t, "test_wer_domain": domain}

    runs = {"pretrained": [trial(0.2, 0.6, 0.3), trial(0.4, 0.8, 0.5)], "scratch": [trial(0.5, 0.9, 0.7)]}
    table = demo._table(runs, pre_minutes=10.0)
    head, _, pre, scratch = table.splitlines()[:4]
    assert "WER % on commands" in head
    assert pre.split(" | ")[1:4] == ["30.0 ± 14.1", "70.0 ± 14.1", "40.0 ± 14.1"]
    assert scratch.split(" | ")[1:4] == ["50.0", "90.0", "70.0"]
    assert pre.endswith("| 20.0 |") and scratch.endswith("| 5.0 |")  # pretraining counted in its arm only
    assert "CER ratio pretrained / scratch = 0.60" in table
    runs["scratch"] = [trial(0.5, 0.9)]  # a corpus without the command domain: no such column
    assert "commands" not in demo._table(runs, pre_minutes=10.0)


def test_the_pretrained_arm_can_train_its_conv_encoder_in_its_own_folder(tmp_path):
    demo = _demo_module()
    frozen = demo.finetune_arms(tmp_path / "pretrain")
    trained = demo.finetune_arms(tmp_path / "pretrain", "trained")
    assert frozen["pretrained"] == ("finetune_pretrained", [f"finetune.pretrained={tmp_path / 'pretrain'}"])
    folder, overrides = trained["pretrained"]
    assert folder == "finetune_pretrained_encoder_trained"  # never resumes a frozen-encoder run
    assert overrides[1:] == ["finetune.freeze_feature_encoder=false", "ctc.feature_grad_mult=1.0"]
    # the scratch arm is the same either way, so its runs serve both comparisons
    assert frozen["scratch"] == trained["scratch"] and "model=tiny" in trained["scratch"][1]
    assert "finetune.freeze_feature_encoder=false" in trained["scratch"][1]
    run = {"test_cer": 0.3, "test_wer": 0.8, "lr": 1e-3, "trial_minutes": 4.0}
    table = demo._table({"pretrained": [run], "scratch": [run]}, pre_minutes=1.0, encoder_trained=True)
    assert "| pretrained + fine-tuned (conv encoder trained too) |" in table
    # per-part learning rates: their own folder (never resumed into a one-lr run) and overrides
    folder, overrides = demo.finetune_arms(tmp_path / "pretrain", "trained", {"lm_head": 4.0, "wav2vec2.context": 0.5})[
        "pretrained"]
    assert folder == "finetune_pretrained_encoder_trained_lrscale_lm_head4_wav2vec2.context0.5"
    assert overrides[-2:] == ["+optim.lr_scale.lm_head=4", "+optim.lr_scale.wav2vec2.context=0.5"]
    table = demo._table({"pretrained": [run], "scratch": [run]}, pre_minutes=1.0, lr_scale={"lm_head": 4.0})
    assert "| pretrained + fine-tuned, lr × 4 on lm_head |" in table
