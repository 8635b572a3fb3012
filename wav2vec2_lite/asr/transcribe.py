"""Transcribe audio with a fine-tuned CTC model: files or a manifest -> text (+ word timings).

Loads from a run folder (``RUN/checkpoints/best`` or ``last``), a saved model folder
(``model.safetensors`` + ``config.json``), a ``model.safetensors`` path, or a Hugging
Face folder (``Wav2Vec2ForCTC`` + ``vocab.json``). Long files are transcribed in
overlapping windows, so memory stays bounded whatever the duration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wav2vec2_lite.asr.chunking import chunked_logits
from wav2vec2_lite.data.audio import load_audio, normalize as normalize_wave
from wav2vec2_lite.data.manifest import read_manifest
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.asr.decode import greedy_decode_with_timings
from wav2vec2_lite.models import Wav2Vec2ForCTC
from wav2vec2_lite.serialization import find_model_folder

__all__ = ["Transcriber", "Transcript", "resolve_model_folder"]

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "dict.ltr.txt")


@dataclass
class Transcript:
    path: str
    text: str
    words: list[dict[str, Any]]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "text": self.text, "duration_s": round(self.duration_s, 3), "words": self.words}


def resolve_model_folder(path: str | Path) -> Path:
    """The folder holding the weights: a run dir's best (else last) checkpoint, or the path itself."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path.parent
    folder = find_model_folder(path)  # HF folders hold a config.json too
    if folder is not None:
        return folder
    raise FileNotFoundError(f"{path}: no model found (expected a run folder with checkpoints/best or last, "
                            f"a folder with config.json + model.safetensors, or a Hugging Face folder)")


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
    raise FileNotFoundError(f"{folder}: no tokenizer ({', '.join(TOKENIZER_FILES)}) next to the model or in the run")


class Transcriber:
    """Greedy CTC transcription of whole files, chunked past ``chunk_s`` seconds."""

    def __init__(self, model: Wav2Vec2ForCTC, tokenizer: CharTokenizer, *, normalize: bool = False,
                 device: str = "cpu", chunk_s: float = 30.0, overlap_s: float = 4.0, sample_rate: int = 16000) -> None:
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} symbols; the model's CTC head has {model.config.vocab_size}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.normalize = normalize
        self.device = device
        self.chunk_s, self.overlap_s, self.sample_rate = chunk_s, overlap_s, sample_rate

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> "Transcriber":
        folder = resolve_model_folder(path)
        info = json.loads((folder / "config.json").read_text())
        if "model_class" in info:  # ours
            from wav2vec2_lite.serialization import load_model

            model = load_model(folder)
            if not isinstance(model, Wav2Vec2ForCTC):
                raise TypeError(f"{folder}: holds a {info['model_class']}, not a fine-tuned Wav2Vec2ForCTC")
            normalize = info.get("metadata", {}).get("normalize", model.config.feat_extract_norm == "layer")
        else:  # a Hugging Face folder
            from wav2vec2_lite.interop.hf import from_hf

            model = from_hf(folder)
            pre = folder / "preprocessor_config.json"
            normalize = json.loads(pre.read_text()).get("do_normalize", False) if pre.is_file() else False
        kwargs.setdefault("normalize", bool(normalize))
        return cls(model, _find_tokenizer(folder), **kwargs)

    @torch.no_grad()
    def logits(self, wave: torch.Tensor) -> torch.Tensor:
        """(S,) wave -> (T, vocab) logits, in windows when longer than ``chunk_s``."""
        if self.normalize:
            wave = normalize_wave(wave)
        fn = lambda w: self.model(w.to(self.device)).logits.cpu()  # noqa: E731
        cfg = self.model.config
        if wave.shape[0] <= self.chunk_s * self.sample_rate:
            return fn(wave[None])[0]
        return chunked_logits(
            fn, wave, chunk_s=self.chunk_s, overlap_s=self.overlap_s, sample_rate=self.sample_rate,
            frame_stride=cfg.frame_stride, receptive_field=cfg.receptive_field,
            num_frames_fn=lambda n: int(self.model.feature_output_lengths(torch.tensor([n]))[0]),
        )

    def transcribe_wave(self, wave: torch.Tensor, path: str = "<array>") -> Transcript:
        logits = self.logits(wave)
        text, words = greedy_decode_with_timings(
            logits, self.tokenizer.vocab, frame_stride_s=self.model.config.frame_stride / self.sample_rate
        )
        return Transcript(path=path, text=text, words=words, duration_s=wave.shape[0] / self.sample_rate)

    def transcribe_file(self, path: str | Path) -> Transcript:
        wave = torch.from_numpy(load_audio(path, sample_rate=self.sample_rate, mono="mix", resample="soxr"))
        return self.transcribe_wave(wave, str(path))

    def transcribe_manifest(self, tsv: str | Path, limit: int | None = None) -> list[Transcript]:
        manifest = read_manifest(tsv)
        paths = [manifest.root / p for p in manifest.paths][:limit]
        return [self.transcribe_file(p) for p in paths]
