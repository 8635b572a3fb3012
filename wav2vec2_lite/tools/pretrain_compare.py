"""Pretraining variants compared by frozen probes on ``valid``: the recipe and the objective.

A spec names the corpus, one pretraining config with the overrides every run shares, the
variants (each a list of overrides: a recipe change, or ``model.objective=best_rq`` for the
objective), the seeds and the number of updates (the same for every variant), and the probe
protocol. ``run`` pretrains each variant x seed that has no summary yet (an interrupted run
resumes from its last checkpoint; ``--jobs N`` submitit jobs at a time, ``threads_per_run`` threads each),
probes every layer of its last checkpoint with linear CTC probes (trained on ``probe.train``,
scored on ``probe.valid``: voices and sentences the pretraining never heard) and writes one JSON
summary per run under ``RESULTS/runs/`` (overrides, resolved config, wall clock, audio seen, the
pretext valid curve, the probe of every layer; no weights). The baselines (the architecture at
random init, averaged over seeds, and the log-mel front end) are probed once, into
``RESULTS/baseline.json``. ``report`` writes the table
(:mod:`~wav2vec2_lite.tools.pretrain_compare_report`); the variant chosen is the one with the
lowest mean best-layer valid CER. Test is never read.

    python scripts/pretrain_compare.py run --spec SPEC [--only PATTERN] [--jobs N]
    python scripts/pretrain_compare.py status --spec SPEC
    python scripts/pretrain_compare.py report --spec SPEC
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from wav2vec2_lite.experiments.jobs import run_jobs
from wav2vec2_lite.models import Wav2Vec2Model
from wav2vec2_lite.pretrained.bundle import audio_seen_hours, running_minutes, valid_curve
from wav2vec2_lite.probes.protocol import ProbeError, ProbeProtocol
from wav2vec2_lite.probes.run import run_probes
from wav2vec2_lite.tools.label_curve import claim_run_dir, compose_config, now_iso, run_code, write_json
from wav2vec2_lite.tools.label_curve_spec import LabelCurveError, load_mapping
from wav2vec2_lite.tools.pretrain_compare_report import report_markdown
from wav2vec2_lite.train.config import build_model_config, config_container
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.trainer import train

__all__ = ["CompareError", "load_spec", "plan_runs", "run_compare", "status", "write_report", "main"]

FORMAT = 1
RUNNER_SETS = (
    "trainer.max_updates",
    "trainer.max_epochs",
    "trainer.seed",
    "trainer.num_threads",
    "trainer.resume",
    "schedule.total_updates",
    "data.manifest_dir",
    "hydra.",
)
SPLIT_KEYS = ("data.train_subset", "data.valid_subset")
BASELINE = "baseline"


class CompareError(LabelCurveError):
    """A user error of the comparison (bad spec, missing corpus, a run folder of another config)."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise CompareError(message)


def load_spec(path: str | Path) -> dict:
    """The spec at ``path`` (YAML or JSON), validated; ``sha256`` of its text added."""
    path = Path(path)
    spec = load_mapping(path)
    keys = {
        "name",
        "corpus",
        "runs_dir",
        "results_dir",
        "config_name",
        "threads_per_run",
        "updates",
        "seeds",
        "common_overrides",
        "variants",
        "probe",
    }
    unknown = sorted(set(spec) - keys)
    _need(not unknown, f"{path}: unknown key(s) {unknown}; known: {sorted(keys)}")
    missing = sorted(keys - set(spec) - {"common_overrides"})
    _need(not missing, f"{path}: missing key(s) {missing}")
    spec.setdefault("common_overrides", [])
    for key in ("updates", "threads_per_run"):
        v = spec[key]
        _need(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            f"{path}: {key} must be an integer >= 1",
        )
    seeds = spec["seeds"]
    _need(
        isinstance(seeds, list)
        and len(seeds) >= 2
        and len(set(seeds)) == len(seeds)
        and all(isinstance(s, int) and s >= 0 for s in seeds),
        f"{path}: seeds must list >= 2 different integers >= 0 (one seed cannot rank variants), "
        f"found {seeds!r}",
    )
    variants = spec["variants"]
    _need(
        isinstance(variants, dict) and len(variants) >= 2,
        f"{path}: variants must map >= 2 names to override lists",
    )
    for name, overrides in {"common_overrides": spec["common_overrides"], **variants}.items():
        _need(
            re.fullmatch(r"[A-Za-z0-9_]+", str(name)) is not None,
            f"{path}: variant name {name!r}: letters, digits and _ only",
        )
        _need(
            isinstance(overrides, list) and all(isinstance(o, str) and "=" in o for o in overrides),
            f"{path}: {name} must be a list of KEY=VALUE overrides",
        )
        for o in overrides:
            key, _, value = o.lstrip("+~").partition("=")
            _need(
                not key.startswith(RUNNER_SETS),
                f"{path}: {name}: {key} is set by the runner (corpus, updates, "
                f"seeds, threads_per_run, resuming, run folders), not by an override",
            )
            _need(
                not (key in SPLIT_KEYS and value.strip() == "test"),
                f"{path}: {name}: {key}=test: test is never read",
            )
    _need(BASELINE not in variants, f"{path}: {BASELINE!r} is reserved for the baselines")
    probe = spec["probe"]
    _need(
        isinstance(probe, dict)
        and {"train", "valid"} <= set(probe) <= {"train", "valid", "protocol"}
        and probe["train"] != probe["valid"],
        f"{path}: probe needs train and valid (two different splits) and "
        f"an optional protocol, nothing else; found {sorted(probe) if isinstance(probe, dict) else probe!r}",
    )
    _need(
        "test" not in (probe["train"], probe["valid"]),
        f"{path}: a probe split is test: variants are chosen on valid, test is never read",
    )
    _need(isinstance(probe.get("protocol") or {}, dict), f"{path}: probe.protocol must be a mapping")
    try:
        protocol = ProbeProtocol.from_dict(dict(probe.get("protocol") or {}))
    except ProbeError as e:
        raise CompareError(f"{path}: {e}") from None
    _need(
        protocol.random_init_seeds >= 1,
        f"{path}: probe.protocol.random_init_seeds must be >= 1 (the baseline)",
    )
    spec["probe"] = {"train": probe["train"], "valid": probe["valid"], "protocol": protocol.to_dict()}
    spec["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return spec


def plan_runs(spec: dict) -> list[dict]:
    """Every variant x seed: id ``VARIANT-sSEED``, its full override list and run folder."""
    runs = []
    for variant, overrides in spec["variants"].items():
        for seed in spec["seeds"]:
            run_id = f"{variant}-s{seed}"
            full = [
                *spec["common_overrides"],
                *overrides,
                f"data.manifest_dir={spec['corpus']}",
                f"trainer.max_updates={spec['updates']}",
                f"schedule.total_updates={spec['updates']}",
                f"trainer.seed={seed}",
                f"trainer.num_threads={spec['threads_per_run']}",
            ]
            runs.append(
                {
                    "id": run_id,
                    "variant": variant,
                    "seed": seed,
                    "overrides": full,
                    "run_dir": str(Path(spec["runs_dir"]) / run_id),
                }
            )
    return runs


def check_inputs(spec: dict) -> None:
    """Compose every variant's config and look for every file the runs read, so that a typo or a
    missing split fails now rather than after hours of runs."""
    corpus = Path(spec["corpus"])
    probe = spec["probe"]
    needed = {corpus / f"{probe[k]}.{ext}" for k in ("train", "valid") for ext in ("tsv", "ltr")} | {
        corpus / "dict.ltr.txt"
    }
    for run in plan_runs(spec)[:: len(spec["seeds"])]:
        try:
            cfg = compose_config(spec["config_name"], run["overrides"], kind="pretrain")
            build_model_config(cfg.model)
        except Exception as e:  # Hydra's and the schema's errors: the spec's config name or overrides
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise CompareError(
                f"config {spec['config_name']} with variant {run['variant']}'s overrides: {first}"
            ) from None
        needed |= {corpus / f"{cfg.data.train_subset}.tsv", corpus / f"{cfg.data.valid_subset}.tsv"}
    missing = sorted(str(p) for p in needed if not p.is_file())
    _need(not missing, f"missing: {', '.join(missing)} (build the corpus first)")


def _results(spec: dict) -> Path:
    return Path(spec["results_dir"])


def _summary_path(spec: dict, run_id: str) -> Path:
    return _results(spec) / ("baseline.json" if run_id == BASELINE else f"runs/{run_id}.json")


def load_summaries(spec: dict) -> dict[str, dict]:
    """The summaries written so far; one made under another spec (other overrides, updates or
    probe protocol) is refused, not mixed in."""
    runs = {r["id"]: r for r in plan_runs(spec)}
    out = {}
    for rid in [*runs, BASELINE]:
        path = _summary_path(spec, rid)
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        if rid == BASELINE:
            same = s.get("probe_protocol") == _protocol(spec).to_dict()
        else:
            same = (
                s.get("overrides") == runs[rid]["overrides"]
                and s.get("updates") == spec["updates"]
                and s.get("probe_protocol") == _run_protocol(spec).to_dict()
            )
        _need(
            same,
            f"{path}: made under another spec (overrides, updates or probe protocol differ); remove it "
            f"to redo that run",
        )
        out[rid] = s
    return out


def _protocol(spec: dict, **changes):
    """The spec's probe protocol (the baselines')."""
    return ProbeProtocol.from_dict({**spec["probe"]["protocol"], **changes})


def _run_protocol(spec: dict):
    """A run's probes: the checkpoint only (the baselines are probed once)."""
    return _protocol(spec, random_init_seeds=0, log_mel=False)


def _layer_table(model_probes: Any) -> list[dict]:
    return [
        {"layer": s.layer, "valid_cer": s.valid_error, "valid_loss": s.valid_loss}
        for s in model_probes.layers
    ]


def _last_update(run_dir: Path) -> int | None:
    state = run_dir / "checkpoints" / "last" / "training_state.pt"
    return (
        int(torch.load(state, map_location="cpu", weights_only=True)["update"]) if state.is_file() else None
    )


def _pretrain_and_probe(spec: dict, run: dict) -> dict:
    run_dir = Path(run["run_dir"])
    claim_run_dir(
        run_dir,
        "pretrain_compare_run.json",
        {"config_name": spec["config_name"], "overrides": run["overrides"]},
        f"the spec's run {run['id']}",
    )
    cfg = compose_config(spec["config_name"], [*run["overrides"], "trainer.progress=false"], kind="pretrain")
    model_cfg = build_model_config(cfg.model)
    last = _last_update(run_dir)
    if last != spec["updates"]:  # not trained to its end yet (a crash while probing skips this)
        train(cfg, run_dir)
        last = _last_update(run_dir)
    _need(
        last == spec["updates"],
        f"{run_dir}: its last checkpoint is not at update {spec['updates']}; the run stopped early",
    )
    t0 = time.time()
    report = run_probes(
        run_dir / "checkpoints" / "last",
        spec["corpus"],
        spec["probe"]["train"],
        spec["probe"]["valid"],
        _run_protocol(spec),
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    valid = valid_curve([r for r in records if r.get("kind") == "valid"])
    layers = _layer_table(report.models["checkpoint"])
    minutes, processes = running_minutes(records, spec["updates"])
    summary = {
        "format": FORMAT,
        **run,
        "spec_sha256": spec["sha256"],
        "resolved_config": config_container(cfg),
        "objective": model_cfg.objective,
        "architecture": _architecture(model_cfg),
        "updates": spec["updates"],
        "wall_minutes": minutes,
        "processes": processes,
        "code": run_code(run_dir),
        "hours_of_audio_seen": round(audio_seen_hours([r for r in records if r.get("kind") == "train"]), 3),
        "valid_curve": valid,
        "final_valid": valid[-1] if valid else None,
        "probe_protocol": report.protocol.to_dict(),
        "probe_data": report.data,
        "probe_layers": layers,
        "best_layer": min(layers, key=lambda r: r["valid_cer"]),
        "probe_minutes": round((time.time() - t0) / 60, 2),
        "finished": now_iso(),
    }
    path = _summary_path(spec, run["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, summary)
    return summary


def _architecture(model_cfg: Any) -> str:
    """A short fingerprint of the backbone a config builds (parameter names and shapes, pre/post-LN):
    a random-init baseline compares only with runs of the same architecture."""
    with torch.device("meta"):
        shapes = [(k, list(v.shape)) for k, v in Wav2Vec2Model(model_cfg).state_dict().items()]
    return hashlib.sha256(json.dumps([shapes, model_cfg.layer_norm_first]).encode()).hexdigest()[:12]


def _baseline(spec: dict) -> dict:
    """The first variant's architecture at random init (the protocol's seeds, averaged) and log-mel."""
    first = plan_runs(spec)[0]
    model_cfg = build_model_config(
        compose_config(spec["config_name"], first["overrides"], kind="pretrain").model
    )
    placeholder = Wav2Vec2Model(model_cfg)  # gives run_probes the architecture; itself not probed
    report = run_probes(
        placeholder,
        spec["corpus"],
        spec["probe"]["train"],
        spec["probe"]["valid"],
        _protocol(spec),
        include_model=False,
    )
    out = {
        "format": FORMAT,
        "spec_sha256": spec["sha256"],
        "architecture_of": first["variant"],
        "architecture": _architecture(model_cfg),
        "random_init_seeds": report.models["random_init"].seeds,
        "random_init": _layer_table(report.models["random_init"]),
        "log_mel": _layer_table(report.models["log_mel"]) if "log_mel" in report.models else None,
        "probe_protocol": report.protocol.to_dict(),
        "probe_data": report.data,
        "finished": now_iso(),
    }
    path = _summary_path(spec, BASELINE)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, out)
    return out


def run_compare(spec_path: str | Path, only: str | None = None, jobs: int = 1, log=print) -> list[str]:
    """Pretrain and probe the spec's runs without a summary (and the baselines), those whose id
    matches ``only``; returns the ids done."""
    spec = load_spec(spec_path)
    ids = [r["id"] for r in plan_runs(spec)] + [BASELINE]
    selected = [i for i in ids if only is None or fnmatch.fnmatchcase(i, only)]
    _need(bool(selected), f"--only {only!r} matches none of the run ids ({', '.join(ids)})")
    done = load_summaries(spec)
    todo = [i for i in selected if i not in done]
    log(
        f"[pretrain_compare] {len(selected) - len(todo)} of {len(selected)} selected already summarized; "
        f"{len(todo)} to do"
    )
    if todo:
        check_inputs(spec)
    if jobs <= 1:
        runs = {r["id"]: r for r in plan_runs(spec)}
        for i in todo:
            log(f"[pretrain_compare] {i}")
            _baseline(spec) if i == BASELINE else _pretrain_and_probe(spec, runs[i])
        return todo
    pieces = [
        (
            i,
            ["-m", "wav2vec2_lite.tools.pretrain_compare", "run", "--spec", str(spec_path), "--only", i],
            Path(spec["runs_dir"]) / i / "pretrain_compare.log",
        )
        for i in todo
    ]
    failed = run_jobs(
        pieces,
        folder=Path(spec["runs_dir"]) / "submitit",
        parallel=jobs,
        threads=spec["threads_per_run"],
        log=log,
        tag="pretrain_compare",
    )
    _need(not failed, f"run(s) {', '.join(failed)} failed; see pretrain_compare.log in their run folders")
    return todo


def status(spec: dict) -> str:
    done = load_summaries(spec)
    ids = [r["id"] for r in plan_runs(spec)] + [BASELINE]
    lines = [f"{spec['name']} ({spec['sha256'][:12]}): {sum(i in done for i in ids)} of {len(ids)} done"]
    lines += [f"  {i:<32} {'done' if i in done else 'left'}" for i in ids]
    return "\n".join(lines)


def write_report(spec: dict) -> Path:
    """``RESULTS/report.md``: per-run and per-variant tables, the baselines and the choice on valid."""
    done = load_summaries(spec)
    out = _results(spec) / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_markdown(spec, plan_runs(spec), done, done.get(BASELINE)), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pretrain_compare", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sr = sub.add_parser("run", help="pretrain and probe the runs without a summary (resumable)")
    sr.add_argument("--spec", type=Path, required=True)
    sr.add_argument("--only", help="fnmatch pattern on run ids, e.g. 'best_rq-*' or baseline")
    sr.add_argument("--jobs", type=int, default=1, help="runs side by side (threads_per_run threads each)")
    for name, text in (("status", "what is done and left"), ("report", "the markdown report")):
        sub.add_parser(name, help=text).add_argument("--spec", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.cmd == "run":
            _need(args.jobs >= 1, f"--jobs: an integer >= 1 (got {args.jobs})")
            run_compare(args.spec, args.only, args.jobs)
        elif args.cmd == "status":
            print(status(load_spec(args.spec)))
        else:
            print(f"wrote {write_report(load_spec(args.spec))}")
    except (LabelCurveError, ProbeError) as e:
        print(f"pretrain_compare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
