"""The pretraining comparison (recipe and objective read with frozen probes) end to end on a
micro configuration: 2 variants x 2 seeds of 2-update runs on a toy corpus, the baselines, resume,
the report, and the spec's one-line errors."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from wav2vec2_lite.data.manifest import read_manifest, write_manifest
from wav2vec2_lite.tools.pretrain_compare import load_spec, load_summaries, main, plan_runs, run_compare
from wav2vec2_lite.train.toy_data import make_toy_corpus

from _helpers import MICRO_MODEL, dotted_overrides

MICRO = {k: v for k, v in MICRO_MODEL.items() if k != "preset"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pretrain_compare")
    corpus = make_toy_corpus(root / "corpus", train=16, valid=6, seed=0, min_words=2, max_words=3)
    m = read_manifest(corpus / "train.tsv")
    write_manifest(corpus / "unlabeled.tsv", m.root, list(zip(m.paths, m.sizes)))
    return {
        "name": "micro_compare",
        "corpus": str(corpus),
        "runs_dir": str(root / "runs"),
        "results_dir": str(root / "results"),
        "config_name": "pretrain_tiny",
        "threads_per_run": 1,
        "updates": 2,
        "seeds": [1, 2],
        "common_overrides": [
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
        "variants": {
            "contrastive": [],
            "best_rq": ["model.objective=best_rq", "model.best_rq.codebook_size=64"],
        },
        "probe": {
            "train": "train",
            "valid": "valid",
            "protocol": {"steps": 20, "batch_size": 4, "random_init_seeds": 2, "log_mel": True},
        },
        "root": str(root),
    }


def _write(spec: dict, name: str = "spec.json", **changes) -> Path:
    body = {k: v for k, v in {**spec, **changes}.items() if k != "root"}
    path = Path(spec["root"]) / name
    path.write_text(json.dumps(body))
    return path


def test_variants_by_seeds_probed_and_reported_on_valid(spec, capsys):
    path = _write(spec)
    runs = plan_runs(load_spec(path))
    assert [r["id"] for r in runs] == ["contrastive-s1", "contrastive-s2", "best_rq-s1", "best_rq-s2"]
    assert all(
        "trainer.max_updates=2" in r["overrides"] and "schedule.total_updates=2" in r["overrides"]
        for r in runs
    )
    # one run through the side-by-side subprocess path, then the rest in this process
    assert main(["run", "--spec", str(path), "--only", "contrastive-s1", "--jobs", "2"]) == 0
    assert set(load_summaries(load_spec(path))) == {"contrastive-s1"}
    assert main(["report", "--spec", str(path)]) == 0  # partial: no ratio, no choice yet
    partial = (Path(spec["results_dir"]) / "report.md").read_text()
    assert (
        "– (no baseline yet)" in partial
        and "no choice yet" in partial
        and "| best_rq-s1 | – | not run |" in partial
    )
    assert main(["run", "--spec", str(path)]) == 0
    done = load_summaries(load_spec(path))
    assert set(done) == {*(r["id"] for r in runs), "baseline"}
    s = done["best_rq-s2"]
    assert s["objective"] == "best_rq" and s["seed"] == 2 and s["updates"] == 2 and s["code"]["code_version"]
    assert [r["update"] for r in s["valid_curve"]] == [1, 2] and s["hours_of_audio_seen"] > 0
    layers = [r["layer"] for r in s["probe_layers"]]
    assert layers == ["conv", "layer_0", "layer_1", "layer_2"] and s["best_layer"] in s["probe_layers"]
    assert all(math.isfinite(r["valid_cer"]) and r["valid_cer"] >= 0 for r in s["probe_layers"])
    assert s["probe_data"]["valid_split"] == "valid" and s["probe_data"]["train_split"] == "train"
    assert done["contrastive-s1"]["objective"] == "contrastive"
    base = done["baseline"]
    assert base["architecture"] == s["architecture"] == done["contrastive-s1"]["architecture"]
    assert base["random_init_seeds"] == [0, 1] and [r["layer"] for r in base["random_init"]] == layers
    assert [r["layer"] for r in base["log_mel"]] == ["log_mel"]
    assert not list(Path(spec["results_dir"]).rglob("*.safetensors"))  # summaries only, no weights

    stamps = {p: os.stat(p).st_mtime_ns for p in Path(spec["results_dir"]).rglob("*.json")}
    assert run_compare(path, log=lambda *_: None) == []  # everything summarized: nothing reruns
    assert stamps == {p: os.stat(p).st_mtime_ns for p in Path(spec["results_dir"]).rglob("*.json")}

    # a crash after training, before the summary: the rerun probes again without training again
    metrics = Path(spec["runs_dir"]) / "contrastive-s2" / "metrics.jsonl"
    lines, summary = metrics.read_text(), Path(spec["results_dir"]) / "runs" / "contrastive-s2.json"
    before = json.loads(summary.read_text())
    summary.unlink()
    assert run_compare(path, only="contrastive-s2", log=lambda *_: None) == ["contrastive-s2"]
    after = json.loads(summary.read_text())
    assert metrics.read_text() == lines and after["probe_layers"] == before["probe_layers"]
    assert after["valid_curve"] == before["valid_curve"]

    capsys.readouterr()
    assert main(["status", "--spec", str(path)]) == 0
    assert "5 of 5 done" in capsys.readouterr().out
    assert main(["report", "--spec", str(path)]) == 0
    report = (Path(spec["results_dir"]) / "report.md").read_text()
    means = {
        v: sum(done[f"{v}-s{k}"]["best_layer"]["valid_cer"] for k in (1, 2)) / 2
        for v in ("contrastive", "best_rq")
    }
    chosen = min(means, key=means.get)
    assert f"Chosen on valid: **{chosen}**" in report and "| best_rq-s1 | best_rq |" in report
    rand = min(r["valid_cer"] for r in base["random_init"])
    assert (
        f"| {chosen} | 2 | {means[chosen]:.3f} ± " in report and f"| {means[chosen] / rand:.2f}× |" in report
    )


def test_summaries_of_another_spec_are_refused_not_mixed_in(spec, tmp_path, capsys):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "runs" / "contrastive-s1.json").write_text(json.dumps({"overrides": ["x=1"], "updates": 2}))
    path = _write(spec, "stale.json", results_dir=str(results))
    assert main(["status", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "contrastive-s1.json: made under another spec" in err


def test_a_run_folder_of_another_config_is_refused(spec, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    (runs_dir / "contrastive-s1").mkdir(parents=True)
    (runs_dir / "contrastive-s1" / "pretrain_compare_run.json").write_text(json.dumps({"config_name": "x"}))
    path = _write(spec, "other.json", runs_dir=str(runs_dir), results_dir=str(tmp_path / "results"))
    assert main(["run", "--spec", str(path), "--only", "contrastive-s1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained with another config" in err and "contrastive-s1" in err


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seeds": [1]}, "seeds must list >= 2"),
        ({"variants": {"only": []}}, "variants must map >= 2"),
        ({"variants": {"a": [], "b": ["trainer.seed=3"]}}, "trainer.seed is set by the runner"),
        ({"variants": {"a": [], "b": ["model.no_such_field=1"]}}, "variant b"),
        ({"probe": {"train": "train", "valid": "test"}}, "test is never read"),
        (
            {"probe": {"train": "train", "valid": "valid", "protocol": {"steps": 0}}},
            "steps must be an integer >= 1",
        ),
        ({"typo": 1}, "unknown key(s) ['typo']"),
        ({"updates": True}, "updates must be an integer >= 1"),
        (
            {"variants": {"a": [], "b": ["data.valid_subset=test"]}},
            "data.valid_subset=test: test is never read",
        ),
        (
            {"variants": {"a": [], "b": ["data.manifest_dir=/elsewhere"]}},
            "data.manifest_dir is set by the runner",
        ),
        ({"probe": {"train": "test", "valid": "valid"}}, "a probe split is test"),
        (
            {"probe": {"train": "train", "valid": "valid", "protcol": {}}},
            "nothing else; found ['protcol', 'train', 'valid']",
        ),
        (
            {"probe": {"train": "train", "valid": "valid", "protocol": {"random_init_seeds": 0}}},
            "random_init_seeds must be >= 1",
        ),
        ({"probe": {"train": "train_missing", "valid": "valid"}}, "train_missing.tsv"),
        ({"config_name": "no_such_config"}, "config no_such_config with variant contrastive's overrides"),
    ],
)
def test_spec_errors_are_one_line(spec, tmp_path, capsys, change, message):
    path = _write(spec, "bad.json", runs_dir=str(tmp_path / "r"), results_dir=str(tmp_path / "res"), **change)
    assert main(["run", "--spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pretrain_compare: error:") and err.count("\n") == 1 and message in err
