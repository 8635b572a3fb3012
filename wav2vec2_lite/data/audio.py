"""Audio loading (soundfile: wav/flac/ogg) with checks whose errors name the file.

``load_audio`` returns a mono float32 wave ``(S,)`` at the requested rate or raises
``AudioError`` saying what was expected, what was found, and which option fixes it.
``AudioStream`` reads the same wave from disk block by block, with the same checks and
errors, for files too long to hold (transcription of hours of audio):

    stream = AudioStream(path, mono="mix", resample="soxr")
    stats = stream.stats()                                  # pass 1: checks, length, mean/variance
    for block in stream.blocks():                           # pass 2: (s,) float32 blocks
        x = stats.normalize(block)                          # == normalize(load_audio(...)) piecewise
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

__all__ = [
    "AudioError",
    "AudioInfo",
    "audio_info",
    "read_samples",
    "load_audio",
    "AudioStream",
    "WaveStats",
    "normalize",
    "audio_warnings",
    "out_of_range",
    "peak_out_of_range",
    "SILENCE_DBFS",
    "RANGE_LIMIT",
    "CLIP_LEVEL",
    "CLIP_FRACTION",
]

# warnings: a whole file quieter than this (dB relative to full scale 1.0) is silent ...
SILENCE_DBFS = -60.0
# ... and one with at least CLIP_FRACTION of its samples at |x| >= CLIP_LEVEL is clipped
CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.01
# float samples are expected in [-1, 1]; a peak above this is integer-scale values stored as float
RANGE_LIMIT = 4.0

MonoPolicy = Literal["error", "mix"]
ResamplePolicy = Literal["error", "soxr"]


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    num_samples: int  # frames per channel
    sample_rate: int
    channels: int
    format: str
    subtype: str


def _wav_truncation(path: Path, file_size: int) -> str | None:
    """For RIFF/WAVE files: a message if the ``data`` chunk is shorter than its header says.

    libsndfile silently clamps such files to the bytes present, so a half-copied WAV would
    otherwise load as a shorter utterance.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= file_size:
            f.seek(offset)
            cid, size = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                available = file_size - (offset + 8)
                if size not in (0, 0xFFFFFFFF) and available < size:  # 0/-1: streaming writers
                    return (
                        f"truncated WAV: header declares {size} data bytes, "
                        f"file holds {available} (incomplete copy or download?)"
                    )
                return None
            offset += 8 + size + (size & 1)
    return None


def _sf_reason(e: Exception) -> str:
    """libsndfile's reason without the repeated "Error opening 'path':" prefix."""
    msg = str(e)
    return msg.split("': ", 1)[1] if "': " in msg else (msg or type(e).__name__)


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header; raises AudioError for a missing, empty, non-audio or truncated file."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: audio file not found")
    if not p.is_file():
        raise AudioError(f"{p}: not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise AudioError(f"{p}: file is empty (0 bytes)")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(
            f"{p}: not a readable audio file, or corrupt/truncated header (libsndfile: {_sf_reason(e)})"
        ) from None
    trunc = _wav_truncation(p, size)
    if trunc:
        raise AudioError(f"{p}: {trunc}")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels), info.format, info.subtype)


def read_samples(path: str | os.PathLike, info: AudioInfo | None = None) -> np.ndarray:
    """All samples as float32 ``(S, C)``; AudioError for corrupt/truncated data, 0 samples, NaN/inf."""
    p = Path(path)
    info = info or audio_info(p)
    try:
        wave, _ = sf.read(str(p), dtype="float32", always_2d=True)  # (S, C)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(_corrupt(p, e)) from None
    _check_frames(p, info, wave.shape[0])
    finite = np.isfinite(wave)
    if not finite.all():
        raise AudioError(_nonfinite(p, int((~finite).sum()), int(np.argwhere(~finite)[0, 0])))
    return wave


def _corrupt(p: Path, e: Exception) -> str:
    return f"{p}: corrupt or truncated audio data (libsndfile: {_sf_reason(e)})"


def _check_frames(p: Path, info: AudioInfo, frames: int) -> None:
    """AudioError when no frame, or fewer frames than the header declares, could be read."""
    if frames == 0:
        raise AudioError(f"{p}: contains no audio samples (0 frames)")
    if frames < info.num_samples:
        raise AudioError(
            f"{p}: truncated: header declares {info.num_samples} samples, only {frames} could be read"
        )


def _nonfinite(p: Path, bad: int, first: int) -> str:
    return f"{p}: {bad} NaN/inf sample(s), first at sample {first}; the file is corrupt"


def _check_policies(mono: str, resample: str) -> None:
    if mono not in ("error", "mix"):
        raise ValueError(f"mono must be 'error' or 'mix', found {mono!r}")
    if resample not in ("error", "soxr"):
        raise ValueError(f"resample must be 'error' or 'soxr', found {resample!r}")


def _check_layout(p: Path, info: AudioInfo, sample_rate: int, mono: str, resample: str) -> None:
    """AudioError for channels or a rate that the policies refuse."""
    if info.channels != 1 and mono == "error":
        raise AudioError(
            f"{p}: has {info.channels} channels, expected mono; "
            f"convert the file or pass mono='mix' to average the channels"
        )
    if info.sample_rate != sample_rate and resample == "error":
        raise AudioError(
            f"{p}: sample rate is {info.sample_rate} Hz, expected {sample_rate} Hz; "
            f"resample the file or pass resample='soxr'"
        )


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    mono: MonoPolicy = "error",
    resample: ResamplePolicy = "error",
) -> np.ndarray:
    """Load ``path`` as a float32 mono wave ``(S,)`` at ``sample_rate`` Hz.

    Args:
        mono: ``"error"`` rejects multi-channel files; ``"mix"`` averages the channels.
        resample: ``"error"`` rejects other rates; ``"soxr"`` resamples (high quality).
    Raises:
        AudioError: missing/empty/non-audio/corrupt/truncated file, no samples, NaN/inf
            samples, multi-channel with ``mono="error"``, other rate with ``resample="error"``.
    """
    _check_policies(mono, resample)
    p = Path(path)
    info = audio_info(p)
    _check_layout(p, info, sample_rate, mono, resample)
    wave = read_samples(p, info)  # (S, C)
    sr = info.sample_rate
    wave = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if sr != sample_rate:
        wave = soxr.resample(wave, sr, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


@dataclass(frozen=True)
class WaveStats:
    """One pass over a wave: its length, mean and biased variance (float64), and peak ``|x|``."""

    num_samples: int
    mean: float
    var: float
    peak: float

    def normalize(self, block: np.ndarray, eps: float = 1e-5) -> np.ndarray:
        """A block of the wave scaled as :func:`normalize` scales the whole wave,
        ``(x - mean) / sqrt(var + eps)``; equal to it up to float32 rounding (float64 statistics
        here, float32 in ``F.layer_norm``)."""
        rstd = 1.0 / math.sqrt(self.var + eps)
        return ((block.astype(np.float64) - self.mean) * rstd).astype(np.float32)


class AudioStream:
    """A file as consecutive mono float32 blocks ``(s,)`` at ``sample_rate`` Hz, read from disk.

    The blocks concatenate to :func:`load_audio`'s wave, bit for bit: channels are averaged
    block by block and soxr's streaming resampler gives what its one-shot call gives. Only one
    block of the file (``block_frames`` frames, a few MB) is held at a time. The checks and
    errors are :func:`load_audio`'s: the header's (missing, empty, not audio, truncated WAV) and
    the policies' here, the data's (corrupt, no samples, truncated, NaN/inf) when a pass over
    :meth:`blocks` reaches the end of the file, before it returns.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        sample_rate: int = 16000,
        mono: MonoPolicy = "error",
        resample: ResamplePolicy = "error",
        block_frames: int = 1 << 16,
    ) -> None:
        _check_policies(mono, resample)
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, found {block_frames}")
        self.path = Path(path)
        self.info = audio_info(self.path)
        _check_layout(self.path, self.info, sample_rate, mono, resample)
        self.sample_rate = sample_rate
        self.block_frames = block_frames

    def blocks(self) -> Iterator[np.ndarray]:
        """One pass over the file: mono float32 blocks at ``sample_rate``; AudioError at the end of
        the data when it is corrupt, empty, shorter than the header or holds NaN/inf."""
        p, info = self.path, self.info
        resampler = None
        if info.sample_rate != self.sample_rate:
            resampler = soxr.ResampleStream(
                info.sample_rate, self.sample_rate, 1, dtype="float32", quality="HQ"
            )
        frames = bad = 0
        first_bad = -1
        try:
            with sf.SoundFile(str(p)) as f:
                while True:
                    raw = f.read(self.block_frames, dtype="float32", always_2d=True)  # (s, C)
                    if raw.shape[0] == 0:
                        break
                    finite = np.isfinite(raw)
                    if not finite.all():  # counted to the end of the file, as read_samples counts them
                        if first_bad < 0:
                            first_bad = frames + int(np.argwhere(~finite)[0, 0])
                        bad += int((~finite).sum())
                    frames += raw.shape[0]
                    if bad:
                        continue
                    wave = raw.mean(axis=1) if raw.shape[1] > 1 else raw[:, 0]
                    if resampler is not None:
                        wave = resampler.resample_chunk(np.ascontiguousarray(wave))
                    if wave.size:
                        yield np.ascontiguousarray(wave, dtype=np.float32)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(_corrupt(p, e)) from None
        _check_frames(p, info, frames)
        if bad:
            raise AudioError(_nonfinite(p, bad, first_bad))
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)

    def stats(self) -> WaveStats:
        """A full pass (so every check of the data): length, mean and variance in float64 (blocks
        merged with Chan et al.'s update, no cancellation from a DC offset), peak ``|x|``."""
        n, mean, m2, peak = 0, 0.0, 0.0, 0.0
        for block in self.blocks():
            x = block.astype(np.float64)
            k, block_mean = x.size, float(x.mean())
            delta, total = block_mean - mean, n + k
            mean += delta * k / total
            m2 += float(np.square(x - block_mean).sum()) + delta * delta * n * k / total
            n = total
            peak = max(peak, float(np.max(np.abs(block))))
        return WaveStats(n, mean, m2 / n, peak)


T = TypeVar("T", np.ndarray, torch.Tensor)


def normalize(wave: T, eps: float = 1e-5) -> T:
    """Zero-mean, unit-variance per utterance ``(S,)``, as fairseq ``normalize=True``.

    Same formula as fairseq: ``F.layer_norm(wave, wave.shape)`` (biased variance, eps 1e-5).
    Returns the input's type (numpy array or tensor).
    """
    if isinstance(wave, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        with torch.no_grad():
            return F.layer_norm(t, t.shape, eps=eps).numpy()
    with torch.no_grad():
        return F.layer_norm(wave, wave.shape, eps=eps)


def audio_warnings(wave) -> list[str]:
    """Silence (whole-file RMS below ``SILENCE_DBFS``) and heavy clipping of decoded samples ``(S, C)``."""
    found = []
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms < 10 ** (SILENCE_DBFS / 20):
        level = f"{20 * np.log10(rms):.1f} dBFS" if rms > 0 else "digital zero"
        found.append(f"silent: RMS {level}, below {SILENCE_DBFS:g} dBFS")
    clipped = float(np.mean(np.abs(wave) >= CLIP_LEVEL))
    if clipped >= CLIP_FRACTION:
        found.append(f"clipped: {clipped:.1%} of samples at |x| >= {CLIP_LEVEL} (limit {CLIP_FRACTION:.0%})")
    loud = out_of_range(wave)
    if loud:
        found.append(loud)
    return found


def out_of_range(wave) -> str | None:
    """Why float samples ``(S,)`` or ``(S, C)`` far outside [-1, 1] are wrong, or None: a peak above
    ``RANGE_LIMIT`` is integer-scale values (16-bit: up to 32767) stored in a float file."""
    return peak_out_of_range(float(np.max(np.abs(wave))) if np.size(wave) else 0.0)


def peak_out_of_range(peak: float) -> str | None:
    """:func:`out_of_range` of a wave whose peak ``|x|`` is ``peak`` (e.g. ``WaveStats.peak``)."""
    if peak <= RANGE_LIMIT:
        return None
    hint = "; divide by 32768 (16-bit values)" if peak <= 32768 * 1.01 else ""
    return (
        f"out of range: samples reach {peak:.6g}, float audio is expected in [-1, 1] "
        f"(limit {RANGE_LIMIT:g}); rescale the file{hint}"
    )
