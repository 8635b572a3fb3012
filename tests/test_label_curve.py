"""The label-curve protocol end to end on a micro configuration (toy corpus, micro model,
2-update runs, two 2-update 'pretrained' checkpoints), and the plan's validation errors."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from wav2vec2_lite.asr.evaluate import evaluate_split
from wav2vec2_lite.data.manifest import read_labels, read_manifest, write_labels, write_manifest
from wav2vec2_lite.tools.label_curve import load_plan, load_summaries, run_plan, summary_path
from wav2vec2_lite.tools.label_curve_cli import main
from wav2vec2_lite.tools.label_curve_report import choose_on_valid
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import train

from _helpers import MICRO_MODEL, dotted_overrides

MICRO = MICRO_MODEL
MICRO_OVERRIDES = ["model=tiny"] + dotted_overrides({k: v for k, v in MICRO.items() if k != "preset"})


def _subset(corpus: Path, src: str, dst: str, n: int | None = None) -> None:
    m = read_manifest(corpus / f"{src}.tsv")
    n = len(m.paths) if n is None else n
    write_manifest(corpus / f"{dst}.tsv", m.root, list(zip(m.paths, m.sizes))[:n])
    for ext in ("ltr", "wrd"):
        write_labels(corpus / f"{dst}.{ext}", read_labels(corpus / f"{src}.{ext}")[:n])


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A toy corpus with nested train_a ⊂ train_b, a test split, an unlabeled pool with
    transcripts in utterances.jsonl (sentence kinds alternate), and two micro 'pretrained' models."""
    root = tmp_path_factory.mktemp("label_curve")
    corpus = make_toy_corpus(root / "corpus", train=24, valid=8, seed=0, min_words=2, max_words=3)
    _subset(corpus, "train", "train_a", 8)
    _subset(corpus, "train", "train_b", 16)
    _subset(corpus, "valid", "test")
    m = read_manifest(corpus / "train.tsv")
    write_manifest(corpus / "unlabeled.tsv", m.root, list(zip(m.paths, m.sizes)))
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
                "model": dict(MICRO),
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
    spec = {
        "name": "micro",
        "corpus": str(corpus),
        "runs_dir": str(root / "runs"),
        "results_dir": str(root / "results"),
        "config_name": "finetune_demo",
        "common_overrides": [
            "data.num_workers=0",
            "data.max_tokens=48000",
            "trainer.log_interval=1",
            "trainer.valid_interval=1",
            "trainer.best_metric=cer",
        ],
        "sizes": [{"subset": "train_a", "minutes": 0.5}, {"subset": "train_b", "minutes": 1.0}],
        "seeds": [1, 2],
        "arms": {
            "pretrained": {
                "checkpoints": [
                    {"name": "p1", "path": ckpts[0]},
                    {"name": "p2", "path": ckpts[1], "sizes": ["train_b"]},
                ],
                "overrides": ["finetune.freeze_feature_encoder=false"],
                "updates": {"train_a": 2, "train_b": 2},
                "trials": trials,
            },
            "scratch": {
                "overrides": MICRO_OVERRIDES,
                "updates": {"train_a": 2, "train_b": 2},
                "trials": trials,
            },
        },
        "topline": {"updates": 2, "minutes": 2.0, "seeds": [1]},
        "protocol": {"min_seeds": 2, "min_pretrain_seeds_at": ["train_b"], "bootstrap_resamples": 2000},
    }
    return {"root": root, "corpus": corpus, "spec": spec}


def _write_spec(path: Path, spec: dict) -> Path:
    path.write_text(json.dumps(spec))
    return path


def test_protocol_end_to_end(setup, capsys):
    root, spec = setup["root"], setup["spec"]
    plan_path = root / "plan.json"
    assert main(["plan", "--spec", str(_write_spec(root / "spec.json", spec)), "--out", str(plan_path)]) == 0
    plan = load_plan(plan_path)
    # train_a: p1 x 2 seeds x 2 trials + scratch 4; train_b: (p1, p2) x 2 x 2 + 4; topline 1 seed x 2 trials
    assert len(plan["runs"]) == 4 + 4 + 8 + 4 + 2
    assert all(
        any(o.startswith("finetune.pretrained=") for o in r["overrides"]) == (r["arm"] == "pretrained")
        for r in plan["runs"]
    )
    assert main(["plan", "--spec", str(root / "spec.json"), "--out", str(plan_path)]) == 0  # same plan: fine

    # side by side in subprocesses (the topline writes its transcribed unlabeled manifest), then the rest here
    assert main(["run", "--plan", str(plan_path), "--only", "topline-*", "--jobs", "2"]) == 0
    assert (setup["corpus"] / "unlabeled_text.ltr").is_file()
    assert main(["run", "--plan", str(plan_path), "--only", "scratch-train_a-*"]) == 0
    assert len(load_summaries(plan)) == 6
    assert main(["run", "--plan", str(plan_path)]) == 0
    summaries = load_summaries(plan)
    assert len(summaries) == len(plan["runs"])
    stamps = {i: os.stat(summary_path(plan, i)).st_mtime_ns for i in summaries}
    assert run_plan(plan_path, log=lambda *_: None) == []  # every run skipped
    assert stamps == {i: os.stat(summary_path(plan, i)).st_mtime_ns for i in summaries}
    s = summaries["pretrained-train_b-p2-s1-t1"]
    assert s["lr_scale"] == {"lm_head": 4.0} and s["seed"] == 1 and s["updates"] == 2
    assert s["code"]["code_version"] and s["code"]["num_threads"] == 1
    assert s["code"]["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert [r["update"] for r in s["valid_curve"]] == [1, 2] and s["final_valid"] == s["valid_curve"][-1]
    assert not list(Path(spec["results_dir"]).rglob("*.safetensors"))  # no weights in the summaries
    capsys.readouterr()
    assert main(["status", "--plan", str(plan_path)]) == 0
    assert f"{len(plan['runs'])} of {len(plan['runs'])} runs done" in capsys.readouterr().out

    chosen, incomplete = choose_on_valid(plan, summaries)
    assert not incomplete and len(chosen) == (2 + 2) + (4 + 2) + 1
    for c in chosen:
        rivals = [
            summaries[r["id"]]
            for r in plan["runs"]
            if (r["arm"], r["subset"], r["pretrain"], r["seed"])
            == (c["arm"], c["subset"], c["pretrain"], c["seed"])
        ]
        assert len(rivals) == 2 and c["best_valid"]["cer"] == min(r["best_valid"]["cer"] for r in rivals)

    assert main(["report", "--plan", str(plan_path)]) == 0
    assert "test not scored yet" in (Path(spec["results_dir"]) / "report.md").read_text()

    sealed = sorted((Path(spec["results_dir"]) / "sealed").glob("*.json.gz"))
    assert len(sealed) == len(plan["runs"])  # every run sealed its test
    gone = chosen[0]  # a folder lost before scoring:
    expected = evaluate_split(gone["run_dir"], setup["corpus"], "test")  # scored from its sealed transcripts
    shutil.rmtree(gone["run_dir"])
    assert main(["score-test", "--plan", str(plan_path)]) == 0
    marker = Path(spec["results_dir"]) / "test_scores.json"
    scores = json.loads(marker.read_text())
    assert sorted(r["id"] for r in scores["chosen"]) == sorted(c["id"] for c in chosen)
    row = next(r for r in scores["chosen"] if r["id"] == gone["id"])
    assert (row["test_cer"], row["test_wer"]) == (expected.cer, expected.wer)
    assert all(set(r["test_by_kind"]) == {"domain", "general"} for r in scores["chosen"])
    capsys.readouterr()
    assert main(["score-test", "--plan", str(plan_path)]) == 2  # once only
    err = capsys.readouterr().err.strip()
    assert "test already scored" in err and str(marker) in err and "\n" not in err
    assert main(["run", "--plan", str(plan_path)]) == 2  # no runs after test

    assert main(["report", "--plan", str(plan_path)]) == 0
    report = (Path(spec["results_dir"]) / "report.md").read_text()
    for needle in (
        "test CER per arm and size",
        "Pretrained / scratch",
        "two-level",
        "Welch t",
        "blank collapse",
        "by sentence kind",
        "pretrained-train_b-p2-s2",
        "topline",
    ):
        assert needle in report, needle
    pytest.importorskip("matplotlib")
    assert (Path(spec["results_dir"]) / "label_curve.png").stat().st_size > 1000


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
        (("arms.scratch.updates", {"train_a": 2, "train_b": 3}), "unequal budgets between arms at train_b"),
        (("arms.scratch.trials", [{"lr": 1e-3}, {"lr": 2e-3}, {"lr": 4e-3}]), "unequal number of lr trials"),
        (("arms.scratch.trials", [{"lr": 1e-3}, {"lr": 2e-3}]), "offered to both arms"),
        (("seeds", [1]), ">= 2 fine-tuning seeds"),
        (
            ("arms.pretrained.checkpoints", [{"name": "p1", "path": "x"}]),
            "1 pretrained checkpoint(s) at train_b",
        ),
        (("common_overrides", ["optim.lr=1e-3"]), "the plan sets for each run"),
        (("protocol.min_pretrain_seeds_at", ["train_10min"]), "not among the sizes"),
        (("sizes", [{"subset": "train-a*", "minutes": 1}]), "names use letters"),
        (("arms.scratch.overrides", ["model=tiny", "model.no_such_field=1"]), "does not compose"),
    ],
)
def test_plan_validation_errors(setup, tmp_path, capsys, change, message):
    spec = _set(setup["spec"], *change)
    out = tmp_path / "plan.json"
    assert main(["plan", "--spec", str(_write_spec(tmp_path / "spec.json", spec)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("label_curve: error:") and "\n" not in err
    assert not out.exists()


def test_user_errors_are_one_line(setup, tmp_path, capsys):
    spec = _set(setup["spec"], "results_dir", str(tmp_path / "results"))  # no test scores from other tests
    assert main(["status", "--plan", str(tmp_path / "missing.json")]) == 2
    plan = tmp_path / "plan.json"
    assert main(["plan", "--spec", str(_write_spec(tmp_path / "s.json", spec)), "--out", str(plan)]) == 0
    assert main(["run", "--plan", str(plan), "--only", "nothing-*"]) == 2
    other = _set(spec, "seeds", [1, 3])
    assert main(["plan", "--spec", str(_write_spec(tmp_path / "s2.json", other)), "--out", str(plan)]) == 2
    gone = _set(
        spec,
        "arms.pretrained.checkpoints",
        [{"name": "p1", "path": str(tmp_path / "gone")}, {"name": "p2", "path": str(tmp_path / "gone2")}],
    )
    gone_plan = tmp_path / "gone_plan.json"
    assert (
        main(["plan", "--spec", str(_write_spec(tmp_path / "s3.json", gone)), "--out", str(gone_plan)]) == 0
    )
    assert main(["run", "--plan", str(gone_plan), "--only", "pretrained-*"]) == 2
    errs = [e for e in capsys.readouterr().err.splitlines() if e]
    assert len(errs) == 4 and all(e.startswith("label_curve: error:") for e in errs)
    assert "holds another plan" in errs[2] and "pretrained checkpoint(s) not found" in errs[3]
