"""One self-contained HTML page per run: curves, health warnings, config, codebook usage."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.audio import load_audio
from wav2vec2_lite.data.audio import normalize as normalize_wave
from wav2vec2_lite.data.manifest import read_manifest
from wav2vec2_lite.models import Wav2Vec2ForPreTraining
from wav2vec2_lite.objectives.registry import objective_class
from wav2vec2_lite.serialization import CONFIG_NAME, atomic_write_text, load_model, read_config
from wav2vec2_lite.tools.plots import (
    FINETUNE_PANELS,
    PRETRAIN_PANELS,
    plot_codebook_usage,
    plot_curves,
)
from wav2vec2_lite.train.logging import read_metrics

__all__ = ["codebook_usage", "write_report", "GENERATOR"]

GENERATOR = '<meta name="generator" content="w2v2-report">'
"""In the head of every page: how ``w2v2-report`` recognises a page it wrote (and may replace)."""

EXTRA_PANELS = [("peak RSS (MiB)", "train", "peak_rss_mb"), ("step time (s)", "train", "step_time_s")]

_STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto}table{border-collapse:collapse}\n"
    "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}"
    "pre{background:#f6f6f6;padding:1em}\n"
    "img{max-width:100%}"
)
"""The page's CSS, between ``<style>`` and ``</style>``."""


def chance_lines(config: Wav2Vec2Config) -> dict[str, float]:
    """The chance level of a pretraining model's main loss, keyed by that loss (a line on its plot)."""
    objective = objective_class(config.objective)
    return {objective.main_loss: objective.health_reference(config)["chance_loss"]}


def _png_tag(write_png) -> str:
    buf = io.BytesIO()
    write_png(buf)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


@torch.no_grad()
def codebook_usage(
    model_dir: str | Path,
    manifest_dir: str | Path,
    split: str = "valid",
    limit: int = 200,
    *,
    mono: str = "error",
    resample: str = "error",
    normalize: bool | None = None,
) -> torch.Tensor:
    """How often each codebook entry is picked (argmax, eval) on a split: (G, V) counts.

    ``mono``, ``resample``, ``normalize``: the audio settings of the run (``data.*``); ``normalize``
    None means the run's default (LayerNorm encoders normalise)."""
    model = load_model(model_dir)
    if not isinstance(model, Wav2Vec2ForPreTraining):
        raise TypeError(
            f"{model_dir}: codebook usage needs a pretraining model, found {type(model).__name__}"
        )
    cfg = model.config
    if cfg.objective != "contrastive":
        raise TypeError(
            f"{model_dir}: codebook usage is that of the contrastive objective's learned codebook; "
            f"this model's objective is {cfg.objective!r}, whose valid code usage is logged as "
            f"code_perplexity in metrics.jsonl"
        )
    if cfg.contrastive.quantize_targets:
        quantizer = model.quantizer
    elif cfg.contrastive.quantize_input:  # continuous targets: the input quantizer's codebook
        quantizer = model.wav2vec2.feature_projection.quantizer
    else:
        raise TypeError(f"{model_dir}: no codebook (continuous inputs and continuous targets)")
    model.eval()
    counts = torch.zeros(
        cfg.contrastive.num_code_groups, cfg.contrastive.num_codes_per_group, dtype=torch.long
    )
    manifest = read_manifest(Path(manifest_dir) / f"{split}.tsv")
    for rel in manifest.paths[:limit]:
        wave = load_audio(manifest.root / rel, mono=mono, resample=resample)
        if normalize if normalize is not None else cfg.feat_extract_norm == "layer":
            wave = normalize_wave(wave)
        out = model.wav2vec2(torch.from_numpy(wave)[None])
        codes = quantizer(out.extract_features[0]).codes  # (T, G); both quantizers see the normed features
        counts += quantizer.codebook_usage(codes)
    return counts


def _has_codebook(cfg: Wav2Vec2Config) -> bool:
    """A learned codebook to show: the contrastive objective's, unless inputs and targets are continuous."""
    c = cfg.contrastive
    return cfg.objective == "contrastive" and (c.quantize_targets or c.quantize_input)


_NOT_METRICS = {"time"}  # numbers in metrics.jsonl records that are not measurements of the run


def _run_data_settings(run_dir: Path) -> dict[str, Any]:
    """The ``data`` section of the run's ``config.yaml`` (how it read audio), ``{}`` without one."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    cfg = yaml.safe_load(path.read_text()) or {}
    return dict(cfg.get("data") or {})


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; ValueError naming the file otherwise."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); repair or delete it") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a JSON object; repair or delete it")
    return record


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    manifest_dir: str | Path | None = None,
    split: str = "valid",
    notes: list[str] | None = None,
) -> Path:
    """Write ``RUN/report.html``. With ``manifest_dir`` (pretraining runs) it adds codebook usage
    on ``split``. A last ``metrics.jsonl`` line cut short (a killed run) is left out and described in
    ``notes`` when a list is given; any other unreadable record is an error naming ``file:line``."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run folder?)")
    records = read_metrics(path, torn=notes)
    info = _read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    config_text = (
        (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else "(no config.yaml)"
    )
    pretrain = any("contrastive_loss" in r for r in records)
    panels = (PRETRAIN_PANELS if pretrain else FINETUNE_PANELS) + EXTRA_PANELS
    hlines = None
    if pretrain:
        last = run_dir / "checkpoints" / "last"
        if (last / CONFIG_NAME).is_file():
            hlines = chance_lines(read_config(last))
    curves = _png_tag(lambda f: plot_curves({run_dir.name: records}, panels, f, hlines=hlines))

    health = [r for r in records if r.get("kind") == "health"]
    health_html = (
        _table([[h["update"], h["symptom"], h["message"]] for h in health], ["update", "symptom", "message"])
        if health
        else "<p>No health warning was raised.</p>"
    )
    last = {k: [r for r in records if r.get("kind") == k][-1:] for k in ("train", "valid")}
    summary_rows = [[k, v] for k, v in info.items() if not isinstance(v, (dict, list))]
    for kind, recs in last.items():
        for key, value in recs[0].items() if recs else []:
            if isinstance(value, float) and key not in _NOT_METRICS:
                summary_rows.append([f"final {kind} {key}", f"{value:.5g}"])
    codebook_html = ""
    model_dir = run_dir / "checkpoints" / ("best" if (run_dir / "checkpoints" / "best").is_dir() else "last")
    if pretrain and manifest_dir is not None and _has_codebook(read_config(model_dir)):
        data = _run_data_settings(run_dir)
        counts = codebook_usage(
            model_dir,
            manifest_dir,
            split,
            mono=data.get("mono") or "error",
            resample=data.get("resample") or "error",
            normalize=data.get("normalize"),
        )
        used = (counts > 0).sum(-1).tolist()
        codebook_html = (
            f"<h2>Codebook usage on {html.escape(split)}</h2><p>entries used per group: {used} of "
            f"{counts.shape[1]}</p>" + _png_tag(lambda f: plot_codebook_usage(counts, f))
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8">{GENERATOR}
<title>{html.escape(run_dir.name)} report</title>
<style>{_STYLE}</style></head><body>
<h1>Run report: {html.escape(str(run_dir))}</h1>
<h2>Summary</h2>{_table(summary_rows, ["what", "value"])}
<h2>Health</h2>{health_html}
<h2>Curves</h2>{curves}
{codebook_html}
<h2>Resolved config</h2><pre>{html.escape(config_text)}</pre>
</body></html>"""
    return atomic_write_text(Path(out) if out else run_dir / "report.html", page)
