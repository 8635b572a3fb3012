"""One run of a plan, start to summary: pretraining (and its probes), probes of a checkpoint,
the baselines' probes, or a fine-tuning run (and its sealed test transcripts).

Every summary carries the run's config, its provenance (code version of every process that
trained it, torch, threads, CPU, wall clock) and the numbers the report needs; no weights. A
run folder that holds another config's run is refused rather than resumed; an interrupted run
resumes from its last checkpoint when run again.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from wav2vec2_lite.asr.evaluate import transcribe_split
from wav2vec2_lite.experiments.plan import BASELINE, compose_config, write_json
from wav2vec2_lite.experiments.spec import ExperimentError
from wav2vec2_lite.experiments.summaries import RUN_FORMAT, sealed_path, summary_path
from wav2vec2_lite.interop.sources import detect
from wav2vec2_lite.models import Wav2Vec2Model
from wav2vec2_lite.pretrained.bundle import audio_seen_hours, running_minutes, valid_curve
from wav2vec2_lite.probes.protocol import ProbeProtocol
from wav2vec2_lite.probes.run import load_backbone, run_probes
from wav2vec2_lite.serialization import atomic_write_bytes, file_sha256
from wav2vec2_lite.tools.hardware import cpu_kind
from wav2vec2_lite.train.config import build_model_config, config_container
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.tasks import resolve_pretrained
from wav2vec2_lite.train.trainer import train

__all__ = ["execute", "now_iso", "run_code", "claim_run_dir"]

MARKER = "experiment_run.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def claim_run_dir(run_dir: Path, recipe: dict, run_id: str) -> None:
    """Make ``run_dir`` the folder of ``recipe`` (recorded in ``experiment_run.json``): a folder
    holding another recipe's run, or a run without the record, is refused rather than resumed."""
    marker = run_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()) != recipe:
        raise ExperimentError(
            f"{run_dir}: trained with another config than the plan's run {run_id}; remove it"
        )
    if not marker.is_file() and (run_dir / "metrics.jsonl").is_file():
        raise ExperimentError(f"{run_dir}: holds a run without a {MARKER} record; remove it")
    write_json(marker, recipe)


def run_code(run_dir: Path | None) -> dict:
    """The code version of every process that trained the run (oldest first; torch and threads of
    the last, from its ``run.json``) and the CPU kind of this machine."""
    path = Path(run_dir) / "run.json" if run_dir else None
    from wav2vec2_lite import __version__  # a probing process's own version

    run = json.loads(path.read_text()) if path and path.is_file() else {}
    versions = (
        [p.get("code_version") for p in [*run.get("earlier_processes", []), run]] if run else [__version__]
    )
    return {
        "code_version": versions[-1],
        "code_versions": list(dict.fromkeys(versions)),
        "torch": run.get("torch", torch.__version__),
        "num_threads": run.get("num_threads", torch.get_num_threads()),
        "cpu": cpu_kind(),
    }


def _protocol(plan: dict, baseline: bool) -> ProbeProtocol:
    """The spec's probe protocol; a checkpoint's probes leave out the baselines (probed once)."""
    d = dict(plan["spec"]["probe"]["protocol"])
    if not baseline:
        d.update(random_init_seeds=0, log_mel=False)
    return ProbeProtocol.from_dict(d)


def _layers(model_probes) -> list[dict]:
    return [
        {"layer": s.layer, "valid_cer": s.valid_error, "valid_loss": s.valid_loss}
        for s in model_probes.layers
    ]


def _architecture(model: torch.nn.Module, layer_norm_first: bool) -> str:
    """A short fingerprint of a backbone (parameter names and shapes, pre/post-LN): a random-init
    baseline compares only with checkpoints of the same architecture."""
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    return hashlib.sha256(json.dumps([shapes, layer_norm_first]).encode()).hexdigest()[:12]


def _probe(plan: dict, checkpoint) -> dict:
    probe, t0 = plan["spec"]["probe"], time.time()
    report = run_probes(
        checkpoint, plan["spec"]["corpus"], probe["train"], probe["valid"], _protocol(plan, False)
    )
    layers = _layers(report.models["checkpoint"])
    return {
        "probe_protocol": report.protocol.to_dict(),
        "probe_data": report.data,
        "probe_layers": layers,
        "best_layer": min(layers, key=lambda r: r["valid_cer"]),
        "probe_minutes": round((time.time() - t0) / 60, 2),
    }


def _last_update(run_dir: Path) -> int | None:
    state = run_dir / "checkpoints" / "last" / "training_state.pt"
    return (
        int(torch.load(state, map_location="cpu", weights_only=True)["update"]) if state.is_file() else None
    )


def _pretrain(plan: dict, run: dict) -> dict:
    run_dir = Path(run["run_dir"])
    claim_run_dir(run_dir, {"config_name": run["config_name"], "overrides": run["overrides"]}, run["id"])
    cfg = compose_config(run["config_name"], [*run["overrides"], "trainer.progress=false"], "pretrain")
    model_cfg = build_model_config(cfg.model)
    if _last_update(run_dir) != run["updates"]:  # a crash while probing skips the training
        train(cfg, run_dir)
    if _last_update(run_dir) != run["updates"]:
        raise ExperimentError(
            f"{run_dir}: its last checkpoint is not at update {run['updates']}; the run stopped early"
        )
    records = read_metrics(run_dir / "metrics.jsonl")
    valid = valid_curve([r for r in records if r.get("kind") == "valid"])
    minutes, processes = running_minutes(records, run["updates"])
    with torch.device("meta"):
        arch = _architecture(Wav2Vec2Model(model_cfg), model_cfg.layer_norm_first)
    out = {
        "resolved_config": config_container(cfg),
        "objective": model_cfg.objective,
        "architecture": arch,
        "weights_sha256": file_sha256(run_dir / "checkpoints" / "last" / "model.safetensors"),
        "wall_minutes": minutes,
        "processes": processes,
        "code": run_code(run_dir),
        "hours_of_audio_seen": round(audio_seen_hours([r for r in records if r.get("kind") == "train"]), 3),
        "valid_curve": valid,
        "final_valid": valid[-1] if valid else None,
    }
    if run["probe"]:
        out |= _probe(plan, run_dir / "checkpoints" / "last")
    return out


def _weights_sha(path: str | None) -> str | None:
    if not path:
        return None
    src = resolve_pretrained(path)
    return file_sha256(src.path if src.path.is_file() else src.path / "model.safetensors")


def _checkpoint_probe(plan: dict, run: dict) -> dict:
    backbone, _, _ = load_backbone(run["checkpoint_path"])
    return {
        "checkpoint_path": run["checkpoint_path"],
        "weights_sha256": _weights_sha(run["checkpoint_path"]),
        "architecture": _architecture(backbone, backbone.config.layer_norm_first),
        "code": run_code(None),
        **_probe(plan, backbone),
    }


def _baseline(plan: dict, run: dict) -> dict:
    """The first probed variant's architecture at random init (the protocol's seeds, averaged) and
    the log-mel front end."""
    first = next(r for r in plan["runs"] if r["kind"] in ("pretrain", "probe"))
    if first["kind"] == "pretrain":  # the model gives run_probes the architecture; itself not probed
        cfg = compose_config(first["config_name"], first["overrides"], "pretrain")
        model = Wav2Vec2Model(build_model_config(cfg.model))
    else:
        model, _, _ = load_backbone(first["checkpoint_path"])
    probe = plan["spec"]["probe"]
    protocol = _protocol(plan, True)
    report = run_probes(
        model, plan["spec"]["corpus"], probe["train"], probe["valid"], protocol, include_model=False
    )
    return {
        "architecture_of": first["variant"],
        "architecture": _architecture(model, model.config.layer_norm_first),
        "random_init_seeds": report.models["random_init"].seeds,
        "random_init": _layers(report.models["random_init"]),
        "log_mel": _layers(report.models["log_mel"]) if "log_mel" in report.models else None,
        "probe_protocol": report.protocol.to_dict(),
        "probe_data": report.data,
        "code": run_code(None),
    }


def seal_test_transcripts(plan: dict, run: dict, run_dir: Path) -> Path:
    """The run's best checkpoint transcribes ``test`` (greedy); the hypotheses are written unscored,
    gzipped, to ``sealed/RUN.json.gz`` (committed with the summary), so that test can be scored once
    at the end even after the run folder is gone. Only ``score-test`` reads them."""
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


def _finetune(plan: dict, run: dict) -> dict:
    run_dir = Path(run["run_dir"])
    claim_run_dir(run_dir, {"config_name": run["config_name"], "overrides": run["overrides"]}, run["id"])
    cfg = compose_config(run["config_name"], [*run["overrides"], "trainer.progress=false"], "finetune")
    train(cfg, run_dir)
    seal_test_transcripts(plan, run, run_dir)
    valid = [r for r in read_metrics(run_dir / "metrics.jsonl", kind="valid") if "cer" in r]
    if not valid:
        raise ExperimentError(f"{run_dir}: the run logged no valid CER")
    curve = [
        {k: r.get(k) for k in ("update", "cer", "wer", "loss", "blank_only", "output_length_ratio")}
        for r in valid
    ]
    threshold = plan["spec"]["protocol"]["collapse_threshold"]
    return {
        "resolved_config": config_container(cfg),
        "pretrain_weights_sha256": _weights_sha(run["checkpoint_path"]),
        "valid_curve": curve,
        "final_valid": curve[-1],
        "best_valid": min(curve, key=lambda r: (r["cer"], r["wer"], r["update"])),
        "blank_collapse": curve[-1]["blank_only"] >= threshold,
        "code": run_code(run_dir),
    }


def execute(plan: dict, run_id: str) -> dict:
    """Do the plan's run ``run_id`` and write its summary; returns the summary."""
    run = next((r for r in plan["runs"] if r["id"] == run_id), None)
    if run is None:
        raise ExperimentError(f"{plan['path']}: no run {run_id!r}")
    lock_path = Path(plan["spec"]["runs_dir"]) / "locks" / f"{run_id}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:  # a second job for the same run (e.g. resubmitted while the first is queued) stops here
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExperimentError(
                f"run {run_id} is running in another process ({lock_path} is held)"
            ) from None
        if summary_path(plan, run_id).is_file():
            return json.loads(summary_path(plan, run_id).read_text())  # finished while this job waited
        return _execute(plan, run)


def _execute(plan: dict, run: dict) -> dict:
    t0 = time.time()
    do = {"pretrain": _pretrain, "probe": _checkpoint_probe, BASELINE: _baseline, "finetune": _finetune}
    result = do[run["kind"]](plan, run)
    summary = {
        "format": RUN_FORMAT,
        **run,
        "plan_sha256": plan["sha256"],
        **result,
        "wall_minutes_last_sitting": round((time.time() - t0) / 60, 3),
        "finished": now_iso(),
    }
    write_json(summary_path(plan, run["id"]), summary)
    return summary
