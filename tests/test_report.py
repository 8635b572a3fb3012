"""Run report: one self-contained HTML page with curves, health warnings, config, codebook usage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("matplotlib")

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForPreTraining  # noqa: E402
from wav2vec2_lite.data.manifest import write_manifest  # noqa: E402
from wav2vec2_lite.serialization import save_model  # noqa: E402
from wav2vec2_lite.tools.report import codebook_usage, write_report  # noqa: E402


def _run(tmp_path):
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(
        Wav2Vec2Config.tiny(
            num_layers=1,
            contrastive=dict(num_codes_per_group=16, codevector_dim=32, final_dim=32, num_negatives=10),
        )
    )
    save_model(model, run / "checkpoints" / "last")
    rows = [
        {
            "kind": "train",
            "update": u,
            "loss": 5.0 - u / 100,
            "contrastive_loss": 2.4 - u / 200,
            "accuracy": 0.1,
            "code_perplexity": 20.0,
            "gumbel_temp": 2.0,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "peak_rss_mb": 500.0,
            "step_time_s": 0.5,
        }
        for u in range(10, 110, 10)
    ]
    rows.append({"kind": "valid", "update": 100, "loss": 4.1, "accuracy": 0.2})
    rows.append(
        {
            "kind": "health",
            "update": 60,
            "symptom": "codebook_collapse",
            "message": "[health] collapse <b>",
            "numbers": {},
        }
    )
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run / "config.yaml").write_text("model:\n  contrastive:\n    num_negatives: 10\n")
    (run / "run.json").write_text(json.dumps({"seed": 3, "code_version": "0.1.0+git.abc"}))
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(data / "wav" / f"{i}.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
    write_manifest(data / "valid.tsv", data, [(f"wav/{i}.wav", 8000) for i in range(2)])
    return run, data, model


def test_report_page_has_every_section(tmp_path):
    run, data, _ = _run(tmp_path)
    page = write_report(run, manifest_dir=data).read_text()
    for section in ("Summary", "Health", "Curves", "Codebook usage on valid", "Resolved config"):
        assert f">{section}" in page
    assert "codebook_collapse" in page and "&lt;b&gt;" in page  # escaped, never raw HTML from logs
    assert page.count("data:image/png;base64,") == 2  # curves + codebook, embedded (self-contained)
    assert "0.1.0+git.abc" in page and "num_negatives: 10" in page


def test_codebook_usage_counts_every_frame(tmp_path):
    run, data, model = _run(tmp_path)
    counts = codebook_usage(run / "checkpoints" / "last", data)
    frames = 2 * int(model.feature_output_lengths(torch.tensor([8000]))[0])
    assert counts.shape == (2, 16) and counts.sum(-1).tolist() == [frames, frames]


def test_report_reads_audio_as_the_run_did_and_keeps_timestamps_out_of_the_summary(tmp_path):
    run, data, model = _run(tmp_path)
    rng = np.random.default_rng(1)
    sf.write(data / "wav" / "stereo44k.wav", rng.standard_normal((22050, 2)).astype(np.float32) * 0.1, 44100)
    write_manifest(data / "valid.tsv", data, [("wav/0.wav", 8000), ("wav/stereo44k.wav", 22050)])
    records = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(
        "\n".join(r.replace('{"kind": "train"', '{"kind": "train", "time": 1796055954.8') for r in records)
        + "\n"
    )
    (run / "config.yaml").write_text(
        "model:\n  contrastive:\n    num_negatives: 10\ndata:\n  mono: mix\n  resample: soxr\n"
    )
    page = write_report(run, manifest_dir=data).read_text()
    assert "Codebook usage on valid" in page and "final train time" not in page and "final train loss" in page
    expected = codebook_usage(run / "checkpoints" / "last", data, mono="mix", resample="soxr")
    assert int(expected.sum()) > 0
    with pytest.raises(ValueError, match="channels"):  # what the report did before: the trainer's defaults
        codebook_usage(run / "checkpoints" / "last", data)
