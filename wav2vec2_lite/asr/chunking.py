"""Long-file inference in bounded memory: overlapping windows, stitched at the middle of each overlap.

    logits = chunked_logits(lambda w: model(w).logits, wave)          # wave (S,) -> (T, V)
    text = greedy_decode(logits[None], None, vocab)[0]

    # a file read from disk: only one window of samples and one of logits held at a time
    for piece in iter_chunked_logits(fn, stream.blocks(), num_samples):  # piece (t_i, V)
        decoder.feed(piece)

Windows start on frame boundaries (multiples of ``frame_stride`` samples), so frame
``j`` of a window that starts at frame ``s`` covers the same samples as frame
``s + j`` of the whole file. Consecutive windows overlap by ``overlap_s``; each frame
of an overlap is taken from the window in which it lies further from the window's
edge, i.e. the cut is at the middle of the overlap. The result therefore has exactly
the frames of a full-file pass, and equals it wherever the model's context (in
frames, on either side) is at most ``floor(overlap_frames / 2)``: true of the conv
feature encoder and of local layers, an approximation for global self-attention and
for normalisation over the whole utterance (e.g. BASE's group norm on the first conv).

The last window is moved back to end at the last frame, so it is a full window
(more context for the model) rather than a short remainder.

:func:`iter_chunked_logits` is the same computation on a wave that arrives in blocks (e.g.
:class:`~wav2vec2_lite.data.audio.AudioStream`), giving each window's kept frames as soon as
they are computed: with a decoder that consumes them in order (greedy), memory is one
window's, whatever the file's length. :func:`chunked_logits` gathers them into one tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "Window",
    "conv_num_frames",
    "plan_windows",
    "window_waves",
    "iter_chunked_logits",
    "chunked_logits",
]


def conv_num_frames(num_samples: int, receptive_field: int = 400, frame_stride: int = 320) -> int:
    """Frames of an unpadded conv stack: ``floor((S - receptive_field) / stride) + 1`` (0 if S < rf)."""
    if num_samples < receptive_field:
        return 0
    return (num_samples - receptive_field) // frame_stride + 1


@dataclass(frozen=True)
class Window:
    """One model call: samples ``[sample_start, sample_end)`` give frames
    ``[frame_start, frame_start + num_frames)`` of the file, of which
    ``[keep_start, keep_end)`` go to the output."""

    sample_start: int
    sample_end: int
    frame_start: int
    num_frames: int
    keep_start: int
    keep_end: int


def plan_windows(
    num_samples: int,
    *,
    chunk_s: float = 20.0,
    overlap_s: float = 2.0,
    sample_rate: int = 16000,
    frame_stride: int = 320,
    receptive_field: int = 400,
    num_frames_fn: Callable[[int], int] | None = None,
) -> list[Window]:
    """The windows :func:`chunked_logits` runs; their kept ranges tile ``[0, T)`` in order.

    A window holds at most ``round(chunk_s * sample_rate)`` samples. Consecutive
    windows overlap by at least ``round(overlap_s * sample_rate / frame_stride)`` frames.
    """
    nf = num_frames_fn or (lambda n: conv_num_frames(n, receptive_field, frame_stride))
    window_samples = round(chunk_s * sample_rate)
    overlap = round(overlap_s * sample_rate / frame_stride)
    total = int(nf(num_samples))
    if total <= 0:
        raise ValueError(
            f"the waveform of {num_samples} samples is too short for one frame "
            f"(receptive field {receptive_field} samples)"
        )
    per_window = int(nf(window_samples))
    if per_window <= 0:
        raise ValueError(f"chunk_s={chunk_s} s ({window_samples} samples) is shorter than one frame")
    if overlap < 0 or overlap >= per_window:
        raise ValueError(
            f"overlap_s={overlap_s} s is {overlap} frames; it must be >= 0 and smaller than "
            f"a window of chunk_s={chunk_s} s ({per_window} frames)"
        )

    def samples_for(n_frames: int) -> int:
        # samples that frames [0, n) need: the first n_frames' worth, no trailing remainder
        n = (n_frames - 1) * frame_stride + receptive_field
        while int(nf(n)) < n_frames:  # num_frames_fn may count frames differently
            n += 1
        return n

    if total <= per_window:  # one window, the whole file
        starts = [0]
    else:
        step = per_window - overlap
        starts = list(range(0, total - per_window, step)) + [total - per_window]
    spans = [(s, min(per_window, total - s)) for s in starts]  # (frame_start, num_frames)

    windows = []
    for i, (s, n) in enumerate(spans):
        keep_start = 0 if i == 0 else (s + spans[i - 1][0] + spans[i - 1][1]) // 2
        keep_end = total if i == len(spans) - 1 else (spans[i + 1][0] + s + n) // 2
        a = s * frame_stride
        b = min(num_samples, a + samples_for(n))
        windows.append(Window(a, b, s, n, keep_start, keep_end))
    return windows


def window_waves(windows: Iterable[Window], blocks: Iterable) -> Iterator[tuple[Window, torch.Tensor]]:
    """Each window's samples ``(s,)``, cut from consecutive blocks ``(b,)`` of the wave
    (tensors or arrays, any lengths). Held at once: the blocks that cover one window, and the
    window. Windows must not go back (``sample_start`` non-decreasing), as :func:`plan_windows`'
    do not."""
    held: list[torch.Tensor] = []  # consecutive blocks, the first starting at sample `start`
    start = end = 0
    source = iter(blocks)
    for w in windows:
        if w.sample_start < start:
            raise ValueError(f"windows go back: samples from {w.sample_start}, after {start} were dropped")
        while end < w.sample_end:
            block = next(source, None)
            if block is None:
                raise ValueError(
                    f"the wave ends at sample {end}; a window needs samples "
                    f"[{w.sample_start}, {w.sample_end})"
                )
            block = torch.as_tensor(block)
            if block.dim() != 1:
                raise ValueError(f"blocks must be (b,), found shape {tuple(block.shape)}")
            held.append(block)
            end += block.shape[0]
        while held and start + held[0].shape[0] <= w.sample_start:  # wholly before this window
            start += held.pop(0).shape[0]
        wave = held[0] if len(held) == 1 else torch.cat(held)
        yield w, wave[w.sample_start - start : w.sample_end - start]


def iter_chunked_logits(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    blocks: Iterable,
    num_samples: int,
    *,
    chunk_s: float = 20.0,
    overlap_s: float = 2.0,
    sample_rate: int = 16000,
    frame_stride: int = 320,
    receptive_field: int = 400,
    num_frames_fn: Callable[[int], int] | None = None,
) -> Iterator[torch.Tensor]:
    """:func:`chunked_logits` of a wave given as consecutive blocks, one window at a time.

    Args:
        blocks: the wave's ``num_samples`` samples in consecutive ``(b,)`` blocks, read as
            the windows need them (e.g. ``AudioStream.blocks()``).
        the others: as :func:`chunked_logits`.
    Yields:
        each window's kept logits ``(t_i, V)``, in order; concatenated they are
        :func:`chunked_logits`' output, exactly. ``logits_fn`` runs under
        ``torch.no_grad()``; the caller's grad mode is untouched between pieces.
    """
    windows = plan_windows(
        num_samples,
        chunk_s=chunk_s,
        overlap_s=overlap_s,
        sample_rate=sample_rate,
        frame_stride=frame_stride,
        receptive_field=receptive_field,
        num_frames_fn=num_frames_fn,
    )
    yield from _kept_logits(logits_fn, windows, blocks)


def _kept_logits(logits_fn, windows: list[Window], blocks: Iterable) -> Iterator[torch.Tensor]:
    """Each window's kept frames of ``logits_fn``'s output ``(t_i, V)``, the shape checked."""
    for w, wave in window_waves(windows, blocks):
        with torch.no_grad():
            logits = logits_fn(wave.unsqueeze(0))
        if logits.dim() != 3 or logits.shape[0] != 1 or logits.shape[1] != w.num_frames:
            raise ValueError(
                f"logits_fn returned shape {tuple(logits.shape)} for samples "
                f"[{w.sample_start}, {w.sample_end}); expected (1, {w.num_frames}, V) — "
                f"check frame_stride/receptive_field or pass num_frames_fn"
            )
        yield logits[0, w.keep_start - w.frame_start : w.keep_end - w.frame_start]


def chunked_logits(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    waveform: torch.Tensor,
    *,
    chunk_s: float = 20.0,
    overlap_s: float = 2.0,
    sample_rate: int = 16000,
    frame_stride: int = 320,
    receptive_field: int = 400,
    num_frames_fn: Callable[[int], int] | None = None,
) -> torch.Tensor:
    """Run ``logits_fn`` over overlapping windows of a long waveform and stitch the frames.

    Args:
        logits_fn: ``wave (1, s) -> logits (1, t, V)``, e.g. ``lambda w: model(w).logits``;
            called under ``torch.no_grad()``, one window at a time.
        waveform: ``(S,)``.
        chunk_s / overlap_s: window length and overlap in seconds.
        frame_stride / receptive_field: the feature encoder's hop and receptive field
            in samples (wav2vec 2.0: 320 and 400).
        num_frames_fn: samples -> frames of the model, when it is not
            ``floor((S - receptive_field) / frame_stride) + 1`` (e.g.
            ``lambda n: int(model.feature_output_lengths(torch.tensor([n]))[0])``).
    Returns:
        logits ``(T, V)`` with T = frames of a full-file pass. Only the output and one
        window's model output are held at any time.
    """
    if waveform.dim() != 1:
        raise ValueError(f"waveform must be (S,), found shape {tuple(waveform.shape)}")
    windows = plan_windows(
        waveform.shape[0],
        chunk_s=chunk_s,
        overlap_s=overlap_s,
        sample_rate=sample_rate,
        frame_stride=frame_stride,
        receptive_field=receptive_field,
        num_frames_fn=num_frames_fn,
    )
    out: torch.Tensor | None = None
    t = 0
    for piece in _kept_logits(logits_fn, windows, [waveform]):
        if out is None:
            out = piece.new_empty(windows[-1].keep_end, piece.shape[-1])
        out[t : t + piece.shape[0]] = piece
        t += piece.shape[0]
    assert out is not None and t == out.shape[0]
    return out
