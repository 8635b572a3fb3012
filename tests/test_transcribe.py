"""Transcription from saved models: run folders, model folders, long files in bounded memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC
from wav2vec2_lite.asr.decode import greedy_decode
from wav2vec2_lite.asr.transcribe import Transcriber
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.interop.sources import detect
from wav2vec2_lite.serialization import save_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    tok = CharTokenizer(list("|ABC"))
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(
        Wav2Vec2Config.tiny(num_layers=1, vocab_size=len(tok), feat_extract_norm="layer", conv_bias=True)
    )
    with torch.no_grad():  # favour letters over blank so that the transcript is not empty
        model.lm_head.bias[0] = -5.0
    save_model(model, root / "checkpoints" / "best")
    tok.save(root / "tokenizer.json")
    return root, model, tok


def test_resolve_and_transcribe_file(run_dir, tmp_path):
    root, model, tok = run_dir
    assert detect(root).path == root / "checkpoints" / "best"
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    sf.write(tmp_path / "a.wav", wave, 16000)
    tr = Transcriber.from_path(root)
    assert tr.normalize  # layer-norm models take normalised input (fairseq convention)
    out = tr.transcribe_file(tmp_path / "a.wav")
    with torch.no_grad():
        ref = greedy_decode(model.eval()(tr_norm(wave)).logits, None, tok.vocab)[0]
    assert out.text == ref and out.text
    assert abs(out.duration_s - 1.5) < 1e-6
    starts = [w["start_s"] for w in out.words]
    assert starts == sorted(starts) and all(0 <= w["start_s"] < w["end_s"] <= 1.5 + 0.03 for w in out.words)
    back = json.loads(json.dumps(out.to_dict()))  # the --json record round-trips
    assert back == {"path": str(tmp_path / "a.wav"), "text": out.text, "duration_s": 1.5, "words": out.words}


def tr_norm(wave: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(wave)
    return torch.nn.functional.layer_norm(t, t.shape, eps=1e-5)[None]


def test_long_file_is_chunked_in_bounded_memory(run_dir, tmp_path):
    root, model, _ = run_dir
    seconds = 240  # four minutes in 10 s windows: the same code path as an hour-long file
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "long.flac", (rng.standard_normal(16000 * seconds) * 0.05).astype(np.float32), 16000)
    tr = Transcriber.from_path(root, chunk_s=10.0, overlap_s=2.0)
    seen: list[int] = []
    forward = tr.model.forward

    def spy(wave, *args, **kwargs):
        seen.append(wave.shape[-1])
        return forward(wave, *args, **kwargs)

    tr.model.forward = spy
    out = tr.transcribe_file(tmp_path / "long.flac")
    assert out.duration_s == pytest.approx(seconds)
    assert max(seen) <= 10 * 16000 and len(seen) >= seconds // 10  # never more than one window at a time
    assert out.words and out.words[-1]["end_s"] > seconds - 10  # the stitched output reaches the end


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        Transcriber.from_path(tmp_path)


def test_cli_prints_text_and_json(run_dir, tmp_path, capsys):
    from wav2vec2_lite.cli import transcribe

    root, _, _ = run_dir
    sf.write(
        tmp_path / "b.wav", np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1, 16000
    )
    transcribe([str(root), str(tmp_path / "b.wav")])
    path, text = capsys.readouterr().out.strip().split("\t")
    assert path.endswith("b.wav") and text
    transcribe([str(root), str(tmp_path / "b.wav"), "--json"])
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == text and row["words"]


def test_transcribe_all_yields_a_failure_per_bad_input_and_goes_on(run_dir, tmp_path):
    from wav2vec2_lite.asr.transcribe import Failure, transcribe_all
    from wav2vec2_lite.data.audio import AudioError

    root, _, _ = run_dir
    rng = np.random.default_rng(3)
    sf.write(tmp_path / "ok.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
    sf.write(tmp_path / "short.wav", rng.standard_normal(399).astype(np.float32) * 0.1, 16000)
    tr = Transcriber.from_path(root)
    with pytest.raises(
        AudioError, match=r"short.wav: 399 samples at 16000 Hz, shorter than the model's 400-sample"
    ):
        tr.transcribe_file(tmp_path / "short.wav")
    out = list(transcribe_all(tr, [tmp_path / "short.wav", tmp_path / "gone.wav", tmp_path / "ok.wav"]))
    assert [type(o).__name__ for o in out] == ["Failure", "Failure", "Transcript"]
    assert out[1] == Failure(str(tmp_path / "gone.wav"), "audio file not found", out[1].exception)
    assert out[2].notice is None and "notice" not in out[2].to_dict()  # 16 kHz mono: used as is
    assert out[2].text == tr.transcribe_file(tmp_path / "ok.wav").text
