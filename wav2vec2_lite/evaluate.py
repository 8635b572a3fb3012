"""Score a fine-tuned model on a labelled split: corpus WER / CER with greedy decoding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wav2vec2_lite.data.manifest import read_labels, read_manifest
from wav2vec2_lite.metrics import char_errors, word_errors
from wav2vec2_lite.transcribe import Transcriber

__all__ = ["EvalResult", "evaluate_split"]


@dataclass
class EvalResult:
    wer: float
    cer: float
    utterances: int
    hypotheses: list[str]
    references: list[str]

    def to_dict(self) -> dict:
        return {"wer": self.wer, "cer": self.cer, "utterances": self.utterances}


def evaluate_split(model_path: str | Path, manifest_dir: str | Path, split: str = "test",
                   limit: int | None = None) -> EvalResult:
    """Transcribe ``SPLIT.tsv`` one utterance at a time and score against ``SPLIT.wrd``."""
    manifest_dir = Path(manifest_dir)
    tr = Transcriber.from_path(model_path)
    manifest = read_manifest(manifest_dir / f"{split}.tsv")
    refs = read_labels(manifest_dir / f"{split}.wrd")
    if len(refs) != len(manifest.paths):
        raise ValueError(f"{manifest_dir / (split + '.wrd')}: {len(refs)} lines for {len(manifest.paths)} "
                         f"utterances in {split}.tsv")
    n = len(refs) if limit is None else min(limit, len(refs))
    hyps = [tr.transcribe_file(manifest.root / p).text for p in manifest.paths[:n]]
    refs = refs[:n]
    return EvalResult(wer=word_errors(refs, hyps).rate, cer=char_errors(refs, hyps).rate, utterances=n,
                      hypotheses=hyps, references=refs)
