"""w2v2-extract: layer states and per-frame units equal the model's own outputs; files, folders,
manifests; formats; a bad input costs only itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from wav2vec2_lite import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.cli import extract
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.manifest import write_manifest
from wav2vec2_lite.extract import ExtractionFailure, Extractor, extract_to_folder
from wav2vec2_lite.objectives.base import ObjectiveInputs
from wav2vec2_lite.serialization import save_model

SMALL = dict(
    num_layers=2,
    hidden_size=32,
    num_heads=2,
    ffn_dim=64,
    conv_dim=(16,) * 7,
    contrastive=dict(num_codes_per_group=8),
)


def _model(objective: str = "contrastive", seed: int = 0) -> Wav2Vec2ForPreTraining:
    torch.manual_seed(seed)
    return Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(objective=objective, **SMALL)).eval()


def _wave(n: int = 6400, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _inputs(model, wave: torch.Tensor, mask: torch.Tensor) -> ObjectiveInputs:
    out = model.wav2vec2(wave[None], mask_indices=mask)
    return ObjectiveInputs(
        waveform=wave[None],
        sample_padding=None,
        conv_features=out.conv_features,
        extract_features=out.extract_features,
        context=out.last_hidden_state,
        mask_indices=mask,
        frame_padding=None,
        frame_lengths=out.frame_lengths,
    )


@pytest.mark.parametrize("objective", ["contrastive", "best_rq"])
def test_layers_and_units_are_the_models_own(objective):
    model, wave = _model(objective), _wave()
    if objective == "best_rq":
        model.objective.fit_normalization([wave, _wave(8000, 1)])  # a trained model's frozen statistics
    got = Extractor(model, ["all"], units=True).extract_wave(wave)
    with torch.no_grad():
        ref = model.wav2vec2(wave[None], output_hidden_states=True)
    assert list(got) == ["conv"] + [f"layer_{k}" for k in range(3)] + ["last", "units"]
    assert torch.equal(got["conv"], ref.extract_features[0]) and torch.equal(
        got["last"], ref.last_hidden_state[0]
    )
    for k in range(3):
        assert torch.equal(got[f"layer_{k}"], ref.hidden_states[k][0])
    frames = ref.last_hidden_state.shape[1]
    groups = model.config.contrastive.num_code_groups if objective == "contrastive" else 1
    assert got["units"].shape == (frames, groups) and got["units"].dtype == torch.int64
    # the targets the objective trains on, at every frame it quantizes (all frames: every one is masked)
    mask = torch.ones(1, frames, dtype=torch.bool)
    with torch.no_grad():
        targets = model.objective.targets(
            _inputs(model, wave, mask), generator=torch.Generator().manual_seed(0)
        )
    codes = targets.codes[0] if objective == "contrastive" else targets[0][:, None]
    assert torch.equal(got["units"], codes)


def test_choices_are_checked():
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['layer_9'\]"):
        Extractor(_model(), ["layer_9"])
    ctc = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(vocab_size=8, **SMALL))
    with pytest.raises(ValueError, match="units come from a pretraining objective"):
        Extractor(ctc, [], units=True)
    with pytest.raises(ValueError, match="nothing to extract"):
        Extractor(_model(), [])


@pytest.fixture
def audio(tmp_path):
    root = tmp_path / "audio"
    for rel, n in (("a/one.wav", 6400), ("a/two.wav", 8000), ("b/one.wav", 7200)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, _wave(n, seed=n).numpy(), 16000)
    (root / "b" / "bad.wav").write_bytes(b"not audio")
    return root


def test_folders_and_manifests_write_one_file_per_utterance_and_an_index(audio, tmp_path):
    model = _model()
    ex = Extractor(model, ["layer_1"], units=True)
    results = list(extract_to_folder(ex, [audio], tmp_path / "out"))
    failures = [r for r in results if isinstance(r, ExtractionFailure)]
    assert len(failures) == 1 and failures[0].path.endswith("bad.wav")
    for rel in ("a/one", "a/two", "b/one"):
        saved = load_file(tmp_path / "out" / f"{rel}.safetensors")
        expected = ex.extract_file(audio / f"{rel}.wav")
        assert saved.keys() == {"layer_1", "units"} and all(torch.equal(saved[k], expected[k]) for k in saved)
    index = [json.loads(ln) for ln in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    assert [r["out"] for r in index] == [["a/one.safetensors"], ["a/two.safetensors"], ["b/one.safetensors"]]

    write_manifest(tmp_path / "m.tsv", audio, [("a/two.wav", 8000), ("b/one.wav", 7200)])
    list(extract_to_folder(ex, [tmp_path / "m.tsv"], tmp_path / "npy", fmt="npy"))
    assert np.array_equal(
        np.load(tmp_path / "npy" / "b" / "one.units.npy"),
        ex.extract_file(audio / "b" / "one.wav")["units"].numpy(),
    )
    both = list(extract_to_folder(ex, [audio / "a" / "one.wav", audio / "b" / "one.wav"], tmp_path / "flat"))
    assert (
        isinstance(both[1], ExtractionFailure) and "would overwrite" in both[1].error
    )  # same name, one folder


def test_the_cli_reports_bad_inputs_in_one_line_each(audio, tmp_path, capsys):
    save_model(_model(), tmp_path / "model")
    with pytest.raises(SystemExit) as code:
        extract(
            [
                str(tmp_path / "model"),
                str(audio),
                "--out",
                str(tmp_path / "o"),
                "--layers",
                "conv,last",
                "--units",
            ]
        )
    assert code.value.code == 1
    out, err = capsys.readouterr()
    assert "wrote 3 utterance(s)" in out and "conv, last, units" in out
    assert err.count("w2v2-extract: error: ") == 1 and "bad.wav" in err
    save_model(Wav2Vec2ForCTC(Wav2Vec2Config.tiny(vocab_size=8, **SMALL)), tmp_path / "ctc")
    with pytest.raises(SystemExit) as code:
        extract([str(tmp_path / "ctc"), str(audio), "--out", str(tmp_path / "o2"), "--units"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1 and "units come from a pretraining objective" in err


def test_named_layers_of_a_backbone_output_and_their_errors():
    from wav2vec2_lite.models import backbone_of

    model = _model().eval()
    backbone = backbone_of(model)
    assert backbone is model.wav2vec2 and backbone_of(backbone) is backbone
    with pytest.raises(TypeError, match="expected a wav2vec2_lite model or backbone; got Linear"):
        backbone_of(torch.nn.Linear(2, 2))
    with torch.no_grad():
        out = backbone(_wave()[None], output_hidden_states=True)
        plain = backbone(_wave()[None])
    L = backbone.config.num_layers
    assert out.layer("conv") is out.extract_features and out.layer("last") is out.last_hidden_state
    assert out.layer(f"layer_{L}") is out.hidden_states[L]
    with pytest.raises(ValueError, match=f"no layer_{L + 1}: this model has layer_0 .. layer_{L}"):
        out.layer(f"layer_{L + 1}")
    with pytest.raises(ValueError, match="unknown layer name 'layer_x'"):
        out.layer("layer_x")
    with pytest.raises(ValueError, match="output_hidden_states=True"):
        plain.layer("layer_0")
