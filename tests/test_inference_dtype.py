"""bf16 inference (``--dtype bfloat16``): what is cast, and how close it stays to float32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _bf16_convs import rounded_bf16_convs
from torch import nn

from wav2vec2_lite import Wav2Vec2ForPreTraining
from wav2vec2_lite.asr.evaluate import evaluate_split
from wav2vec2_lite.asr.transcribe import Transcriber
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.extract import Extractor
from wav2vec2_lite.inference_dtype import cast_for_inference, inference_dtype_of, parse_inference_dtype
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import Trainer

from _helpers import MICRO_MODEL, deep_merge
from _tolerance import (
    assert_all_float32_close,
    assert_float32_close,
    bf16_rounding,
    float32_excess,
    nudged,
    relative_error,
    worst_float32_excess,
)

MICRO = MICRO_MODEL


def _with_bf16_convs(fn):
    """``fn`` with the feature encoder's bf16 storage emulated too, on a CPU whose speed plan runs
    it in bf16 (``low_precision_speed``; plain autocast runs it float32): a fresh draw per call."""
    from wav2vec2_lite.low_precision_speed import choose_plan

    if not choose_plan("cpu", torch.bfloat16).unfolded_convs:
        return fn
    draws = iter(range(1000, 2000))

    def rounded():
        with rounded_bf16_convs(torch.Generator().manual_seed(next(draws))):
            return fn()

    return rounded


FIRST_CONV = "wav2vec2.feature_encoder.conv_layers.0.conv.weight"  # where tests inject a 1e-3 error


def test_parse_inference_dtype_spellings_and_errors():
    assert (
        parse_inference_dtype("bf16") is torch.bfloat16 and parse_inference_dtype("float32") is torch.float32
    )
    assert parse_inference_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        parse_inference_dtype("float16")


def test_unfolded_conv1d_is_the_convolution():
    from wav2vec2_lite.low_precision_speed import unfolded_conv1d

    torch.manual_seed(0)
    for c_in, k, stride in ((1, 10, 5), (16, 3, 2), (16, 2, 2)):
        x, w, b = torch.randn(2, c_in, 301), torch.randn(8, c_in, k), torch.randn(8)
        ref = torch.nn.functional.conv1d(x, w, b, stride=stride)
        exact = torch.nn.functional.conv1d(x.double(), w.double(), b.double(), stride=stride)
        assert_float32_close(unfolded_conv1d(x, w, b, stride), ref, exact, f"{c_in}x{k}/{stride}")
        assert float32_excess(unfolded_conv1d(x, w * (1 + 1e-3 * (w == w.max())), b, stride), ref, exact) > 1
        # bf16: as close as exact bf16 products with float32 sums (inputs and output rounded) get
        low = unfolded_conv1d(x.bfloat16(), w.bfloat16(), b.bfloat16(), stride)
        rounded = torch.nn.functional.conv1d(
            *(t.bfloat16().double() for t in (x, w, b)), stride=stride
        ).bfloat16()
        assert low.dtype == torch.bfloat16 and relative_error(low, ref) < 2 * relative_error(rounded, ref)


def test_cast_keeps_the_positional_conv_norms_and_the_objective_float32():
    from wav2vec2_lite.low_precision_speed import choose_plan

    unfolded = choose_plan("cpu", torch.bfloat16).unfolded_convs  # bf16 encoder convs only then
    torch.manual_seed(0)
    model = cast_for_inference(
        Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**{k: v for k, v in MICRO.items() if k != "preset"})),
        "bf16",
    )
    assert not model.training and inference_dtype_of(model) == "bfloat16"
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        in_backbone = name.startswith("wav2vec2.")
        encoder_conv = name.startswith("wav2vec2.feature_encoder.") and isinstance(module, nn.Conv1d)
        want = (
            torch.bfloat16
            if in_backbone and (isinstance(module, nn.Linear) or (encoder_conv and unfolded))
            else torch.float32
        )
        assert {p.dtype for p in own} == {want}, name
    assert inference_dtype_of(cast_for_inference(model, "float32")) == "float32"
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_positional_conv_with_32_channels_per_group_runs_bf16_close_to_float32():
    """From 32 input channels per group (BASE has 48) oneDNN's bf16 conv is right, and 4x faster
    than float32: a bf16 inference model runs it in bf16 (parameters, weight norm included)."""
    torch.manual_seed(0)
    cfg = Wav2Vec2Config.tiny(**{k: v for k, v in MICRO.items() if k != "preset"} | {"pos_conv_groups": 2})
    model = Wav2Vec2ForPreTraining(cfg).eval()
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        ref = model.wav2vec2(wave).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):  # exact bf16 kernels: bf16 rounding alone
            rounding = bf16_rounding(_with_bf16_convs(lambda: model.wav2vec2(wave).last_hidden_state), ref)
        cast_for_inference(model, "bf16")
        out = model.wav2vec2(wave).last_hidden_state
    assert {p.dtype for p in model.wav2vec2.context.pos_conv.parameters()} == {torch.bfloat16}
    assert out.dtype == torch.bfloat16 and relative_error(out, ref) <= 2 * rounding  # a wrong kernel: O(1)


def _finetune(corpus: Path, out: Path) -> Path:
    cfg = to_run_config(
        deep_merge(
            {
                "task": "finetune",
                "model": dict(MICRO),
                "data": {
                    "manifest_dir": str(corpus),
                    "max_tokens": 48000,
                    "max_sample_size": None,
                    "min_sample_size": 0,
                },
                "optim": {"lr": 3e-3, "clip_norm": 5.0},
                "schedule": {"name": "tri_stage", "phase_ratio": [0.1, 0.6, 0.3]},
                "trainer": {
                    "max_updates": 300,
                    "log_interval": 100,
                    "save_interval": 1000,
                    "progress": False,
                    "valid_interval": 0,
                    "seed": 3,
                },
                "ctc": {"mask_time_prob": 0.0, "feature_grad_mult": 1.0, "mask_channel_prob": 0.0},
                "finetune": {"freeze_finetune_updates": 0, "freeze_feature_encoder": False},
            },
            {},
        )
    )
    Trainer(cfg, out).fit()
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CTC model fine-tuned 300 updates on the toy corpus (valid CER well below 0.5)."""
    root = tmp_path_factory.mktemp("bf16")
    corpus = make_toy_corpus(root / "toy", train=80, valid=16, seed=0, min_words=2, max_words=3)
    return _finetune(corpus, root / "run"), corpus


def test_bf16_transcripts_stay_within_tolerance_of_float32(trained):
    """The stated tolerance: corpus CER within 0.02 (absolute) of float32, and frame log-probs
    within 0.25 nats; bf16 keeps ~3 significant digits, so a few near-tied frames may flip."""
    run, corpus = trained
    fp32 = Transcriber.from_path(run)
    bf16 = Transcriber.from_path(run, dtype="bfloat16")
    assert (fp32.dtype, bf16.dtype) == ("float32", "bfloat16")
    r32 = evaluate_split(fp32, corpus, "valid")
    r16 = evaluate_split(bf16, corpus, "valid")
    print(f"valid CER float32 {r32.cer:.4f}  bf16 {r16.cer:.4f}; WER {r32.wer:.4f} / {r16.wer:.4f}")
    assert r32.cer < 0.5  # a model that learned something, else the comparison says little
    assert abs(r16.cer - r32.cer) <= 0.02
    same = sum(a == b for a, b in zip(r32.hypotheses, r16.hypotheses))
    assert same >= 0.8 * len(r32.hypotheses)
    wave = torch.from_numpy(
        __import__("soundfile").read(str(corpus / "wav" / "valid_00000.wav"), dtype="float32")[0]
    )
    lp32, lp16 = fp32.logits(wave).log_softmax(-1), bf16.logits(wave).log_softmax(-1)
    assert lp16.dtype == torch.float32 and lp16.shape == lp32.shape
    assert (lp16 - lp32).abs().max() < 0.25


def test_bf16_features_and_the_cli_record_the_dtype(trained, tmp_path, capsys):
    from wav2vec2_lite.cli import evaluate, extract

    run, corpus = trained
    wave = torch.randn(8000) * 0.1
    ex32 = Extractor.from_path(run, ["conv", "layer_1", "last"])
    f32 = ex32.extract_wave(wave)
    ex16 = Extractor.from_path(run, ["conv", "layer_1", "last"], dtype="bf16")
    f16 = ex16.extract_wave(wave)
    assert ex16.dtype == "bfloat16"
    for name in ("conv", "layer_1", "last"):
        assert f16[name].dtype == torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16):  # exact bf16 kernels: bf16 rounding alone
            rounding = bf16_rounding(_with_bf16_convs(lambda n=name: ex32.extract_wave(wave)[n]), f32[name])
        rel = relative_error(f16[name], f32[name])
        assert 0 < rel <= 3 * rounding, (name, rel, rounding)
    evaluate(
        [
            str(run),
            "--data",
            str(corpus),
            "--split",
            "valid",
            "--dtype",
            "bfloat16",
            "--limit",
            "4",
            "--out",
            str(tmp_path / "eval"),
        ]
    )  # returns: every utterance scored
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["dtype"] == "bfloat16"
    extract(
        [str(run), str(corpus / "valid.tsv"), "--limit", "2", "--out", str(tmp_path / "x"), "--dtype", "bf16"]
    )
    records = [json.loads(line) for line in (tmp_path / "x" / "index.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["dtype"] for r in records} == {"bfloat16"}
    capsys.readouterr()


def test_a_cpu_without_bf16_units_gets_a_one_line_note(monkeypatch, capsys):
    from wav2vec2_lite.cli import common

    monkeypatch.setattr("wav2vec2_lite.tools.hardware.native_bf16", lambda device="cpu": False)
    common._dtype_note("w2v2-transcribe", "bfloat16", "cpu")
    common._dtype_note("w2v2-transcribe", "float32", "cpu")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("w2v2-transcribe: note: this CPU has no bf16 units")


def _grads(model: nn.Module, wave: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    model(wave[None].to(next(model.parameters()).dtype), labels=labels).loss.backward()
    return [p.grad for p in model.parameters() if p.grad is not None]


def test_compiled_dense_part_matches_eager_without_graph_breaks(trained):
    """``--compile`` / ``trainer.compile``: the projection, context network and CTC head compiled
    in place (state-dict keys unchanged), no graph break, the same logits and gradients up to the
    float32 rounding of this computation on this CPU (measured against float64, tests/_tolerance.py)."""
    import copy

    from torch._dynamo.utils import counters

    from wav2vec2_lite.compile import compile_dense, dense_parts

    run, corpus = trained
    eager = Transcriber.from_path(run)
    compiled = Transcriber.from_path(run, compile=True)
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())
    exact = copy.deepcopy(eager.model).double()
    counters.clear()
    wave = torch.randn(12000) * 0.1
    for w in (wave, wave[:9000]):
        with torch.no_grad():
            ref, want = eager.logits(w), exact(w[None].double()).logits[0]
        assert_float32_close(compiled.logits(w), ref, want, f"logits of {len(w)} samples")
        assert (
            float32_excess(nudged(eager.model, FIRST_CONV)(w[None]).logits[0].detach(), ref, want) > 1
        )  # the bound is tight
    assert not counters["graph_break"]
    # a training step (dropout off: the same random numbers are not drawn in the same order)
    model = copy.deepcopy(eager.model).float().train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    model.wav2vec2.config.mask_time_prob = 0.0
    twin = compile_dense(copy.deepcopy(model))
    assert all(getattr(p, "_compiled_call_impl", None) is not None for p in dense_parts(twin))
    labels = torch.randint(1, model.config.vocab_size, (1, 8))
    ref, got = _grads(model, wave, labels), _grads(twin, wave, labels)
    assert not counters["graph_break"]
    want = _grads(copy.deepcopy(model).double(), wave, labels)
    names = [n for n, p in model.named_parameters() if p.grad is not None]
    assert_all_float32_close(got, ref, want, names)
    assert (
        worst_float32_excess(_grads(nudged(model, FIRST_CONV), wave, labels), ref, want) > 1
    )  # the bound is tight
