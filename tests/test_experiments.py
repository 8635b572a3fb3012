"""The experiment engine end to end on micro configurations (toy corpus, micro model, 2-update
runs): a label curve (existing checkpoints vs scratch, a topline), an ablation that pretrains its
variants, probes them and fine-tunes them, and the spec's one-line errors."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from wav2vec2_lite.asr.evaluate import evaluate_split
from wav2vec2_lite.data.manifest import read_labels, read_manifest, write_labels, write_manifest
from wav2vec2_lite.experiments import engine
from wav2vec2_lite.experiments.cli import main
from wav2vec2_lite.experiments.plan import check_committed, load_spec_and_plan
from wav2vec2_lite.experiments.scoring import choose_on_valid
from wav2vec2_lite.experiments.summaries import load_summaries, summary_path
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import train

from _helpers import MICRO_MODEL, dotted_overrides

MICRO = {k: v for k, v in MICRO_MODEL.items() if k != "preset"}
MICRO_OVERRIDES = ["model=tiny", *dotted_overrides(MICRO)]


def _subset(corpus: Path, src: str, dst: str, n: int | None = None) -> None:
    m = read_manifest(corpus / f"{src}.tsv")
    n = len(m.paths) if n is None else n
    write_manifest(corpus / f"{dst}.tsv", m.root, list(zip(m.paths, m.sizes))[:n])
    for ext in ("ltr", "wrd"):
        write_labels(corpus / f"{dst}.{ext}", read_labels(corpus / f"{src}.{ext}")[:n])


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A toy corpus with nested train_a ⊂ train_b, a test split, an unlabeled pool with
    transcripts (unlabeled_text, and utterances.jsonl: sentence kinds alternate), and two micro
    'pretrained' models."""
    root = tmp_path_factory.mktemp("experiments")
    corpus = make_toy_corpus(root / "corpus", train=24, valid=8, seed=0, min_words=2, max_words=3)
    _subset(corpus, "train", "train_a", 8)
    _subset(corpus, "train", "train_b", 16)
    _subset(corpus, "valid", "test")
    m = read_manifest(corpus / "train.tsv")
    write_manifest(corpus / "unlabeled.tsv", m.root, list(zip(m.paths, m.sizes)))
    _subset(corpus, "train", "unlabeled_text")  # the pool with its transcripts, as the demo corpus has
    with open(corpus / "utterances.jsonl", "w") as f:
        for split in ("train", "valid"):
            paths, texts = read_manifest(corpus / f"{split}.tsv").paths, read_labels(corpus / f"{split}.wrd")
            for i, (p, t) in enumerate(zip(paths, texts)):
                f.write(json.dumps({"path": p, "transcript": t, "kind": ("domain", "general")[i % 2]}) + "\n")
    ckpts = []
    for seed in (1, 2):
        cfg = to_run_config(
            {
                "task": "pretrain",
                "model": dict(MICRO_MODEL),
                "data": {
                    "manifest_dir": str(corpus),
                    "max_sample_size": 12000,
                    "min_sample_size": 4000,
                    "max_tokens": 48000,
                },
                "optim": {"lr": 2e-3},
                "schedule": {"name": "polynomial", "warmup_updates": 1},
                "trainer": {
                    "max_updates": 2,
                    "log_interval": 1,
                    "progress": False,
                    "seed": seed,
                    "num_threads": 1,
                },
            }
        )
        train(cfg, root / f"pretrain_s{seed}")
        ckpts.append(str(root / f"pretrain_s{seed}"))
    trials = [{"lr": 2e-3}, {"lr": 2e-3, "lr_scale": {"lm_head": 4}}]
    finetune = {
        "config": "finetune_demo",
        "overrides": [
            "data.num_workers=0",
            "data.max_tokens=48000",
            "trainer.log_interval=1",
            "trainer.valid_interval=1",
            "trainer.best_metric=cer",
        ],
        "sizes": [
            {"subset": "train_a", "minutes": 0.5, "updates": 2},
            {"subset": "train_b", "minutes": 1.0, "updates": 2},
        ],
        "seeds": [1, 2],
        "trials": trials,
    }
    curve = {
        "name": "micro_curve",
        "corpus": str(corpus),
        "runs_dir": str(root / "runs"),
        "reference": "scratch",
        "variants": {
            "pretrained": {
                "checkpoints": [
                    {"name": "p1", "path": ckpts[0]},
                    {"name": "p2", "path": ckpts[1], "sizes": ["train_b"]},
                ],
                "finetune": {"overrides": ["finetune.freeze_feature_encoder=false"]},
            },
            "scratch": {"scratch": True, "finetune": {"overrides": MICRO_OVERRIDES}},
        },
        "finetune": {**finetune, "topline": {"like": "scratch", "minutes": 2.0, "updates": 2, "seeds": [1]}},
        "protocol": {"min_seeds": 2, "min_pretrain_seeds_at": ["train_b"], "bootstrap_resamples": 2000},
    }
    return {"root": root, "corpus": corpus, "ckpts": ckpts, "curve": curve, "finetune": finetune}


def _assert_report_has(path: Path, *needles: str) -> None:
    report = path.read_text()
    for needle in needles:
        assert needle in report, needle


def _write_spec(folder: Path, spec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder / "spec.json"


def test_label_curve_end_to_end(setup, capsys):
    root, spec = setup["root"], setup["curve"]
    spec_path = _write_spec(root / "curve", spec)
    assert main(["plan", str(spec_path)]) == 0
    plan, plan_file = load_spec_and_plan(spec_path)
    assert plan_file == root / "curve" / "plan.json"
    # train_a: p1 x 2 seeds x 2 trials + scratch 4; train_b: (p1, p2) x 2 x 2 + 4; topline 1 seed x 2 trials
    assert len(plan["runs"]) == 4 + 4 + 8 + 4 + 2 and {r["kind"] for r in plan["runs"]} == {"finetune"}
    assert all(
        any(o.startswith("finetune.pretrained=") for o in r["overrides"]) == (r["variant"] == "pretrained")
        for r in plan["runs"]
    )
    assert main(["plan", str(spec_path)]) == 0  # the same plan: fine

    # as submitit jobs side by side, then in this process
    assert main(["run", str(spec_path), "--only", "topline-*", "--jobs", "2"]) == 0
    assert len(list((root / "runs" / "logs").glob("topline-*.log"))) == 2
    assert main(["run", str(spec_path), "--in-process"]) == 0
    summaries = load_summaries(plan)
    assert len(summaries) == len(plan["runs"])
    stamps = {i: os.stat(summary_path(plan, i)).st_mtime_ns for i in summaries}
    assert engine.run_plan(plan, spec_path, in_process=True, log=lambda *_: None) == []  # all skipped
    assert stamps == {i: os.stat(summary_path(plan, i)).st_mtime_ns for i in summaries}
    s = summaries["pretrained-train_b-p2-s1-t1"]
    assert s["lr_scale"] == {"lm_head": 4.0} and s["seed"] == 1 and s["updates"] == 2
    assert s["plan_sha256"] == plan["sha256"] and s["pretrain_weights_sha256"]
    assert s["code"]["code_version"] and s["code"]["num_threads"] == 1 and s["wall_minutes_last_sitting"] > 0
    assert s["code"]["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert [r["update"] for r in s["valid_curve"]] == [1, 2] and s["final_valid"] == s["valid_curve"][-1]
    assert not list((root / "curve").rglob("*.safetensors"))  # no weights among the results
    capsys.readouterr()
    assert main(["status", str(spec_path)]) == 0
    assert f"{len(plan['runs'])} of {len(plan['runs'])} runs done" in capsys.readouterr().out

    chosen, incomplete = choose_on_valid(plan, summaries)
    assert not incomplete and len(chosen) == (2 + 2) + (4 + 2) + 1
    for c in chosen:
        key = (c["variant"], c["subset"], c["checkpoint"], c["seed"])
        rivals = [
            summaries[r["id"]]
            for r in plan["runs"]
            if (r["variant"], r["subset"], r["checkpoint"], r["seed"]) == key
        ]
        assert len(rivals) == 2 and c["best_valid"]["cer"] == min(r["best_valid"]["cer"] for r in rivals)
    assert main(["report", str(spec_path)]) == 0
    assert "test not scored yet" in (root / "curve" / "report.md").read_text()

    assert len(list((root / "curve" / "sealed").glob("*.json.gz"))) == len(plan["runs"])
    gone = chosen[0]  # a folder lost before scoring is scored from its sealed transcripts
    expected = evaluate_split(gone["run_dir"], setup["corpus"], "test")
    shutil.rmtree(gone["run_dir"])
    assert main(["score-test", str(spec_path)]) == 0
    marker = root / "curve" / "test_scores.json"
    scores = json.loads(marker.read_text())
    assert sorted(r["id"] for r in scores["chosen"]) == sorted(c["id"] for c in chosen)
    row = next(r for r in scores["chosen"] if r["id"] == gone["id"])
    assert (row["test_cer"], row["test_wer"]) == (expected.cer, expected.wer)
    assert all(set(r["test_by_kind"]) == {"domain", "general"} for r in scores["chosen"])
    capsys.readouterr()
    assert main(["score-test", str(spec_path)]) == 2  # once only
    err = capsys.readouterr().err.strip()
    assert "test already scored" in err and str(marker) in err and "\n" not in err
    assert main(["run", str(spec_path), "--in-process"]) == 2  # no runs after test

    assert main(["report", str(spec_path)]) == 0
    _assert_report_has(
        root / "curve" / "report.md",
        "test CER per variant and size",
        "## pretrained / scratch",
        "two-level",
        "Welch t",
        "blank collapse",
        "by sentence kind",
        "pretrained-train_b-p2-s2",
        "topline",
        "The spec lowers the protocol's minimums",
        "min_seeds 2 (default 3)",
    )
    pytest.importorskip("matplotlib")
    assert (root / "curve" / "curve.png").stat().st_size > 1000


def test_an_ablation_pretrains_probes_and_fine_tunes_its_variants(setup, capsys):
    """Two pretraining variants x 2 seeds, probed (and the baselines) and fine-tuned from their own
    checkpoints at one size; pretraining runs first, and a summary of another config is refused."""
    root = setup["root"]
    ft = copy.deepcopy(setup["finetune"])
    ft |= {"sizes": ft["sizes"][:1], "seeds": [1], "trials": ft["trials"][:1]}
    ft["overrides"].append("finetune.freeze_feature_encoder=false")
    spec = {
        "name": "micro_ablation",
        "corpus": str(setup["corpus"]),
        "runs_dir": str(root / "ablation_runs"),
        "reference": "contrastive",
        "pretrain": {
            "config": "pretrain_tiny",
            "updates": 2,
            "seeds": [1, 2],
            "overrides": [
                "data.train_subset=unlabeled",
                "data.valid_subset=valid",
                "data.num_workers=0",
                "data.max_sample_size=12000",
                "data.min_sample_size=4000",
                "data.max_tokens=48000",
                "trainer.log_interval=1",
                "trainer.valid_interval=1",
                "trainer.precision=32",
                *dotted_overrides(MICRO),
            ],
        },
        "variants": {
            "contrastive": {"pretrain": []},
            "best_rq": {"pretrain": ["model.objective=best_rq", "model.best_rq.codebook_size=64"]},
        },
        "probe": {
            "train": "train",
            "valid": "valid",
            "protocol": {"steps": 20, "batch_size": 4, "random_init_seeds": 1, "log_mel": True},
        },
        "finetune": ft,
        "protocol": {"min_seeds": 1, "min_trials": 1, "bootstrap_resamples": 500},
    }
    spec_path = _write_spec(root / "ablation", spec)
    assert main(["plan", str(spec_path)]) == 0
    plan, _ = load_spec_and_plan(spec_path)
    assert [r["id"] for r in plan["runs"]][:5] == [
        "baseline",
        "contrastive-p1",
        "contrastive-p2",
        "best_rq-p1",
        "best_rq-p2",
    ]
    tune = [r for r in plan["runs"] if r["kind"] == "finetune"]
    assert [r["after"] for r in tune] == ["contrastive-p1", "contrastive-p2", "best_rq-p1", "best_rq-p2"]
    capsys.readouterr()
    # fine-tuning a checkpoint that is neither pretrained nor selected is refused, in one line
    assert main(["run", str(spec_path), "--in-process", "--only", "contrastive-train_a-*"]) == 2
    assert "neither done nor selected" in capsys.readouterr().err
    # one pretraining run as a submitit job, the rest in this process, pretraining first
    assert main(["run", str(spec_path), "--only", "contrastive-p1", "--jobs", "1"]) == 0
    assert main(["run", str(spec_path), "--in-process"]) == 0
    summaries = load_summaries(plan)
    assert len(summaries) == len(plan["runs"])
    p = summaries["best_rq-p2"]
    assert p["objective"] == "best_rq" and p["probe"] and len(p["probe_layers"]) == MICRO["num_layers"] + 2
    assert p["best_layer"]["valid_cer"] == min(r["valid_cer"] for r in p["probe_layers"])
    assert p["probe_protocol"]["random_init_seeds"] == 0  # the baselines are probed once, apart
    assert summaries["baseline"]["random_init"] and summaries["baseline"]["log_mel"]
    t = summaries["best_rq-train_a-p2-s1-t0"]
    assert t["checkpoint_path"].endswith("best_rq-p2/checkpoints/last")
    assert t["pretrain_weights_sha256"] == p["weights_sha256"]
    assert main(["report", str(spec_path)]) == 0
    _assert_report_has(
        root / "ablation" / "report.md",
        "Frozen probes on `valid`",
        "ratio to contrastive",
        "Chosen on valid",
        "## best_rq / contrastive",
    )

    # a pretrained checkpoint whose folder is gone (run folders do not always outlive a machine)
    folder = Path(plan["spec"]["runs_dir"]) / "contrastive-p1"
    summary_path(plan, "contrastive-train_a-p1-s1-t0").unlink()
    folder.rename(folder.with_name("elsewhere"))
    capsys.readouterr()
    assert main(["run", str(spec_path), "--in-process"]) == 2
    assert "is gone although contrastive-p1 is summarized; remove" in capsys.readouterr().err

    # a summary whose config is not the plan's is refused, not mixed in
    path = summary_path(plan, "best_rq-p1")
    s = json.loads(path.read_text())
    path.write_text(json.dumps({**s, "overrides": [*s["overrides"], "optim.lr=1"]}))
    capsys.readouterr()
    assert main(["status", str(spec_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "made under another config" in err and str(path) in err and "\n" not in err
    path.write_text(json.dumps(s))
    # so is a run folder of another config
    folder = Path(plan["spec"]["runs_dir"]) / "contrastive-p2"
    (folder / "experiment_run.json").write_text(json.dumps({"config_name": "x", "overrides": []}))
    summary_path(plan, "contrastive-p2").unlink()
    assert main(["run", str(spec_path), "--in-process", "--only", "contrastive-p2"]) == 2
    assert "trained with another config" in capsys.readouterr().err


def _set(spec: dict, path: str, value) -> dict:
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[p]
    node[last] = value
    return spec


@pytest.mark.parametrize(
    "change, message",
    [
        (("variants.scratch.finetune.trials", [{"lr": 1e-3}] * 3), "unequal number of lr trials"),
        (("variants.scratch.finetune.trials", [{"lr": 1e-3}, {"lr": 2e-3}]), "offered to every variant"),
        (("finetune.seeds", [1]), ">= 2 fine-tuning seeds"),
        (
            ("variants.pretrained.checkpoints", [{"name": "p1", "path": "x"}]),
            ">= 2 pretraining seeds at train_b (got 1",
        ),
        (("finetune.overrides", ["optim.lr=1e-3"]), "the plan sets for each run"),
        (("finetune.overrides", ["data.valid_subset=test"]), "test is never trained or chosen on"),
        (("protocol.min_pretrain_seeds_at", ["train_10min"]), "not among the sizes"),
        (("finetune.sizes", [{"subset": "train-a*", "minutes": 1, "updates": 2}]), "names use letters"),
        (
            ("variants.scratch.finetune.overrides", ["model=tiny", "model.no_such_field=1"]),
            "does not compose",
        ),
        (("variants.scratch.checkpoint", "x"), "exactly one of pretrain"),
        (("variants.extra", {"pretrain": []}), "needs a pretrain section"),
        (("reference", "nobody"), "spec.reference"),
        (("finetune.topline.like", "pretrained"), "topline.like: a scratch variant"),
        (("protocol.min_seed", 1), "spec.protocol.min_seed: unknown key; known: min_seeds"),
    ],
)
def test_spec_errors_are_one_line(setup, tmp_path, capsys, change, message):
    spec_path = _write_spec(tmp_path, _set(setup["curve"], *change))
    assert main(["plan", str(spec_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("w2v2-experiment: error:") and "\n" not in err
    assert not (tmp_path / "plan.json").exists()


def test_plan_is_a_record_an_edited_spec_or_uncommitted_plan_is_refused(setup, tmp_path, capsys):
    spec = _set(setup["curve"], "runs_dir", str(tmp_path / "runs"))
    spec_path = _write_spec(tmp_path, spec)
    assert main(["status", str(spec_path)]) == 2  # no plan yet
    assert main(["plan", str(spec_path)]) == 0
    _write_spec(tmp_path, _set(spec, "finetune.seeds", [1, 3]))
    assert main(["status", str(spec_path)]) == 2  # the spec changed since its plan
    assert main(["plan", str(spec_path)]) == 2  # another plan: not replaced silently
    assert main(["plan", "--force", str(spec_path)]) == 0
    errs = [e for e in capsys.readouterr().err.splitlines() if e]
    assert len(errs) == 3 and all(e.startswith("w2v2-experiment: error:") for e in errs)
    assert "no plan yet" in errs[0] and "changed since" in errs[1] and "holds another plan" in errs[2]

    # inside a git work tree the plan must be committed before the first run
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert "not committed" in check_committed(tmp_path / "plan.json")
    assert main(["run", str(spec_path), "--only", "nothing-*"]) == 2
    assert "commit the plan before the first run" in capsys.readouterr().err
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "plan.json"], check=True)
    subprocess.run([*git, "commit", "-qm", "plan"], check=True)
    assert check_committed(tmp_path / "plan.json") is None
    assert main(["run", str(spec_path), "--only", "nothing-*"]) == 2
    assert "matches none of the plan's run ids" in capsys.readouterr().err
    (tmp_path / "plan.json").write_text((tmp_path / "plan.json").read_text() + " ")
    assert "is not committed (git status: M)" in check_committed(tmp_path / "plan.json")


def test_missing_checkpoint_and_slurm_options_from_spec_and_command_line(
    setup, tmp_path, capsys, monkeypatch
):
    spec = _set(
        setup["curve"],
        "variants.pretrained.checkpoints",
        [
            {"name": "p1", "path": str(tmp_path / "gone")},
            {"name": "p2", "path": str(tmp_path / "gone2")},
        ],
    )
    spec = _set(spec, "slurm", {"partition": "cpu", "timeout_min": 90, "extra": {"account": "speech"}})
    spec_path = _write_spec(tmp_path, spec)
    assert main(["plan", str(spec_path)]) == 0
    assert main(["run", str(spec_path), "--only", "pretrained-*", "--allow-uncommitted-plan"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "gone" in err and err.count("\n") == 1

    sent = {}

    def fake_run_jobs(jobs, **kw):
        sent.update(kw, jobs=jobs)
        return []

    monkeypatch.setattr(engine, "run_jobs", fake_run_jobs)
    args = [
        "run",
        str(spec_path),
        "--only",
        "scratch-train_a-*",
        "--slurm",
        "--partition",
        "gpu",
        "--gpus",
        "1",
    ]
    assert main(args) == 0
    assert sent["slurm"].partition == "gpu" and sent["slurm"].gpus_per_node == 1
    assert sent["slurm"].timeout_min == 90 and sent["slurm"].extra == {"account": "speech"}
    assert len(sent["jobs"]) == 4 and sent["parallel"] == 4  # the cluster queues them all
    assert all(j[1][:3] == ["-m", "wav2vec2_lite.experiments.cli", "run-one"] for j in sent["jobs"])
    assert main(["run", str(spec_path), "--jobs", "1000"]) == 2  # more than the cores here
    assert "cores here" in capsys.readouterr().err
    assert main(["run", str(spec_path), "--jobs", "0"]) == 2
    assert "--jobs: an integer >= 1" in capsys.readouterr().err
    assert main(["run", str(spec_path), "--partition", "gpu"]) == 2
    assert "SLURM settings: add --slurm" in capsys.readouterr().err

    # a second job for a run another process holds stops at once (a resubmitted job, say)
    plan, _ = load_spec_and_plan(spec_path)
    lock = Path(plan["spec"]["runs_dir"]) / "locks" / "scratch-train_a-none-s1-t0.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["run-one", str(spec_path), "scratch-train_a-none-s1-t0"]) == 2
    assert "is running in another process" in capsys.readouterr().err
