"""Log-mel filterbank front end: wave (B, S) -> log-mel frames, and frames aligned to the encoder.

80 mel bins (HTK scale, triangular filters, 0 Hz to Nyquist) over the power spectrum of a
25 ms Hann window every 10 ms (400 / 160 samples at 16 kHz, as BEST-RQ and SpeechBrain's
``Fbank``), no centering: mel frame ``j`` covers samples ``[160 j, 160 j + 400)``.

Alignment with the conv feature encoder (:meth:`LogMel.encoder_frames`): the encoder's
frame ``t`` sees samples ``[J t, J t + R)`` (J = frame stride, R = receptive field; for the
reference stack J = 320, R = 400). With ``stack = J / 160`` mel frames per encoder frame,
stacked frame ``t`` concatenates mel frames ``stack·t ... stack·t + stack - 1``: the first
one starts where encoder frame ``t`` starts. Exactly ``T`` stacked frames are returned for
the encoder's ``T = floor((S - R) / J) + 1``; when the last stacked frame's later windows
reach past the end of the audio (at most 160 samples for the reference stack) the wave is
right-padded with zeros, as padded samples of a batch are.

All computation is float32 with autocast off; the filterbank and window are
non-persistent buffers (rebuilt from the hyperparameters, never saved).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["LogMel", "mel_filterbank", "normalize_per_utterance"]


def _hz_to_mel(f: float | Tensor) -> float | Tensor:
    return 2595.0 * (torch.log10(1.0 + f / 700.0) if isinstance(f, Tensor) else math.log10(1.0 + f / 700.0))


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters, equally spaced on the HTK mel scale."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)  # (n_mels + 2,) Hz
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rise = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    fall = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return torch.clamp(torch.minimum(rise, fall), min=0.0).float()


def normalize_per_utterance(x: Tensor, lengths: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per feature over each utterance's first ``lengths`` frames.

    x: (B, M, F); lengths: (B,) valid frames (None: all). Padded frames are set to 0.
    """
    if lengths is None:
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    else:
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    w = valid[..., None].to(x.dtype)
    count = w.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * w).sum(1, keepdim=True) / count
    var = ((x - mean).pow(2) * w).sum(1, keepdim=True) / count
    return ((x - mean) / (var + eps).sqrt()) * w


class LogMel(nn.Module):
    """``wave (B, S) -> (B, M, n_mels)`` natural-log mel energies, ``M = floor((S - 400) / 160) + 1``."""

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000, win_ms: float = 25.0, hop_ms: float = 10.0,
                 floor: float = 1e-6) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.win = int(round(sample_rate * win_ms / 1000))
        self.hop = int(round(sample_rate * hop_ms / 1000))
        self.n_fft = self.win
        self.floor = floor
        self.register_buffer("window", torch.hann_window(self.win, periodic=True), persistent=False)
        self.register_buffer("fbank", mel_filterbank(self.n_fft, n_mels, sample_rate), persistent=False)

    def num_frames(self, samples: int) -> int:
        """Mel frames of ``samples`` samples (0 when shorter than one window)."""
        return max((samples - self.win) // self.hop + 1, 0)

    def forward(self, wave: Tensor) -> Tensor:
        with torch.autocast(wave.device.type, enabled=False):
            spec = torch.stft(wave.float(), self.n_fft, hop_length=self.hop, win_length=self.win,
                              window=self.window, center=False, return_complex=True)  # (B, F, M)
            power = spec.real.pow(2) + spec.imag.pow(2)
            return torch.log(torch.einsum("bfm,fn->bmn", power, self.fbank) + self.floor)

    def encoder_frames(self, wave: Tensor, frames: int, frame_stride: int,
                       sample_padding: Tensor | None = None) -> Tensor:
        """(B, S) -> (B, frames, stack · n_mels) log-mel frames stacked onto the encoder's frames.

        ``frames`` is the encoder's T for this batch; ``frame_stride`` its hop J in samples
        (a multiple of the mel hop). Padded samples (``sample_padding`` True) count as zeros.
        """
        if frame_stride % self.hop:
            raise ValueError(f"the encoder's frame stride ({frame_stride} samples) must be a multiple of the "
                             f"log-mel hop ({self.hop} samples) to stack mel frames onto encoder frames")
        stack = frame_stride // self.hop
        if frames <= 0:
            return wave.new_zeros(wave.shape[0], 0, stack * self.n_mels)
        if sample_padding is not None:
            wave = wave.masked_fill(sample_padding, 0.0)
        needed = self.hop * (stack * frames - 1) + self.win  # samples that stack·T mel frames read
        if needed > wave.shape[1]:
            wave = torch.nn.functional.pad(wave, (0, needed - wave.shape[1]))
        mel = self(wave[:, :needed])  # (B, stack·T, n_mels)
        return rearrange(mel, "b (t s) m -> b t (s m)", s=stack)
