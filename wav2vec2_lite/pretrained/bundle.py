"""Turn a finished pretraining run into a shipped checkpoint folder with its provenance.

    python scripts/ship_pretrained.py runs/shipped/contrastive_s1 --name tiny-espeak-10h

The run's ``checkpoints/best`` (chosen on valid loss by the trainer), or its ``last``, is re-saved with
:func:`save_model` (so ``config.json`` records the weights' sha256) beside ``provenance.json``:
the exact commands (corpus and pretraining), code version, CPU kind, corpus facts, hours of
audio seen, the valid curve and the final metrics. ``checksums.json`` is written last and covers
all three files.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from wav2vec2_lite.pretrained.check import FRESH_VALID, fresh_valid_set, pretext_accuracy
from wav2vec2_lite.serialization import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    atomic_write_text,
    load_model,
    save_model,
    write_checksums,
)
from wav2vec2_lite.tools.hardware import cpu_kind
from wav2vec2_lite.train.checkpoint import load_checkpoint
from wav2vec2_lite.train.logging import read_metrics

__all__ = ["audio_seen_hours", "make_bundle", "valid_curve"]

VALID_KEYS = (
    "loss",
    "accuracy",
    "contrastive_loss",
    "diversity_loss",
    "code_perplexity",
    "prob_perplexity",
    "chance_loss",
)


def valid_curve(valid_records: list[dict]) -> list[dict]:
    """``[{"update", VALID_KEYS...}]`` from ``metrics.jsonl``'s valid records, one per update (the
    last: a run resumed from an earlier checkpoint validates that update again)."""
    by_update = {
        r["update"]: {"update": r["update"], **{k: r[k] for k in VALID_KEYS if k in r}} for r in valid_records
    }
    return [by_update[u] for u in sorted(by_update)]


def audio_seen_hours(train_records: list[dict]) -> float:
    """Hours of audio the run trained on: each ``train`` record's samples/s × its window's seconds."""
    total, prev = 0.0, 0
    for r in sorted(train_records, key=lambda r: r["update"]):
        updates = r["update"] - prev
        total += r["samples_per_s"] * r["step_time_s"] * updates
        prev = r["update"]
    return total / 16000 / 3600


def _corpus_facts(manifest_dir: Path, valid_subset: str) -> dict[str, Any]:
    info = json.loads((manifest_dir / "corpus.json").read_text())
    settings, splits = info["settings"], info["splits"]
    minutes = settings["minutes"]
    diversity = settings.get("diversity") or {}
    cmd = ["python", "scripts/synth_corpus.py", "--out", str(manifest_dir), "--seed", str(settings["seed"])]
    for split, m in minutes.items():
        cmd += [f"--{split.replace('_', '-')}-minutes", f"{m:g}"]
    if diversity:
        preset = diversity.get("preset") or (
            "diverse" if diversity.get("pools") == ["unlabeled"] else "diverse_train"
        )
        cmd += ["--diversity", preset]
    return {
        "path": str(manifest_dir),
        "seed": settings["seed"],
        "build_command": shlex.join(cmd),
        "synthesizer": info.get("synthesizer"),
        "diversity": diversity,
        "unlabeled": {k: splits["unlabeled"][k] for k in ("utterances", "minutes", "num_speakers")},
        "valid": {k: splits[valid_subset][k] for k in ("utterances", "minutes", "num_speakers")},
        "valid_speakers": splits[valid_subset]["speakers"],
        "pretraining_speakers_disjoint_from": [
            s
            for s in splits
            if s not in ("unlabeled",)
            and not set(splits[s]["speakers"]) & set(splits["unlabeled"]["speakers"])
        ],
    }


CHECK_TOLERANCE = 0.01  # absolute, on accuracy: same audio, same masks; only float rounding may differ


def fresh_valid_check(model: torch.nn.Module, corpus_seed: int, normalize_waves: bool) -> dict[str, Any]:
    """Accuracy on a freshly synthesized valid set (mask seed 0, re-measured by the tests) and its
    spread over mask seeds 0-4 (what a different draw of masks alone changes)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = fresh_valid_set(Path(tmp) / "valid", corpus_seed)
        runs = [pretext_accuracy(model, d, seed=s, normalize_waves=normalize_waves) for s in range(5)]
    accs = torch.tensor([r["accuracy"] for r in runs], dtype=torch.float64)
    return {
        "corpus_seed": corpus_seed,
        "valid_minutes": FRESH_VALID["valid_minutes"],
        "mask_seed": 0,
        "accuracy": runs[0]["accuracy"],
        "loss": runs[0]["loss"],
        "masked_frames": runs[0]["masked_frames"],
        "utterances": runs[0]["utterances"],
        "accuracy_over_mask_seeds_0_4": accs.tolist(),
        "accuracy_sd_over_mask_seeds": float(accs.std()),
        "tolerance": CHECK_TOLERANCE,
        "how": "wav2vec2_lite.pretrained.check: fresh_valid_set(dir, corpus_seed) then "
        "pretext_accuracy(model, dir, seed=0)",
    }


def _command(argv: list[str], stopped_at: int | None, best_update: int) -> list[str]:
    """The run's command; for a run stopped before its end, the same with ``trainer.max_updates``
    set to the shipped checkpoint's update (the lr and temperature schedules are unchanged)."""
    if stopped_at is None:
        return list(argv)
    if not any(a.startswith("schedule.total_updates=") for a in argv):
        raise ValueError(
            "a run stopped early can be shipped only if its command fixes schedule.total_updates"
        )
    return [a for a in argv if not a.startswith("trainer.max_updates=")] + [
        f"trainer.max_updates={best_update}"
    ]


def running_minutes(records: list[dict], upto_update: int) -> tuple[float | None, int]:
    """``(minutes, processes)``: how long the run's processes trained up to ``upto_update``,
    each from its start (its data checks, logged first) to its last training record; the time
    between a stopped process and the one that resumed it is left out, and so is a process that
    was stopped before its first training record."""
    pieces: list[list[float]] = []  # [start, end] per process
    for r in records:
        if r.get("kind") == "data" and r.get("event") == "data_validated":
            start = r["time"] - float(r.get("seconds", 0.0))
            # one process logs one such record per subset, all with the same start (to the ms)
            if not pieces or abs(start - pieces[-1][0]) > 1.0:
                pieces.append([start, start])
        elif r.get("kind") == "train" and r["update"] <= upto_update and pieces:
            pieces[-1][1] = r["time"]
    pieces = [p for p in pieces if p[1] > p[0]]
    return (round(sum(e - b for b, e in pieces) / 60, 1) if pieces else None), len(pieces)


def make_bundle(
    run_dir: str | Path,
    name: str,
    out_root: str | Path,
    *,
    description: str = "",
    code_commit: str | None = None,
    force: bool = False,
    checkpoint: str = "best",
    why: str = "",
) -> Path:
    """Write ``out_root/name`` (weights, config.json, provenance.json) from a finished pretraining run,
    from its ``checkpoints/best`` (the trainer's choice on valid loss) or ``last`` (``why`` says why,
    recorded in the provenance)."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run_dir, out = Path(run_dir), Path(out_root) / name
    best = run_dir / "checkpoints" / checkpoint
    if not (best / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{run_dir}: no checkpoints/{checkpoint}/{WEIGHTS_NAME} (is it a finished pretraining run?)"
        )
    if out.exists() and not force:
        raise FileExistsError(f"{out}: exists (pass force=True / --force to replace it)")
    run = json.loads((run_dir / "run.json").read_text())
    state = load_checkpoint(best)  # every file of the checkpoint verified
    model = load_model(best).eval()
    cfg_yaml = (run_dir / "config.yaml").read_text()
    cfg = yaml.safe_load(cfg_yaml)
    train = read_metrics(run_dir / "metrics.jsonl", "train")
    valid = read_metrics(run_dir / "metrics.jsonl", "valid")
    if not valid:
        raise ValueError(f"{run_dir}: no valid records in metrics.jsonl")
    curve = valid_curve(valid)
    best_update = int(state["update"])
    chosen = next((r for r in curve if r["update"] == best_update), None)
    seen = [r for r in train if r["update"] <= best_update]
    planned = int(cfg["trainer"]["max_updates"])
    stopped_at = train[-1]["update"] if train and train[-1]["update"] < planned else None
    minutes, processes = running_minutes(read_metrics(run_dir / "metrics.jsonl"), best_update)
    provenance = {
        "name": name,
        "description": description,
        "model_class": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "objective": model.config.objective,
        "command": shlex.join(["python", *_command(run["argv"], stopped_at, best_update)]),
        "stopped_early": None
        if stopped_at is None
        else {
            "schedule_updates": planned,
            "last_logged_update": stopped_at,
            "shipped_update": best_update,
            "note": f"the run was stopped at update ~{stopped_at} of its {planned}-update schedule; "
            f"`command` (trainer.max_updates={best_update}, schedule unchanged) "
            f"reproduces the shipped weights",
        },
        "code_version": run.get("code_version"),
        "code_commit": code_commit or str(run.get("code_version", "")).rpartition("+git.")[2] or None,
        "torch": run.get("torch"),
        "python": run.get("python"),
        "num_threads": run.get("num_threads"),
        "cpu": cpu_kind(),
        "seed": run.get("seed"),
        "start_time": run.get("start_time"),
        # what the shipped weights saw: the run up to the chosen checkpoint
        "wall_clock_minutes": minutes,  # summed over the processes: a stop and resume is not counted
        "processes": processes,
        "updates": best_update,
        "hours_of_audio_seen": round(audio_seen_hours(seen), 2),
        "corpus": _corpus_facts(Path(cfg["data"]["manifest_dir"]), cfg["data"]["valid_subset"]),
        "chosen_checkpoint": {
            "update": best_update,
            "rule": f"the trainer's best ({cfg['trainer'].get('best_metric') or 'loss'} "
            f"on {cfg['data']['valid_subset']})"
            if checkpoint == "best"
            else f"the last checkpoint: {why}".rstrip(": "),
        },
        "valid_curve": curve,
        "final_metrics": {"chosen": chosen, "last": curve[-1]},
        "train_loss_log": [{"update": r["update"], "loss": r["loss"]} for r in train],
        "config": cfg,
    }
    provenance["fresh_valid_check"] = fresh_valid_check(
        model, provenance["corpus"]["seed"], bool(cfg["data"].get("normalize", False))
    )
    out.mkdir(parents=True, exist_ok=True)
    save_model(
        model, out, metadata={"normalize": bool(cfg["data"].get("normalize", False)), "pretrained_name": name}
    )
    provenance["weights_sha256"] = json.loads((out / CONFIG_NAME).read_text())[
        "weights_sha256"
    ]  # save_model's
    atomic_write_text(out / "provenance.json", json.dumps(provenance, indent=1, sort_keys=False) + "\n")
    write_checksums(out, [WEIGHTS_NAME, CONFIG_NAME, "provenance.json"])  # last: it covers the three
    return out
