"""The label-curve protocol: pretrained vs from-scratch CTC fine-tuning at several label sizes.

A small spec (YAML or JSON) names the corpus, the label sizes (nested subsets), each arm's
budgets and lr trials, the pretrained checkpoints (one per pretraining seed) and the
fine-tuning seeds; ``plan`` validates it (equal budgets and equal trials for both arms, head-lr
multipliers offered to both, the protocol's minimum seeds) and writes every run's full config
into a plan file, to be committed before the first run. ``run`` trains the plan's runs (one at
a time in this process, or at most ``--jobs N`` at a time as submitit jobs), skipping every run whose
summary already exists, and writes one small JSON summary per finished run (config, seed,
valid curve, final and best valid metrics; no weights) under ``RESULTS/runs/``, and the best
checkpoint's test transcripts, unscored, under ``RESULTS/sealed/`` (so that test can be scored at
the end without the run folders, which machines do not keep). Choosing on
valid, scoring test once and the report live in :mod:`wav2vec2_lite.tools.label_curve_report`.

    python scripts/label_curve.py plan --spec SPEC --out PLAN
    python scripts/label_curve.py run --plan PLAN [--only PATTERN] [--jobs N]
    python scripts/label_curve.py status --plan PLAN
    python scripts/label_curve.py score-test --plan PLAN      # once; a second call is refused
    python scripts/label_curve.py report --plan PLAN

The protocol and the spec's keys: docs/results/label_curve.md.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from wav2vec2_lite.asr.evaluate import transcribe_split
from wav2vec2_lite.cli import CONFIG_DIR
from wav2vec2_lite.data.manifest import read_manifest, text_to_ltr, write_labels, write_manifest
from wav2vec2_lite.experiments.jobs import run_jobs
from wav2vec2_lite.interop.sources import detect
from wav2vec2_lite.serialization import atomic_write_bytes, atomic_write_text, file_sha256
from wav2vec2_lite.tools.hardware import cpu_kind
from wav2vec2_lite.tools.label_curve_spec import (
    ARMS,
    PLAN_FORMAT,
    RUN_FORMAT,
    TOPLINE,
    TOPLINE_SUBSET,
    LabelCurveError,
    load_mapping,
    validate_spec,
)
from wav2vec2_lite.train.config import config_container, register_configs, to_run_config
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.tasks import resolve_pretrained
from wav2vec2_lite.train.trainer import train

__all__ = [
    "LabelCurveError",
    "make_plan",
    "load_plan",
    "write_plan",
    "run_plan",
    "plan_status",
    "summary_path",
    "load_summaries",
    "write_transcribed_unlabeled",
    "compose_config",
    "test_marker",
    "write_json",
    "now_iso",
    "seal_test_transcripts",
    "read_sealed",
    "sealed_path",
    "claim_run_dir",
    "run_code",
]


def _run_entry(
    spec: dict,
    arm: str,
    subset: str,
    minutes: float,
    updates: int,
    seed: int,
    trial_index: int,
    trial: dict,
    overrides: list[str],
    ckpt: dict | None,
) -> dict:
    pre = ckpt["name"] if ckpt else "none"
    run_id = f"{arm}-{subset}-{pre}-s{seed}-t{trial_index}"
    full = [
        *spec["common_overrides"],
        *overrides,
        f"data.manifest_dir={spec['corpus']}",
        f"data.train_subset={subset}",
        f"optim.lr={trial['lr']:g}",
        *(f"+optim.lr_scale.{k}={v:g}" for k, v in trial["lr_scale"].items()),
        f"trainer.seed={seed}",
        f"trainer.max_updates={updates}",
        f"trainer.num_threads={spec['threads_per_run']}",
    ]
    if ckpt:
        full.append(f"finetune.pretrained={ckpt['path']}")
    return {
        "id": run_id,
        "arm": arm,
        "subset": subset,
        "minutes": minutes,
        "pretrain": ckpt["name"] if ckpt else None,
        "pretrain_path": ckpt["path"] if ckpt else None,
        "seed": seed,
        "trial": trial_index,
        "lr": trial["lr"],
        "lr_scale": trial["lr_scale"],
        "updates": updates,
        "config_name": spec["config_name"],
        "overrides": full,
        "run_dir": str(Path(spec["runs_dir"]) / run_id),
    }


def compose_config(config_name: str, overrides: list[str], kind: str = "finetune"):
    """The typed run config (``kind``: finetune or pretrain) Hydra composes from the package's
    configs and ``overrides``."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=config_name, overrides=overrides)
    return to_run_config(cfg, kind)


def make_plan(spec: dict, check_configs: bool = True) -> dict:
    """Every run of the experiment from a (validated) spec; with ``check_configs`` each run's
    config is composed and checked now, so a typo fails before the first run, not hours in."""
    spec = validate_spec(spec)
    runs = []
    for size in spec["sizes"]:
        subset, minutes = size["subset"], size["minutes"]
        for arm in ARMS:
            a = spec["arms"][arm]
            ckpts = (
                [c for c in a.get("checkpoints", []) if subset in c["sizes"]]
                if arm == "pretrained"
                else [None]
            )
            for ckpt in ckpts:
                for seed in spec["seeds"]:
                    for i, trial in enumerate(a["trials"]):
                        runs.append(
                            _run_entry(
                                spec,
                                arm,
                                subset,
                                minutes,
                                a["updates"][subset],
                                seed,
                                i,
                                trial,
                                a["overrides"],
                                ckpt,
                            )
                        )
    if spec["topline"]:
        top = spec["topline"]
        for seed in top["seeds"]:
            for i, trial in enumerate(spec["arms"]["scratch"]["trials"]):
                runs.append(
                    _run_entry(
                        spec,
                        TOPLINE,
                        TOPLINE_SUBSET,
                        top["minutes"],
                        top["updates"],
                        seed,
                        i,
                        trial,
                        top["overrides"],
                        None,
                    )
                )
    if check_configs:
        for run in runs:
            try:
                cfg = compose_config(run["config_name"], run["overrides"])
            except Exception as e:  # Hydra/config errors are the spec's
                raise LabelCurveError(
                    f"run {run['id']}: its config does not compose: {str(e).splitlines()[0]}"
                ) from e
            if cfg.trainer.best_metric != "cer":
                raise LabelCurveError(
                    f"run {run['id']}: trainer.best_metric is {cfg.trainer.best_metric!r}; the "
                    f"protocol chooses checkpoints and trials by valid CER (set trainer.best_metric=cer)"
                )
            if not cfg.data.valid_subset:
                raise LabelCurveError(
                    f"run {run['id']}: data.valid_subset is empty; trials are chosen on valid"
                )
    body = {"format": PLAN_FORMAT, "spec": spec, "runs": runs}
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return body


def write_plan(plan: dict, out: Path, force: bool = False) -> Path:
    out = Path(out)
    if out.exists() and not force:
        old = json.loads(out.read_text()) if out.suffix == ".json" else None
        if not old or old.get("sha256") != plan["sha256"]:
            raise LabelCurveError(
                f"{out} exists and holds another plan; a committed plan is the protocol's record "
                f"(pass --force to replace it before any run, or another --out)"
            )
        return out  # the same plan: the committed file stays as it is
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {**plan, "created": now_iso()})
    return out


def load_plan(path: Path) -> dict:
    plan = load_mapping(Path(path))
    if plan.get("format") != PLAN_FORMAT or "runs" not in plan:
        raise LabelCurveError(
            f"{path}: not a label-curve plan (format {plan.get('format')!r}); make one with `plan`"
        )
    return plan


# ----------------------------------------------------------------------------- runs
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written all at once (serialization.atomic_write_text)."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def summary_path(plan: dict, run_id: str) -> Path:
    return Path(plan["spec"]["results_dir"]) / "runs" / f"{run_id}.json"


def load_summaries(plan: dict) -> dict[str, dict]:
    """The summaries of the plan's finished runs, by id; one made under another config is an error."""
    out = {}
    for run in plan["runs"]:
        path = summary_path(plan, run["id"])
        if path.is_file():
            summary = json.loads(path.read_text())
            if (
                summary.get("overrides") != run["overrides"]
                or summary.get("config_name") != run["config_name"]
            ):
                raise LabelCurveError(
                    f"{path}: made with another config than the plan's run {run['id']} (was the plan "
                    f"changed after runs were made?)"
                )
            out[run["id"]] = summary
    return out


def write_transcribed_unlabeled(corpus: Path, name: str = TOPLINE_SUBSET) -> Path:
    """``NAME.{tsv,ltr,wrd}``: the unlabeled pool with the transcripts the corpus synthesized it
    from (``utterances.jsonl``), for the supervised topline. Same rows and order as unlabeled.tsv."""
    corpus = Path(corpus)
    index, manifest = corpus / "utterances.jsonl", corpus / "unlabeled.tsv"
    if not index.is_file() or not manifest.is_file():
        raise LabelCurveError(
            f"{corpus}: the topline needs utterances.jsonl and unlabeled.tsv (a synthesized corpus)"
        )
    text = {}
    for line in index.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        text[rec["path"]] = rec["transcript"]
    m = read_manifest(manifest)
    missing = [p for p in m.paths if p not in text]
    if missing:
        raise LabelCurveError(
            f"{index}: no transcript for {len(missing)} unlabeled file(s), e.g. {missing[0]}"
        )
    write_manifest(corpus / f"{name}.tsv", m.root, list(zip(m.paths, m.sizes)))
    write_labels(corpus / f"{name}.wrd", [text[p] for p in m.paths])
    write_labels(corpus / f"{name}.ltr", [text_to_ltr(text[p]) for p in m.paths])
    return corpus / f"{name}.tsv"


def _weights_sha(run: dict) -> str | None:
    """sha256 of the pretrained weights a run started from (a checkpoint replaced mid-experiment shows)."""
    if not run["pretrain_path"]:
        return None
    src = resolve_pretrained(run["pretrain_path"])
    return file_sha256(src.path if src.path.is_file() else src.path / "model.safetensors")


def claim_run_dir(run_dir: Path, marker_name: str, recipe: dict, whose: str) -> None:
    """Make ``run_dir`` the folder of ``recipe`` (recorded in ``marker_name``): a folder holding
    another recipe's run, or a run without the record, is refused rather than resumed."""
    marker = run_dir / marker_name
    if marker.is_file() and json.loads(marker.read_text()) != recipe:
        raise LabelCurveError(f"{run_dir}: trained with another config than {whose}; remove it")
    if not marker.is_file() and (run_dir / "metrics.jsonl").is_file():
        raise LabelCurveError(f"{run_dir}: holds a run without a {marker_name} record; remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(marker, recipe)


def run_code(run_dir: Path) -> dict:
    """What a run folder's ``run.json`` recorded (the code version of every process that trained
    it, oldest first; torch and threads of the last), and the CPU kind of this machine (where a
    runner's runs train), for the committed summary."""
    path = run_dir / "run.json"
    run = json.loads(path.read_text()) if path.is_file() else {}
    versions = [p.get("code_version") for p in [*run.get("earlier_processes", []), run]]
    return {
        "code_version": run.get("code_version"),
        "code_versions": list(dict.fromkeys(versions)),
        "torch": run.get("torch"),
        "num_threads": run.get("num_threads"),
        "cpu": cpu_kind(),
    }


def _train_one(plan: dict, run: dict) -> dict:
    run_dir = Path(run["run_dir"])
    claim_run_dir(
        run_dir,
        "label_curve_run.json",
        {"config_name": run["config_name"], "overrides": run["overrides"]},
        f"the plan's run {run['id']}",
    )
    if run["arm"] == TOPLINE and not (Path(plan["spec"]["corpus"]) / f"{TOPLINE_SUBSET}.tsv").is_file():
        write_transcribed_unlabeled(Path(plan["spec"]["corpus"]))
    cfg = compose_config(run["config_name"], [*run["overrides"], "trainer.progress=false"])
    t0 = time.time()
    train(cfg, run_dir)
    seal_test_transcripts(plan, run, run_dir)
    valid = [r for r in read_metrics(run_dir / "metrics.jsonl", kind="valid") if "cer" in r]
    if not valid:
        raise LabelCurveError(f"{run_dir}: the run logged no valid CER")
    curve = [
        {k: r.get(k) for k in ("update", "cer", "wer", "loss", "blank_only", "output_length_ratio")}
        for r in valid
    ]
    best = min(curve, key=lambda r: (r["cer"], r["wer"], r["update"]))
    threshold = plan["spec"]["protocol"]["collapse_threshold"]
    summary = {
        "format": RUN_FORMAT,
        **{k: v for k, v in run.items()},
        "plan_sha256": plan["sha256"],
        "resolved_config": config_container(cfg),
        "pretrain_weights_sha256": _weights_sha(run),
        "valid_curve": curve,
        "final_valid": curve[-1],
        "best_valid": best,
        "blank_collapse": curve[-1]["blank_only"] >= threshold,
        "code": run_code(run_dir),
        "wall_minutes_last_sitting": round((time.time() - t0) / 60, 3),
        "finished": now_iso(),
    }
    path = summary_path(plan, run["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, summary)
    return summary


def sealed_path(plan: dict, run_id: str) -> Path:
    return Path(plan["spec"]["results_dir"]) / "sealed" / f"{run_id}.json.gz"


def seal_test_transcripts(plan: dict, run: dict, run_dir: Path) -> Path:
    """The run's best checkpoint transcribes ``test`` (greedy) and the hypotheses are written,
    unscored and gzipped, to ``RESULTS/sealed/RUN.json.gz`` (committed with the summary), so that
    test can be scored once at the end even if the run's folder is gone by then. Nothing reads
    them but ``score-test``, and only for the runs chosen on valid."""
    folder = detect(run_dir).path
    paths, hyps, failed = transcribe_split(folder, plan["spec"]["corpus"], "test")
    record = {
        "format": 1,
        "run": run["id"],
        "checkpoint": folder.name,
        "weights_sha256": file_sha256(folder / "model.safetensors"),
        "paths": paths,
        "hypotheses": hyps,
        "failed": failed,
    }
    out = sealed_path(plan, run["id"])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, gzip.compress(json.dumps(record).encode(), mtime=0))
    return out


def read_sealed(plan: dict, run_id: str) -> dict | None:
    """The sealed test transcripts of a run (for ``score-test`` only), or None."""
    path = sealed_path(plan, run_id)
    return json.loads(gzip.decompress(path.read_bytes())) if path.is_file() else None


def test_marker(plan: dict) -> Path:
    return Path(plan["spec"]["results_dir"]) / "test_scores.json"


def run_plan(plan_path: Path, only: str | None = None, jobs: int = 1, log=print) -> list[str]:
    """Train the plan's runs that have no summary yet (those matching ``only``, an fnmatch pattern
    on run ids); ``jobs`` > 1 runs that many subprocesses side by side. Returns the ids trained."""
    plan = load_plan(plan_path)
    if test_marker(plan).is_file():
        raise LabelCurveError(
            f"{test_marker(plan)} exists: test was scored already, and runs added now could change "
            f"the choices it was scored on"
        )
    runs = [r for r in plan["runs"] if only is None or fnmatch.fnmatchcase(r["id"], only)]
    if not runs:
        raise LabelCurveError(
            f"--only {only!r} matches none of the plan's {len(plan['runs'])} run ids "
            f"(e.g. {plan['runs'][0]['id']})"
        )
    done = load_summaries(plan)
    todo = [r for r in runs if r["id"] not in done]
    corpus = Path(plan["spec"]["corpus"])
    if todo and not (corpus / "valid.tsv").is_file():
        raise LabelCurveError(f"{corpus}: no valid.tsv; build the corpus first (docs/results/label_curve.md)")
    absent = sorted(
        {r["pretrain_path"] for r in todo if r["pretrain_path"] and not Path(r["pretrain_path"]).exists()}
    )
    if absent:
        raise LabelCurveError(
            f"pretrained checkpoint(s) not found: {', '.join(absent)}; pretrain them first "
            f"(docs/results/label_curve.md)"
        )
    log(
        f"[label_curve] {len(runs) - len(todo)} of {len(runs)} selected runs already summarized; "
        f"{len(todo)} to train"
    )
    if jobs <= 1:
        for r in todo:
            log(f"[label_curve] training {r['id']}")
            _train_one(plan, r)
        return [r["id"] for r in todo]
    _as_jobs(plan_path, plan, todo, jobs, log)
    return [r["id"] for r in todo]


def _as_jobs(plan_path: Path, plan: dict, todo: list[dict], jobs: int, log) -> None:
    pieces = [
        (
            r["id"],
            [
                "-m",
                "wav2vec2_lite.tools.label_curve_cli",
                "run",
                "--plan",
                str(plan_path),
                "--only",
                r["id"],
                "--jobs",
                "1",
            ],
            Path(r["run_dir"]) / "label_curve.log",
        )
        for r in todo
    ]
    failed = run_jobs(
        pieces,
        folder=Path(plan_path).parent / "submitit",
        parallel=jobs,
        threads=plan["spec"]["threads_per_run"],
        log=log,
        tag="label_curve",
    )
    if failed:
        raise LabelCurveError(f"run(s) {', '.join(failed)} failed; see label_curve.log in their run folders")


def plan_status(plan: dict) -> str:
    """Done / left per arm and size, and whether test was scored."""
    done = load_summaries(plan)
    cells: dict[tuple[str, str], list[int]] = {}
    for r in plan["runs"]:
        c = cells.setdefault((r["arm"], r["subset"]), [0, 0])
        c[0 if r["id"] in done else 1] += 1
    lines = [
        f"plan {plan['spec']['name']} ({plan['sha256'][:12]}): {len(done)} of {len(plan['runs'])} runs done"
    ]
    lines += [
        f"  {arm:<10} {subset:<16} done {d:>3}  left {left:>3}" for (arm, subset), (d, left) in cells.items()
    ]
    left = [r["id"] for r in plan["runs"] if r["id"] not in done]
    if left:
        lines.append(f"next: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    marker = test_marker(plan)
    lines.append(f"test: scored ({marker})" if marker.is_file() else "test: not scored yet")
    return "\n".join(lines)
