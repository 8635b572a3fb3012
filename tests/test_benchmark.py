"""Smoke test of the benchmark code path (tiny model, one iteration; no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from wav2vec2_lite import Wav2Vec2Config  # noqa: E402
from wav2vec2_lite.tools.benchmark_cli import main  # noqa: E402
from wav2vec2_lite.tools.benchmarking import BenchSpec, model_flops, render_markdown  # noqa: E402


def test_flop_formula_counts_the_known_parts():
    cfg = Wav2Vec2Config.base()
    fwd = model_flops(cfg, 1, 64000, "infer")
    # BASE: ~57 GFLOP per 4 s forward, about a third of it in the conv feature encoder
    assert 45e9 < fwd < 70e9
    assert model_flops(cfg, 2, 64000, "infer") == pytest.approx(2 * fwd)
    assert model_flops(cfg, 1, 64000, "pretrain") > 2.9 * fwd
    assert fwd < model_flops(cfg, 1, 64000, "finetune") < 3 * fwd  # frozen encoder: no conv backward


MICRO = dict(
    conv_dim=(16, 16, 16, 16, 16, 16, 16),
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    ffn_dim=64,
    pos_conv_kernel=8,
    pos_conv_groups=2,
    contrastive=dict(num_codes_per_group=8, codevector_dim=16, final_dim=16),
)


def _micro_benchmark(monkeypatch, out, *args: str) -> dict:
    """``scripts/benchmark.py`` on a micro model, one round, its JSON report."""
    real = BenchSpec.model_config
    monkeypatch.setattr(BenchSpec, "model_config", lambda self: real(self).replace(**MICRO))
    torch_threads = torch.get_num_threads()
    try:
        main(
            [
                "--config",
                "tiny",
                "--batch",
                "1",
                "--seconds",
                "0.5",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--out",
                str(out),
                *args,
            ]
        )
    finally:
        torch.set_num_threads(torch_threads)
    return json.loads(out.read_text())


def test_benchmark_runs_and_reports(tmp_path, monkeypatch):
    import wav2vec2_lite.tools.benchmarking as bench

    monkeypatch.setattr(bench, "run_probe", lambda spec, impl, **kw: bench.probe(spec, impl, **kw))
    out = tmp_path / "bench.json"
    report = _micro_benchmark(monkeypatch, out, "--dtype", "float32", "--scaling", "0.5", "--profile")
    assert [(r["task"], r["dtype"]) for r in report["rows"]] == [
        ("pretrain", "float32"),
        ("finetune", "float32"),
        ("infer", "float32"),
    ]
    for row in report["rows"]:
        assert set(row["median_s"]) == {"ours", "hf_eager", "hf_sdpa"}
        assert row["hf_best"] in ("hf_eager", "hf_sdpa")
        assert row["speedup"] == pytest.approx(row["median_s"][row["hf_best"]] / row["median_s"]["ours"])
        assert row["flops"] > 0 and 0 < row["utilisation"]["ours"]
        assert row["memory"]["ours"]["rss_peak_mb"] > 0 and "memory_ratio" in row
        assert set(row["profile"]["total_ms"]) == {"ours", row["hf_best"]}
        census = row["census"]["ours"]
        assert census["bf16_flop_share"] == 0.0 and sum(census["gflops"].values()) > 0
    assert report["scaling"][0]["seconds"] == 0.5 and report["scaling"][0]["speedup"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert (
        md == render_markdown(report) and "| pretrain | float32 |" in md and "casts ours (calls / MB)" in md
    )


def test_bf16_inference_row_meets_hf_with_bf16_weights_too(tmp_path, monkeypatch):
    """Our bf16 mode (bf16 weights, no autocast) against HF autocast and HF bf16 weights."""
    report = _micro_benchmark(
        monkeypatch, tmp_path / "bench.json", "--dtype", "bfloat16", "--tasks", "infer", "--no-memory"
    )
    (row,) = report["rows"]
    assert set(row["median_s"]) == {"ours", "hf_eager", "hf_sdpa", "hf_eager_bf16w", "hf_sdpa_bf16w"}
    ours, hf = row["census"]["ours"], row["census"][row["hf_best"]]
    assert ours["bf16_flop_share"] > 0 and hf["bf16_flop_share"] > 0  # this micro model is mostly conv FLOPs
    assert ours["casts_by_kind"].get("float32->bfloat16", 0) <= 6  # weights are bf16 already: few casts


def test_profile_names_the_same_kernels_for_both_and_renders(monkeypatch):
    from wav2vec2_lite.tools.benchmarking import profile_ops

    real = BenchSpec.model_config
    monkeypatch.setattr(BenchSpec, "model_config", lambda self: real(self).replace(**MICRO))
    threads = torch.get_num_threads()
    try:
        prof = profile_ops(
            BenchSpec(config="tiny", batch=1, seconds=0.5, task="pretrain", threads=1),
            ("ours", "hf_eager"),
            warmup=0,
            top=8,
        )
    finally:
        torch.set_num_threads(threads)
    assert len(prof["ops"]) == 8 and all(op.startswith("aten::") for op, _ in prof["ops"])
    ops = dict(prof["ops"])
    # both convolve forward and backward: the same aten kernels under the same names
    assert ops["aten::convolution_backward"]["ours"] > 0 and ops["aten::convolution_backward"]["hf_eager"] > 0
    ranked = [max(t.values()) for _, t in prof["ops"]]
    assert ranked == sorted(ranked, reverse=True)
    assert all(prof["total_ms"][i] >= max(t[i] for _, t in prof["ops"]) for i in ("ours", "hf_eager"))
    row = {
        "task": "pretrain",
        "dtype": "float32",
        "hf_best": "hf_eager",
        "speedup": 1.0,
        "speedup_vs_eager": 1.0,
        "speedup_vs_sdpa": 1.0,
        "utilisation": {"ours": 0.5, "hf_eager": 0.5},
        "profile": prof,
    }
    md = render_markdown(
        {
            "config": "tiny",
            "batch": 1,
            "seconds": 0.5,
            "device": "cpu",
            "threads": 1,
            "repeats": 1,
            "warmup": 0,
            "torch": torch.__version__,
            "peak_flops": {},
            "rows": [row],
        }
    )
    assert "| `aten::convolution_backward` |" in md and "| all ops |" in md


def test_compiled_rows_render_their_compile_time():
    row = {
        "task": "infer",
        "dtype": "float32",
        "compile": True,
        "speedup": 1.5,
        "speedup_vs_eager": 1.6,
        "speedup_vs_sdpa": 1.5,
        "hf_best": "hf_sdpa",
        "utilisation": {"ours": 0.5, "hf_sdpa": 0.3},
        "median_s": {"ours": 0.2, "hf_sdpa": 0.3},
        "first_call_s": {"ours": 12.2, "hf_sdpa": 30.3},
    }
    report = {
        "config": "base",
        "batch": 2,
        "seconds": 4.0,
        "device": "cpu",
        "threads": 2,
        "repeats": 3,
        "warmup": 1,
        "torch": "x",
        "peak_flops": {"float32": 3e11},
        "rows": [row],
    }
    md = render_markdown(report)
    assert "| infer | float32 compiled | **1.50×** |" in md
    assert "| infer | float32 | 12.0 | 30.0 |" in md


def test_an_unwritable_out_is_refused_before_measuring(tmp_path, monkeypatch):
    """--out is checked first (a missing folder is created): a run is never lost at the end."""
    from wav2vec2_lite.tools import benchmark_cli

    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda *a, **k: pytest.fail("measured"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit, match="not a writable file path"):
        benchmark_cli.main(["--out", str(tmp_path / "taken")])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="cannot create its folder"):
        benchmark_cli.main(["--out", str(tmp_path / "file" / "report.json")])
    monkeypatch.setattr(benchmark_cli, "run_benchmark", lambda *a, **k: {"rows": []})
    monkeypatch.setattr(benchmark_cli, "render_markdown", lambda report: "table")
    benchmark_cli.main(["--out", str(tmp_path / "new" / "report.json")])
    assert (tmp_path / "new" / "report.json").exists() and (
        tmp_path / "new" / "report.md"
    ).read_text() == "table"
