"""Score a fine-tuned model on a labelled split: corpus WER / CER, per-utterance records.

Decoding is the :class:`Transcriber`'s: greedy, prefix beam search, or beam search with an
n-gram LM (:class:`~wav2vec2_lite.asr.decode.DecodingConfig`); ``w2v2-evaluate`` is the CLI.

On the synthesized demo corpus the scores also split by sentence kind (``by_kind``): the closed
command domain (a few dozen words) is where WER means something for a small model, while on
open-vocabulary sentences it stays near 100 % long after CER has started to fall.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from wav2vec2_lite.asr.metrics import ErrorCounts, char_errors, word_errors
from wav2vec2_lite.asr.transcribe import Transcriber
from wav2vec2_lite.data.manifest import ltr_to_text, read_labels, read_manifest

__all__ = [
    "EvalResult",
    "by_kind",
    "evaluate_split",
    "transcribe_split",
    "score_hypotheses",
    "sentence_kinds",
    "read_references",
]


@dataclass
class EvalResult:
    wer: float
    cer: float
    utterances: int
    hypotheses: list[str]
    references: list[str]
    paths: list[str] = field(default_factory=list)
    """Audio paths as the manifest names them, one per hypothesis."""
    failed: dict[str, str] = field(default_factory=dict)
    """path -> why, for each utterance that could not be transcribed (scored as an empty hypothesis)."""
    word_counts: ErrorCounts = field(default_factory=ErrorCounts)
    """Corpus word errors (substitutions, insertions, deletions, reference words): ``wer`` is their rate."""
    char_counts: ErrorCounts = field(default_factory=ErrorCounts)
    """Corpus character errors: ``cer`` is their rate."""

    def to_dict(self) -> dict:
        return {"wer": self.wer, "cer": self.cer, "utterances": self.utterances, "failed": len(self.failed)}

    def records(self, kinds: dict[str, str] | None = None) -> list[dict]:
        """One record per utterance: path, ref, hyp, word and character errors (and kind, error)."""
        out = []
        for path, ref, hyp in zip(self.paths, self.references, self.hypotheses):
            w, c = word_errors(ref, hyp), char_errors(ref, hyp)
            rec = {
                "path": path,
                "ref": ref,
                "hyp": hyp,
                "word_errors": w.errors,
                "words": w.ref_len,
                "char_errors": c.errors,
                "chars": c.ref_len,
            }
            if kinds and path in kinds:
                rec["kind"] = kinds[path]
            if path in self.failed:
                rec["error"] = self.failed[path]
            out.append(rec)
        return out


def score_hypotheses(
    hyps: list[str], refs: list[str], paths: list[str], failed: dict[str, str] | None = None
) -> EvalResult:
    """Corpus WER/CER of hypotheses already made (``failed``: path -> why, scored as empty)."""
    w, c = word_errors(refs, hyps), char_errors(refs, hyps)
    return EvalResult(
        wer=w.rate,
        cer=c.rate,
        utterances=len(refs),
        hypotheses=hyps,
        references=refs,
        paths=paths,
        failed=failed or {},
        word_counts=w,
        char_counts=c,
    )


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
                raise ValueError(
                    f"{index}:{line_no}: not an utterance record with 'path' and 'kind' ({e})"
                ) from e
    return kinds


def by_kind(result: EvalResult, kinds: dict[str, str]) -> dict[str, EvalResult]:
    """``result`` rescored per sentence kind (corpus-level rates within each kind); utterances
    missing from ``kinds`` are left out."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(result.paths):
        if path in kinds:
            groups.setdefault(kinds[path], []).append(i)
    return {
        kind: score_hypotheses(
            [result.hypotheses[i] for i in idx],
            [result.references[i] for i in idx],
            [result.paths[i] for i in idx],
        )
        for kind, idx in sorted(groups.items())
    }


def read_references(manifest_dir: str | Path, split: str, labels: str = "wrd"):
    """``(manifest, reference texts)`` of ``SPLIT.tsv`` and ``SPLIT.wrd`` (or ``.ltr``), checked to align."""
    manifest_dir = Path(manifest_dir)
    manifest = read_manifest(manifest_dir / f"{split}.tsv")
    label_path = manifest_dir / f"{split}.{labels}"
    refs = read_labels(label_path)
    if labels == "ltr":
        refs = [ltr_to_text(r) for r in refs]
    if len(refs) != len(manifest.paths):
        raise ValueError(
            f"{label_path}: {len(refs)} lines for {len(manifest.paths)} utterances in {split}.tsv"
        )
    return manifest, refs


def transcribe_split(
    model: str | Path | Transcriber,
    manifest_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    *,
    progress: bool = False,
) -> tuple[list[str], list[str], dict[str, str]]:
    """``(paths, hypotheses, failed)`` for the first ``limit`` rows of ``SPLIT.tsv``, unscored.

    An utterance that cannot be transcribed gets an empty hypothesis and its path -> why in
    ``failed``, so that scoring never silently leaves it out.
    """
    tr = model if isinstance(model, Transcriber) else Transcriber.from_path(model)
    manifest = read_manifest(Path(manifest_dir) / f"{split}.tsv")
    paths = manifest.paths if limit is None else manifest.paths[:limit]
    hyps, failed = [], {}
    for p in tqdm(paths, desc=f"transcribe {split}", unit="utt", disable=not progress, leave=False):
        try:
            hyps.append(tr.transcribe_file(manifest.root / p).text)
        except Exception as e:  # noqa: BLE001 - an empty hypothesis, reported
            hyps.append("")
            failed[p] = " ".join(str(e).split()).removeprefix(f"{manifest.root / p}: ") or type(e).__name__
    return list(paths), hyps, failed


def evaluate_split(
    model: str | Path | Transcriber,
    manifest_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    *,
    labels: str = "wrd",
    progress: bool = False,
) -> EvalResult:
    """Transcribe ``SPLIT.tsv`` one utterance at a time (:func:`transcribe_split`) and score
    against ``SPLIT.wrd``.

    ``model``: a :class:`Transcriber` (its decoding settings apply) or any checkpoint path it
    loads. An utterance that cannot be transcribed counts as an empty hypothesis and is listed
    in ``failed``, so the corpus rates never silently leave it out.
    """
    _, refs = read_references(manifest_dir, split, labels)  # checked before the slow part
    paths, hyps, failed = transcribe_split(model, manifest_dir, split, limit, progress=progress)
    return score_hypotheses(hyps, refs[: len(paths)], paths, failed)
