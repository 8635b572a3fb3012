"""A fine-tuned model exported to a Hugging Face folder transcribes like our own decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC  # noqa: E402
from wav2vec2_lite.asr.decode import greedy_decode  # noqa: E402
from wav2vec2_lite.data.tokenizer import CharTokenizer  # noqa: E402
from wav2vec2_lite.interop import from_hf  # noqa: E402
from wav2vec2_lite.interop.hf_export import export_ctc_to_hf  # noqa: E402


def _chirp(seconds: float = 1.0) -> torch.Tensor:
    t = np.arange(int(16000 * seconds)) / 16000
    return torch.tensor(0.5 * np.sin(2 * np.pi * (200 + 300 * t) * t), dtype=torch.float32)


@pytest.fixture(scope="module")
def trained():
    """Overfit a small CTC model on one utterance so that it emits real, non-blank text."""
    tok = CharTokenizer(list("|DEHLORW"))
    torch.manual_seed(0)
    cfg = Wav2Vec2Config.tiny(
        num_layers=2,
        vocab_size=len(tok),
        mask_time_prob=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        dropout_input=0.0,
    )
    model = Wav2Vec2ForCTC(cfg)
    wave = _chirp()[None]
    labels = torch.tensor([tok.encode_text("HELLO WORLD")])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(60):
        loss = model(wave, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok, wave


def test_pipeline_transcribes_like_our_decoder(trained, tmp_path):
    model, tok, wave = trained
    with torch.no_grad():
        ours = model(wave).logits
    ours_text = greedy_decode(ours, None, tok.vocab)[0]
    assert ours_text == "HELLO WORLD"  # the model really learned something: not an empty string

    folder = export_ctc_to_hf(model, tok, tmp_path / "hf")
    assert json.loads((folder / "vocab.json").read_text())["<pad>"] == 0
    asr = transformers.pipeline("automatic-speech-recognition", model=str(folder))
    assert asr(wave[0].numpy())["text"] == ours_text

    hf = transformers.Wav2Vec2ForCTC.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        theirs = hf(wave).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
    back = from_hf(str(folder), masked_group_norm=True)
    # transformers stores no mask embedding when masking is off; every other tensor round-trips
    assert all(
        torch.equal(v, back.state_dict()[k])
        for k, v in model.state_dict().items()
        if k != "wav2vec2.mask_emb"
    )


def test_export_checks_vocabulary_size(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(ValueError, match="CTC head"):
        export_ctc_to_hf(model, CharTokenizer(list("AB")), tmp_path / "bad")


def test_export_writes_what_transformers_4_and_5_read_and_imports_read_either(tmp_path, caplog):
    """Runs the installed transformers only (see the version in the assertion messages); the files a
    4.40+ reader needs (preprocessor_config.json) are checked by content."""
    import logging

    from wav2vec2_lite.asr.transcribe import Transcriber

    tok = CharTokenizer(list("|AB"))
    torch.manual_seed(0)
    for layer_mode in (False, True):  # BASE-style and LARGE-style (normalised input)
        cfg = Wav2Vec2Config.tiny(
            num_layers=1,
            vocab_size=len(tok),
            feat_extract_norm="layer" if layer_mode else "group",
            layer_norm_first=layer_mode,
            conv_bias=layer_mode,
        )
        folder = tmp_path / f"hf_{layer_mode}"
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            export_ctc_to_hf(Wav2Vec2ForCTC(cfg).eval(), tok, folder)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], (
            caplog.text
        )  # nothing to warn about
        pre = json.loads((folder / "preprocessor_config.json").read_text())
        assert pre["feature_extractor_type"] == "Wav2Vec2FeatureExtractor" and pre["sampling_rate"] == 16000
        assert pre["do_normalize"] is layer_mode and pre["return_attention_mask"] is layer_mode
        assert (
            transformers.Wav2Vec2FeatureExtractor(**pre).do_normalize is layer_mode
        )  # what 4.x builds from it
        if (folder / "processor_config.json").exists():  # transformers 5 nests it here
            nested = json.loads((folder / "processor_config.json").read_text())["feature_extractor"]
            assert nested["do_normalize"] is layer_mode, transformers.__version__
        assert transformers.AutoFeatureExtractor.from_pretrained(folder).do_normalize is layer_mode, (
            transformers.__version__
        )
        assert Transcriber.from_path(folder).normalize is layer_mode
        if (folder / "processor_config.json").exists():
            (folder / "preprocessor_config.json").unlink()  # a folder written by transformers 5 itself
            assert Transcriber.from_path(folder).normalize is layer_mode
