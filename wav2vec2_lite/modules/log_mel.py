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

Normalisation of the (stacked) frames: :class:`FrozenNormalization` (per-dimension mean and
standard deviation estimated once, then frozen and saved as buffers) or
:func:`normalize_per_utterance` (each utterance by its own valid frames).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

__all__ = ["FrozenNormalization", "LogMel", "mel_filterbank", "normalize_per_utterance", "valid_frames"]


def _hz_to_mel(f: float | Tensor) -> float | Tensor:
    return 2595.0 * (torch.log10(1.0 + f / 700.0) if isinstance(f, Tensor) else math.log10(1.0 + f / 700.0))


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """(n_fft // 2 + 1, n_mels) triangular filters, equally spaced on the HTK mel scale."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)  # (n_mels + 2,) Hz
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rise = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    fall = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return torch.clamp(torch.minimum(rise, fall), min=0.0).float()


def valid_frames(x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """(B, M) bool, True at each utterance's first ``lengths`` frames of ``x`` (B, M, F) (None: all)."""
    if lengths is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]


def normalize_per_utterance(x: Tensor, lengths: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per feature over each utterance's first ``lengths`` frames.

    x: (B, M, F); lengths: (B,) valid frames (None: all). Padded frames are set to 0.
    """
    w = valid_frames(x, lengths)[..., None].to(x.dtype)
    count = w.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * w).sum(1, keepdim=True) / count
    var = ((x - mean).pow(2) * w).sum(1, keepdim=True) / count
    return ((x - mean) / (var + eps).sqrt()) * w


class FrozenNormalization(nn.Module):
    """Per-dimension ``(x - mean) / sqrt(var + eps)`` with statistics estimated once, then frozen.

    Buffers (saved with the model, never trained): ``mean`` and ``var`` (F,) of the frames
    seen so far, ``frames`` (long: how many) and ``frozen`` (bool). :meth:`update` merges
    the valid frames of a batch into the statistics (exactly, as if all frames had been
    seen at once) until ``frames >= limit``, after which they are frozen and never change
    again; :meth:`fit` sets them from one batch and freezes them at once. :meth:`forward`
    only applies them.
    """

    def __init__(self, num_features: int, limit: int = 2000, eps: float = 1e-5) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"limit must be >= 1 frame (got {limit})")
        self.limit, self.eps = limit, eps
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("var", torch.ones(num_features))
        self.register_buffer("frames", torch.zeros((), dtype=torch.long))
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))

    @property
    def is_frozen(self) -> bool:
        return bool(self.frozen)

    @property
    def has_statistics(self) -> bool:
        """Whether any frame has been seen (``frames > 0``)."""
        return int(self.frames) > 0

    @torch.no_grad()
    def update(self, x: Tensor, lengths: Tensor | None = None) -> None:
        """Merge the valid frames of ``x`` (B, M, F) (``lengths``: (B,) valid frames; None: all)
        into the statistics, in float64; freeze them once ``limit`` frames have been seen.
        A no-op once frozen."""
        if self.is_frozen:
            return
        batch = x[valid_frames(x, lengths)].double()  # (N, F)
        n_b = batch.shape[0]
        if n_b == 0:
            return
        n_a = int(self.frames)
        mean_b = batch.mean(0)
        m2_b = (batch - mean_b).pow(2).sum(0)
        mean_a, m2_a = self.mean.double(), self.var.double() * n_a
        n = n_a + n_b
        delta = mean_b - mean_a
        self.mean.copy_(mean_a + delta * (n_b / n))
        self.var.copy_((m2_a + m2_b + delta.pow(2) * (n_a * n_b / n)) / n)  # Chan et al.'s pairwise merge
        self.frames.fill_(n)
        if n >= self.limit:
            self.frozen.fill_(True)

    @torch.no_grad()
    def fit(self, x: Tensor, lengths: Tensor | None = None) -> None:
        """Set the statistics from the valid frames of ``x`` alone and freeze them (whatever
        ``limit`` says); a ``ValueError`` if there is no valid frame."""
        if not bool(valid_frames(x, lengths).any()):
            raise ValueError("no valid frame to estimate the normalisation statistics from")
        self.frames.zero_()
        self.frozen.fill_(False)
        self.update(x, lengths)
        self.frozen.fill_(True)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, M, F) -> normalised frames in float32; padded frames (beyond ``lengths``) set to 0."""
        if not self.has_statistics:
            raise RuntimeError(
                "the normalisation statistics have not been estimated yet: run a train-mode "
                "forward (which estimates them) or fit them first (BestRQObjective.fit_normalization)"
            )
        w = valid_frames(x, lengths)[..., None].to(torch.float32)
        return (x.float() - self.mean.float()) / (self.var.float() + self.eps).sqrt() * w


class LogMel(nn.Module):
    """``wave (B, S) -> (B, M, n_mels)`` natural-log mel energies, ``M = floor((S - 400) / 160) + 1``."""

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16000,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        floor: float = 1e-6,
    ) -> None:
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
            spec = torch.stft(
                wave.float(),
                self.n_fft,
                hop_length=self.hop,
                win_length=self.win,
                window=self.window,
                center=False,
                return_complex=True,
            )  # (B, F, M)
            power = spec.real.pow(2) + spec.imag.pow(2)
            return torch.log(torch.einsum("bfm,fn->bmn", power, self.fbank) + self.floor)

    def encoder_frames(
        self, wave: Tensor, frames: int, frame_stride: int, sample_padding: Tensor | None = None
    ) -> Tensor:
        """(B, S) -> (B, frames, stack · n_mels) log-mel frames stacked onto the encoder's frames.

        ``frames`` is the encoder's T for this batch; ``frame_stride`` its hop J in samples
        (a multiple of the mel hop). Padded samples (``sample_padding`` True) count as zeros.
        """
        if frame_stride % self.hop:
            raise ValueError(
                f"the encoder's frame stride ({frame_stride} samples) must be a multiple of the "
                f"log-mel hop ({self.hop} samples) to stack mel frames onto encoder frames"
            )
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
