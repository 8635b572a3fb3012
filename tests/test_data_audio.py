"""load_audio: good files load exactly; every bad file raises AudioError naming it."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from wav2vec2_lite.data.audio import AudioError, audio_info, load_audio, normalize

SR = 16000


def _tone(n: int = 4000, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return x if channels == 1 else np.stack([x, -x * 0.5], axis=1)


@pytest.mark.parametrize(
    "fmt, subtype, ext", [("WAV", "FLOAT", "wav"), ("FLAC", "PCM_24", "flac"), ("WAV", "PCM_16", "wav")]
)
def test_load_good_file(tmp_path: Path, fmt: str, subtype: str, ext: str) -> None:
    x = _tone()
    p = tmp_path / f"a.{ext}"
    sf.write(str(p), x, SR, format=fmt, subtype=subtype)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.shape == (4000,)
    tol = {"FLOAT": 1e-7, "PCM_24": 1e-6, "PCM_16": 1e-4}[subtype]
    np.testing.assert_allclose(y, x, atol=tol)
    assert audio_info(p).num_samples == 4000


def test_load_ogg(tmp_path: Path) -> None:
    p = tmp_path / "a.ogg"
    sf.write(str(p), _tone(), SR, format="OGG", subtype="VORBIS")
    y = load_audio(p)
    assert y.shape == (4000,) and np.isfinite(y).all() and abs(float(np.abs(y).max()) - 0.3) < 0.05


def _raises(path: Path, needle: str, **kw) -> str:
    with pytest.raises(AudioError) as e:
        load_audio(path, **kw)
    msg = str(e.value)
    assert str(path) in msg, msg
    assert needle in msg, msg
    return msg


def test_missing(tmp_path: Path) -> None:
    _raises(tmp_path / "missing.wav", "not found")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    _raises(p, "empty (0 bytes)")


def test_text_renamed_wav(tmp_path: Path) -> None:
    p = tmp_path / "text.wav"
    p.write_text("this is not audio at all\n" * 20)
    _raises(p, "not a readable audio file")


def test_truncated_wav(tmp_path: Path) -> None:
    p = tmp_path / "cut.wav"
    sf.write(str(p), _tone(), SR, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    msg = _raises(p, "truncated WAV")
    assert "8000 data bytes" in msg
    p.write_bytes(data[:30])  # cut inside the header
    _raises(p, "not a readable audio file")


def test_truncated_flac(tmp_path: Path) -> None:
    p = tmp_path / "cut.flac"
    sf.write(str(p), np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32), SR)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _raises(p, "truncated")


def test_header_only_wav(tmp_path: Path) -> None:
    p = tmp_path / "zero.wav"
    sf.write(str(p), np.zeros(0, dtype=np.float32), SR)
    _raises(p, "no audio samples")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(tmp_path: Path, bad: float) -> None:
    x = _tone()
    x[100] = bad
    x[2000] = bad
    p = tmp_path / "nan.wav"
    sf.write(str(p), x, SR, subtype="FLOAT")
    _raises(p, "2 NaN/inf sample(s), first at sample 100")


def test_stereo(tmp_path: Path) -> None:
    p = tmp_path / "stereo.wav"
    x = _tone(channels=2)
    sf.write(str(p), x, SR, subtype="FLOAT")
    _raises(p, "has 2 channels, expected mono")
    assert "mono='mix'" in _raises(p, "channels")
    y = load_audio(p, mono="mix")
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-7)


def test_wrong_rate(tmp_path: Path) -> None:
    p = tmp_path / "8k.wav"
    sf.write(str(p), _tone(n=8000, sr=8000), 8000, subtype="FLOAT")
    msg = _raises(p, "sample rate is 8000 Hz, expected 16000 Hz")
    assert "resample='soxr'" in msg
    y = load_audio(p, resample="soxr")
    assert y.shape == (16000,) and y.dtype == np.float32
    # a 440 Hz tone stays a 440 Hz tone
    spec = np.abs(np.fft.rfft(y[2000:14000]))
    assert abs(np.argmax(spec) * SR / 12000 - 440) < 5


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mono must be"):
        load_audio(tmp_path / "x.wav", mono="avg")  # type: ignore[arg-type]


def test_normalize_matches_layer_norm() -> None:
    x = torch.randn(1234, generator=torch.Generator().manual_seed(0)) * 3 + 2
    y = normalize(x)
    torch.testing.assert_close(y, F.layer_norm(x, x.shape))
    assert abs(float(y.mean())) < 1e-6 and abs(float(y.std(unbiased=False)) - 1) < 1e-4
    yn = normalize(x.numpy())
    assert isinstance(yn, np.ndarray) and yn.dtype == np.float32
    np.testing.assert_allclose(yn, y.numpy(), atol=1e-6)
    z = normalize(np.zeros(10, dtype=np.float32))  # silence stays finite
    assert np.isfinite(z).all() and (z == 0).all()
