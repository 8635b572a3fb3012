"""Transcribe audio with a fine-tuned CTC model: files, folders or manifests -> text (+ word timings).

Loads from a run folder (``RUN/checkpoints/best`` or ``last``), a saved model folder
(``model.safetensors`` + ``config.json``), a Hugging Face folder (``Wav2Vec2ForCTC`` +
``vocab.json``) or a fairseq fine-tuned ``.pt`` (+ its ``dict.ltr.txt``).

Memory: a file is read from disk twice, block by block (:class:`~wav2vec2_lite.data.audio.AudioStream`),
never whole. The first pass checks the data and measures the length, peak and (float64) mean and
variance; the second normalises each block with them (the whole-file normalisation, up to float32
rounding), feeds overlapping windows to the model (``chunk_s``, ``overlap_s``) and hands each
window's frames to the greedy decoder, which keeps only the current word's. With greedy decoding,
memory is one window's, whatever the file's length (docs/benchmarks.md: a 2-hour file peaks
within 1.2x of a 1-minute one).
Beam search and the LM decoder search over all frames at once: they hold the file's logits
``(T, V)``, 4 * V bytes per 20 ms frame (V = 32: 23 MB an hour), but not its samples; the LM
decoder also keeps its beam's hypotheses for every frame (``DecodingConfig``).

Audio policy: transcription converts what training refuses by default. Multi-channel
files are averaged to mono and other sample rates resampled (soxr); the transcript then
carries a one-line ``notice`` saying so. :func:`transcribe_all` streams a batch: each
input gives a :class:`Transcript` or a :class:`Failure` naming it, so one bad file costs
only itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wav2vec2_lite.asr.chunking import iter_chunked_logits
from wav2vec2_lite.asr.ctc_decode import GreedyTimings
from wav2vec2_lite.asr.decode import DecodingConfig
from wav2vec2_lite.compile import compile_dense
from wav2vec2_lite.data.audio import (
    AudioError,
    AudioInfo,
    AudioStream,
    audio_info,
    load_audio,
    out_of_range,
    peak_out_of_range,
)
from wav2vec2_lite.data.audio import (
    normalize as normalize_wave,
)
from wav2vec2_lite.data.manifest import ManifestError, iter_manifest, read_manifest
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.inference_dtype import cast_for_inference, inference_dtype_of
from wav2vec2_lite.interop.sources import load_any
from wav2vec2_lite.models import Wav2Vec2ForCTC

__all__ = [
    "AUDIO_SUFFIXES",
    "Failure",
    "NotACTCModelError",
    "Transcriber",
    "Transcript",
    "conversion_notice",
    "expand_inputs",
    "transcribe_all",
]

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "dict.ltr.txt")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what a folder is searched for
USER_ERRORS = (AudioError, ManifestError, OSError)  # bad input, reported without the exception's type


class NotACTCModelError(TypeError, ValueError):
    """The model folder holds another kind of model (e.g. a pretraining checkpoint): a user error."""


@dataclass
class Transcript:
    path: str
    text: str
    words: list[dict[str, Any]]
    duration_s: float
    notice: str | None = None  # what was converted to feed the model (channels mixed, resampled)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "text": self.text,
            "duration_s": round(self.duration_s, 3),
            "words": self.words,
        }
        return out if self.notice is None else {**out, "notice": self.notice}


@dataclass
class Failure:
    """An input that gave no transcript: its path (or ``manifest:line``) and why."""

    path: str
    error: str
    exception: BaseException | None = None  # kept for --debug tracebacks

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}


def _find_tokenizer(folder: Path) -> CharTokenizer:
    for base in (folder, folder.parent, folder.parent.parent):
        for name in TOKENIZER_FILES:
            p = base / name
            if p.is_file():
                if name == "tokenizer.json":
                    return CharTokenizer.load(p)
                if name == "vocab.json":
                    return CharTokenizer.from_hf_vocab(p)
                return CharTokenizer.from_dictionary(p)
    raise FileNotFoundError(
        f"{folder}: no tokenizer ({', '.join(TOKENIZER_FILES)}) next to the model or in the run"
    )


class Transcriber:
    """Greedy CTC transcription of whole files, chunked past ``chunk_s`` seconds."""

    def __init__(
        self,
        model: Wav2Vec2ForCTC,
        tokenizer: CharTokenizer,
        *,
        normalize: bool = False,
        device: str = "cpu",
        chunk_s: float = 30.0,
        overlap_s: float = 4.0,
        sample_rate: int = 16000,
        decoding: DecodingConfig | None = None,
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
    ) -> None:
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} symbols; the model's CTC head has {model.config.vocab_size}"
            )
        self.model = cast_for_inference(model.to(device), dtype)  # float32, or bf16 Linear weights
        if compile:  # the dense part, traced on the first file (wav2vec2_lite.compile)
            compile_dense(self.model)
        self.tokenizer = tokenizer
        self.decoding = decoding or DecodingConfig()
        self._decode = self.decoding.build(tokenizer.vocab)  # None: greedy, with word timings
        self.normalize = normalize
        self.device = device
        self.chunk_s, self.overlap_s, self.sample_rate = chunk_s, overlap_s, sample_rate

    @classmethod
    def from_path(
        cls, path: str | Path, *, dictionary: str | Path | None = None, trust: bool = False, **kwargs: Any
    ) -> "Transcriber":
        """A fine-tuned CTC model from any checkpoint :func:`~wav2vec2_lite.interop.sources.detect`
        accepts (our run or model folder, a Hugging Face folder, a fairseq fine-tuned ``.pt``).

        The vocabulary is ``dictionary`` if given, else the tokenizer file saved beside the model
        (``tokenizer.json``, ``vocab.json``, ``dict.ltr.txt``; for a fairseq ``.pt``, the
        ``dict.ltr.txt`` it was fine-tuned with, next to it). Input normalisation follows what the
        checkpoint records, else LayerNorm encoders (LARGE-style) normalise.
        """
        loaded = load_any(path, trust=trust)
        if not isinstance(loaded.model, Wav2Vec2ForCTC):
            raise NotACTCModelError(
                f"{loaded.source}: holds a {type(loaded.model).__name__}, not a fine-tuned "
                f"Wav2Vec2ForCTC; give a fine-tuning run or its model folder"
            )
        normalize = loaded.normalize
        if normalize is None:
            normalize = loaded.model.config.feat_extract_norm == "layer"
        kwargs.setdefault("normalize", bool(normalize))
        folder = loaded.source.path if loaded.source.path.is_dir() else loaded.source.path.parent
        tokenizer = CharTokenizer.from_dictionary(dictionary) if dictionary else _find_tokenizer(folder)
        return cls(loaded.model, tokenizer, **kwargs)

    @torch.no_grad()
    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """(S,) wave -> (T, vocab) logits, in windows when longer than ``chunk_s``."""
        if self.normalize:
            wave = normalize_wave(wave)
        pieces = list(self._logit_pieces([wave], wave.shape[0]))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _logit_pieces(self, blocks: Iterable, num_samples: int) -> Iterator[torch.Tensor]:
        """The logits ``(t_i, V)`` of a wave given in consecutive blocks ``(b,)``: one model call on
        the whole wave up to ``chunk_s`` seconds, else each window's kept frames as it is computed."""
        if num_samples <= self.chunk_s * self.sample_rate:
            wave = torch.cat([torch.as_tensor(b) for b in blocks])
            with torch.no_grad():
                logits = self._forward(wave[None])[0]
            yield logits
            return
        cfg = self.model.config
        yield from iter_chunked_logits(
            self._forward,
            blocks,
            num_samples,
            chunk_s=self.chunk_s,
            overlap_s=self.overlap_s,
            sample_rate=self.sample_rate,
            frame_stride=cfg.frame_stride,
            receptive_field=cfg.receptive_field,
            num_frames_fn=lambda n: int(self.model.feature_output_lengths(torch.tensor([n]))[0]),
        )

    def _forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(1, s) -> (1, t, V) float32 logits on the CPU."""
        return self.model(wave.to(self.device)).logits.float().cpu()

    @property
    def dtype(self) -> str:
        """The dtype the model's weights compute in: ``float32`` or ``bfloat16`` (``dtype=``)."""
        return inference_dtype_of(self.model)

    def transcribe_wave(self, wave: torch.Tensor, path: str = "<array>") -> Transcript:
        """One utterance's transcript; word timings with greedy decoding only (with beam search
        ``words`` is empty)."""
        if self.normalize:
            wave = normalize_wave(wave)
        return self._decode_pieces(self._logit_pieces([wave], wave.shape[0]), wave.shape[0], path)

    def _decode_pieces(self, pieces: Iterator[torch.Tensor], num_samples: int, path: str) -> Transcript:
        """The transcript of consecutive logits: greedy decoding consumes them piece by piece;
        beam search (with or without an LM) needs them all at once, so it gathers them."""
        duration_s = num_samples / self.sample_rate
        if self._decode is not None:
            return Transcript(
                path=path, text=self._decode(torch.cat(list(pieces))), words=[], duration_s=duration_s
            )
        greedy = GreedyTimings(self.tokenizer.vocab, self.model.config.frame_stride / self.sample_rate)
        for piece in pieces:
            greedy.feed(piece)
        text, words = greedy.result()
        return Transcript(path=path, text=text, words=words, duration_s=duration_s)

    def read_wave(self, path: str | Path) -> tuple[np.ndarray, str | None]:
        """The file as a mono wave at the model's rate (channels averaged, soxr) and a notice of what changed.

        Raises AudioError naming the file when it is unreadable, shorter than the receptive field,
        or (for a model that does not normalise its input) float samples far outside [-1, 1].
        :meth:`transcribe_file` makes the same checks without holding the wave.
        """
        info = audio_info(path)
        wave = load_audio(path, sample_rate=self.sample_rate, mono="mix", resample="soxr")
        self._check_wave(path, wave.shape[0], lambda: out_of_range(wave))
        return wave, conversion_notice(path, info, self.sample_rate)

    def _check_wave(self, path: str | Path, num_samples: int, loudness) -> None:
        field = self.model.config.receptive_field
        if num_samples < field:
            raise AudioError(
                f"{path}: {num_samples} samples at {self.sample_rate} Hz, shorter than the model's "
                f"{field}-sample receptive field; too short to transcribe"
            )
        loud = None if self.normalize else loudness()
        if loud:  # a model without input normalisation sees only saturated features: empty text
            raise AudioError(f"{path}: {loud}")

    def transcribe_file(self, path: str | Path) -> Transcript:
        """One file's transcript, read from disk in blocks (memory: the module docstring), with a
        notice when it was converted (channels averaged, resampled).

        The same checks and errors as :meth:`read_wave`, all before the model runs: a first pass
        over the file checks the data and takes its length, peak, mean and variance."""
        stream = AudioStream(path, sample_rate=self.sample_rate, mono="mix", resample="soxr")
        stats = stream.stats()
        self._check_wave(path, stats.num_samples, lambda: peak_out_of_range(stats.peak))
        blocks = stream.blocks()
        if self.normalize:
            blocks = (stats.normalize(b) for b in blocks)
        out = self._decode_pieces(self._logit_pieces(blocks, stats.num_samples), stats.num_samples, str(path))
        out.notice = conversion_notice(path, stream.info, self.sample_rate)
        return out

    def transcribe_manifest(self, tsv: str | Path, limit: int | None = None) -> list[Transcript]:
        manifest = read_manifest(tsv)
        paths = [manifest.root / p for p in manifest.paths][:limit]
        return [self.transcribe_file(p) for p in paths]


def conversion_notice(path: str | Path, info: AudioInfo, sample_rate: int) -> str | None:
    """One line saying how ``path`` was converted for the model, or None when it was used as is."""
    changes = []
    if info.channels > 1:
        changes.append(f"{info.channels} channels averaged to mono")
    if info.sample_rate != sample_rate:
        changes.append(f"resampled from {info.sample_rate} Hz to {sample_rate} Hz (soxr)")
    return f"{path}: " + ", ".join(changes) if changes else None


def expand_inputs(inputs: Iterable[str | Path], limit: int | None = None) -> Iterator[Failure | str]:
    """Audio paths to transcribe: files as given, folders searched recursively, ``.tsv`` manifests row by row.

    An input that yields no file (an empty folder, a malformed manifest line) comes out as a Failure.
    ``limit`` caps the rows taken from each manifest.
    """
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from _folder_files(path)
        elif path.suffix == ".tsv":
            yield from _manifest_files(path, limit)
        else:
            yield str(path)


def _folder_files(folder: Path) -> Iterator[Failure | str]:
    """The audio files under ``folder`` (sorted), or one Failure when there are none."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        yield Failure(str(folder), f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder or below")
    yield from (str(p) for p in files)


def _manifest_files(tsv: Path, limit: int | None) -> Iterator[Failure | str]:
    """The files a manifest lists; a malformed line is a Failure named ``manifest:line``."""
    try:
        root, rows = iter_manifest(tsv)
    except ManifestError as e:
        yield Failure(str(tsv), _reason(e, tsv), e)
        return
    n = -1
    for n, (line_no, rel, _size, error) in enumerate(rows):
        if limit is not None and n >= limit:
            return
        yield Failure(f"{tsv}:{line_no}", error) if error else str(root / rel)
    if n < 0:
        yield Failure(str(tsv), "the manifest lists no audio files (only its root line, or empty)")


def _reason(e: BaseException, path: str | Path) -> str:
    """The error as one line, without a leading ``path:`` (the record names it); the exception
    type when it is a bug's."""
    msg = " ".join(str(e).split()) or type(e).__name__
    msg = msg.removeprefix(f"{path}: ").removeprefix(f"{path}:")
    return msg if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {msg}"


def transcribe_all(
    tr: Transcriber, inputs: Iterable[str | Path], limit: int | None = None
) -> Iterator[Transcript | Failure]:
    """Each input's Transcript or Failure, one at a time, in order: one bad file costs only itself."""
    for item in expand_inputs(inputs, limit):
        if isinstance(item, Failure):
            yield item
            continue
        try:
            yield tr.transcribe_file(item)
        except Exception as e:  # noqa: BLE001 - reported as this file's failure, the batch goes on
            yield Failure(item, _reason(e, item), e)
