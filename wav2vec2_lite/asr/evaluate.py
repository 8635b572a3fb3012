"""Score a fine-tuned model on a labelled split: corpus WER / CER with greedy decoding.

On the synthesized demo corpus the scores also split by sentence kind (``by_kind``): the closed
command domain (a few dozen words) is where WER means something for a small model, while on
open-vocabulary sentences it stays near 100 % long after CER has started to fall.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from wav2vec2_lite.data.manifest import read_labels, read_manifest
from wav2vec2_lite.asr.metrics import char_errors, word_errors
from wav2vec2_lite.asr.transcribe import Transcriber

__all__ = ["EvalResult", "by_kind", "evaluate_split", "sentence_kinds"]


@dataclass
class EvalResult:
    wer: float
    cer: float
    utterances: int
    hypotheses: list[str]
    references: list[str]
    paths: list[str] = field(default_factory=list)
    """Audio paths as the manifest names them, one per hypothesis."""

    def to_dict(self) -> dict:
        return {"wer": self.wer, "cer": self.cer, "utterances": self.utterances}


def _score(hyps: list[str], refs: list[str], paths: list[str]) -> EvalResult:
    return EvalResult(wer=word_errors(refs, hyps).rate, cer=char_errors(refs, hyps).rate, utterances=len(refs),
                      hypotheses=hyps, references=refs, paths=paths)


def sentence_kinds(manifest_dir: str | Path) -> dict[str, str]:
    """Manifest path -> sentence kind (``general`` | ``domain``) from a synthesized corpus's
    ``utterances.jsonl``; ``{}`` for a corpus without one."""
    index = Path(manifest_dir) / "utterances.jsonl"
    if not index.is_file():
        return {}
    kinds = {}
    with open(index, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                kinds[rec["path"]] = rec["kind"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{index}:{line_no}: not an utterance record with 'path' and 'kind' ({e})") from e
    return kinds


def by_kind(result: EvalResult, kinds: dict[str, str]) -> dict[str, EvalResult]:
    """``result`` rescored per sentence kind (corpus-level rates within each kind); utterances
    missing from ``kinds`` are left out."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(result.paths):
        if path in kinds:
            groups.setdefault(kinds[path], []).append(i)
    return {kind: _score([result.hypotheses[i] for i in idx], [result.references[i] for i in idx],
                         [result.paths[i] for i in idx])
            for kind, idx in sorted(groups.items())}


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
    paths = manifest.paths[:n]
    hyps = [tr.transcribe_file(manifest.root / p).text for p in paths]
    return _score(hyps, refs[:n], paths)
