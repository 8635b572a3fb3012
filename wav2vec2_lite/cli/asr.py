"""``w2v2-transcribe``, ``w2v2-evaluate``, ``w2v2-export-hf``: the tools that run a fine-tuned model."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

from wav2vec2_lite.cli.common import (
    _TRUST_HINT,
    EXIT_PARTIAL,
    EXIT_USAGE,
    _add_checkpoint_options,
    _add_decoding_options,
    _add_dtype_option,
    _add_overwrite_option,
    _check_device,
    _check_model_path,
    _decoding,
    _dtype_note,
    _loading_model,
    _Parser,
    _report_failure,
    _reported,
    console_script,
)
from wav2vec2_lite.tools.output_dir import claim_output_dir


# --------------------------------------------------------------------------------- transcription
@console_script("w2v2-transcribe")
def transcribe(argv: list[str] | None = None) -> None:
    """``w2v2-transcribe MODEL INPUT...``: text (or JSON with word timings) for audio files, folders
    (searched recursively) and .tsv manifests, each result printed as soon as it is done.

    MODEL is a run folder, a saved model folder, a Hugging Face folder or a fairseq fine-tuned
    .pt (with --dict, or its dict.ltr.txt beside it). Long files are transcribed in overlapping
    windows (bounded memory). Stereo files are averaged to mono and other sample rates
    resampled (soxr), with a note on stderr. A bad input is one error line on stderr (with
    --json, an {"path", "error"} record on stdout) and the others are still transcribed.
    Exit status: 0 all transcribed, 1 some failed, 2 usage error or none transcribed.
    """
    prog = "w2v2-transcribe"
    p = _Parser(prog, transcribe.__doc__)
    p.add_argument("model", help="run dir, model folder, Hugging Face folder or fairseq fine-tuned .pt")
    p.add_argument("audio", nargs="*", help="audio files (wav/flac/ogg), folders of them, or .tsv manifests")
    _add_checkpoint_options(p)
    p.add_argument("--manifest", action="append", default=[], help="a fairseq TSV manifest (repeatable)")
    p.add_argument("--limit", type=int, help="at most this many rows of each manifest")
    p.add_argument(
        "--json", action="store_true", help="JSON lines (with per-word timings when decoding greedily)"
    )
    p.add_argument("--chunk-s", type=float, default=30.0, help="window length for long files (seconds)")
    p.add_argument("--overlap-s", type=float, default=4.0, help="overlap between windows (seconds)")
    p.add_argument("--device", default="cpu")
    _add_dtype_option(p)
    _add_decoding_options(p)
    args = p.parse_intermixed_args(argv)
    inputs = args.audio + args.manifest
    if not inputs:
        p.error("give audio files, folders or manifests")
    # start-up: soundfile and the ASR stack load after --help and usage errors, and never for the other w2v2-*
    from wav2vec2_lite.asr.transcribe import Failure, Transcriber, transcribe_all

    with _reported(prog, args.debug, _TRUST_HINT):
        _check_device(args.device)
        _dtype_note(prog, args.dtype, args.device)
        with _loading_model(args.model):
            tr = Transcriber.from_path(
                args.model,
                dictionary=args.dict,
                trust=args.trust_pickle,
                chunk_s=args.chunk_s,
                overlap_s=args.overlap_s,
                device=args.device,
                decoding=_decoding(args),
                dtype=args.dtype,
                compile=args.compile,
            )
    done = failed = 0
    for out in transcribe_all(tr, inputs, limit=args.limit):
        if isinstance(out, Failure):
            failed += 1
            _report_failure(prog, out, args.json, args.debug)
            continue
        done += 1
        if out.notice:
            sys.stderr.write(f"{prog}: note: {out.notice}\n")
        sys.stdout.write((json.dumps(out.to_dict()) if args.json else f"{out.path}\t{out.text}") + "\n")
        sys.stdout.flush()
    if failed:
        sys.stderr.write(f"{prog}: {failed} of {done + failed} inputs failed\n")
        raise SystemExit(EXIT_PARTIAL if done else EXIT_USAGE)


# --------------------------------------------------------------------------------- evaluation
@console_script("w2v2-evaluate")
def evaluate(argv: list[str] | None = None) -> None:
    """``w2v2-evaluate MODEL --data DIR``: corpus WER/CER of a fine-tuned model on a labelled split
    (SPLIT.tsv + SPLIT.wrd), by sentence kind where the corpus records it, greedy or beam search
    with an optional n-gram LM. With --out, writes summary.json (rates, error counts, decoder,
    dtype, model) and utterances.jsonl (path, ref, hyp, errors). An utterance that cannot be
    transcribed is named on stderr and scored as an empty hypothesis (exit 1)."""
    prog = "w2v2-evaluate"
    p = _Parser(prog, evaluate.__doc__)
    p.add_argument(
        "model", help="fine-tuned run dir or model folder, Hugging Face folder or fairseq fine-tuned .pt"
    )
    p.add_argument("--data", required=True, help="folder of SPLIT.tsv and SPLIT.wrd (or .ltr)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--labels", choices=("wrd", "ltr"), default="wrd", help="reference file (default: wrd)")
    p.add_argument("--limit", type=int, help="score the first N utterances only")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write summary.json and utterances.jsonl here: a new or empty "
        "folder, or one w2v2-evaluate wrote (replaced)",
    )
    _add_overwrite_option(p, "--out")
    p.add_argument("--device", default="cpu")
    _add_dtype_option(p)
    _add_checkpoint_options(p)
    _add_decoding_options(p)
    args = p.parse_intermixed_args(argv)
    # start-up: soundfile and the ASR stack load after --help and usage errors, and never for the other w2v2-*
    from wav2vec2_lite.asr.evaluate import by_kind, evaluate_split, sentence_kinds
    from wav2vec2_lite.asr.transcribe import Transcriber

    with _reported(prog, args.debug, _TRUST_HINT):
        _check_device(args.device)
        _dtype_note(prog, args.dtype, args.device)
        _check_model_path(args.model)
        out = (
            claim_output_dir(
                args.out, prog, overwrite=args.overwrite, inputs=[args.model, args.data, args.dict]
            )
            if args.out
            else None
        )
        with out or nullcontext():  # --out gets the whole result or, on an error or an interrupt, nothing
            with _loading_model(args.model):
                tr = Transcriber.from_path(
                    args.model,
                    dictionary=args.dict,
                    trust=args.trust_pickle,
                    device=args.device,
                    decoding=_decoding(args),
                    dtype=args.dtype,
                    compile=args.compile,
                )
            result = evaluate_split(
                tr, args.data, args.split, args.limit, labels=args.labels, progress=sys.stderr.isatty()
            )
            kinds = sentence_kinds(args.data)
            parts = by_kind(result, kinds)
            _print_evaluation(prog, args, tr, result, parts)  # before writing: a failed write keeps them
            if out is not None:
                try:
                    _write_evaluation(out.staging, args, tr, result, kinds, parts)
                except OSError as e:
                    e.add_note(f"--out {args.out} was not written; the scores above are the result")
                    raise
    if out is not None:
        print(f"wrote {out.path / 'summary.json'} and {out.path / 'utterances.jsonl'}")
    if result.failed:
        sys.stderr.write(
            f"{prog}: {len(result.failed)} of {result.utterances} utterances failed (scored as empty)\n"
        )
        raise SystemExit(EXIT_PARTIAL)


def _print_evaluation(prog: str, args, tr, result, parts) -> None:
    """The failed utterances on stderr; the rates, overall and by kind, on stdout."""
    for path, why in result.failed.items():
        sys.stderr.write(f"{prog}: error: {path}: {why}\n")
    decoding = tr.decoding.to_dict()
    print(
        f"{args.split}: WER {100 * result.wer:.2f} %  CER {100 * result.cer:.2f} %  "
        f"({result.utterances} utterances; "
        f"{' '.join(f'{k}={v}' for k, v in decoding.items())}; {tr.dtype})"
    )
    for kind, part in parts.items():
        print(
            f"  {kind}: WER {100 * part.wer:.2f} %  CER {100 * part.cer:.2f} %  "
            f"({part.utterances} utterances)"
        )
    sys.stdout.flush()


def _write_evaluation(folder: Path, args, tr, result, kinds, parts) -> None:
    """Write ``summary.json`` (rates, error counts, decoder, dtype, model) and ``utterances.jsonl``
    in ``folder``."""
    summary = {
        "model": str(args.model),
        "data": str(args.data),
        "split": args.split,
        "labels": args.labels,
        **result.to_dict(),
        "word_errors": vars(result.word_counts),
        "char_errors": vars(result.char_counts),
        "decoding": tr.decoding.to_dict(),
        "dtype": tr.dtype,
        "by_kind": {k: v.to_dict() for k, v in parts.items()},
        "failed_utterances": result.failed,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    with open(folder / "utterances.jsonl", "w", encoding="utf-8") as f:
        for rec in result.records(kinds):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------- export
@console_script("w2v2-export-hf")
def export_hf(argv: list[str] | None = None) -> None:
    """``w2v2-export-hf MODEL OUT``: a fine-tuned run -> a Hugging Face folder that
    ``transformers.pipeline("automatic-speech-recognition", model=OUT)`` loads offline."""
    prog = "w2v2-export-hf"
    p = _Parser(prog, export_hf.__doc__)
    p.add_argument(
        "model",
        help="fine-tuned run dir or model folder (with its dict.ltr.txt), Hugging Face folder "
        "or fairseq fine-tuned .pt",
    )
    p.add_argument(
        "out",
        help="output folder: new, empty, or an earlier export (replaced); never a training run "
        "folder or a folder inside one",
    )
    _add_overwrite_option(p, "OUT")
    _add_checkpoint_options(p)
    args = p.parse_intermixed_args(argv)
    # start-up: soundfile and the ASR stack load after --help and usage errors, and never for the other w2v2-*
    from wav2vec2_lite.asr.transcribe import Transcriber
    from wav2vec2_lite.interop.hf_export import export_ctc_to_hf

    with _reported(prog, args.debug, _TRUST_HINT):
        _check_model_path(args.model)
        out = claim_output_dir(args.out, prog, overwrite=args.overwrite, inputs=[args.model, args.dict])
        with out:  # written beside OUT, then swapped in whole: no file of an earlier content stays
            with _loading_model(args.model):
                tr = Transcriber.from_path(args.model, dictionary=args.dict, trust=args.trust_pickle)
            export_ctc_to_hf(tr.model, tr.tokenizer, out.staging)
    print(f"wrote {out.path}")
