"""``w2v2-probe MODEL --data DIR``: per-layer linear CTC probes; a markdown table on stdout,
JSON on request.

    w2v2-probe outputs/pretrain/RUN --data data/demo --train train_10min --log-mel --json probes.json

User errors (a missing folder or split, a bad option, an unreadable or untrusted model) are one
``w2v2-probe: error: ...`` line on stderr and exit status 2 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from wav2vec2_lite.cli.common import _check_model_path, _loading_model, _reported
from wav2vec2_lite.pretrained import UnknownPretrainedError, resolve
from wav2vec2_lite.probes.protocol import ProbeError, ProbeProtocol
from wav2vec2_lite.probes.report import MARKDOWN_START
from wav2vec2_lite.probes.run import run_probes
from wav2vec2_lite.serialization import atomic_write_text
from wav2vec2_lite.tools.output_dir import OutputError, claim_output_file, starts_with

__all__ = ["build_parser", "main"]

PROG = "w2v2-probe"
# w2v2-probe never runs a checkpoint's code: the way round is a folder saved once by hand
_HINTS = {
    "load it with load_fairseq(path, trust=True), which uses full pickle": (
        "save it once as a model folder (load_fairseq(path, trust=True), then save_model) and probe "
        "that folder; w2v2-probe never runs a checkpoint's code"
    )
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        _fail(f"{message} (see {PROG} --help)")


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    d = ProbeProtocol()
    p = _Parser(
        prog=PROG,
        description="Linear CTC probes over letters (or phonemes) on the frozen output of every layer of a "
        "model (conv features and each transformer layer), of the same architecture at random init and "
        "optionally of the log-mel front end; prints per-layer valid CER.",
    )
    p.add_argument(
        "model",
        help="run folder, saved model folder, Hugging Face folder, fairseq .pt or the name of "
        "a shipped pretrained checkpoint (wav2vec2_lite.pretrained.available())",
    )
    p.add_argument(
        "--data", required=True, help="folder of SPLIT.tsv + SPLIT.ltr manifests (and dict.ltr.txt)"
    )
    p.add_argument("--train", default="train", help="training split (default: train)")
    p.add_argument("--valid", default="valid", help="validation split (default: valid)")
    p.add_argument(
        "--labels",
        default="ltr",
        help="label files SPLIT.EXT + dict.EXT.txt: ltr (letters, CER; default) "
        "or phn (phonemes, PER; python -m wav2vec2_lite.probes.phonemes writes them)",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"updates per probe (default: {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak Adam learning rate (default: {d.lr:g})")
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"training utterances per update (default: {d.batch_size})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed (default: {d.seed})")
    p.add_argument(
        "--probe-seeds",
        type=int,
        default=d.probe_seeds,
        help=f"probes per layer (seeds SEED, SEED+1, ...), averaged (default: {d.probe_seeds})",
    )
    p.add_argument(
        "--random-init-seeds",
        type=int,
        default=d.random_init_seeds,
        help=f"random-init copies to probe and average, 0 for none (default: {d.random_init_seeds})",
    )
    p.add_argument("--log-mel", action="store_true", help="also probe the log-mel front end")
    p.add_argument("--no-standardize", action="store_true", help="skip per-dimension standardisation")
    p.add_argument("--max-train", type=int, help="use only the first N training utterances")
    p.add_argument("--max-valid", type=int, help="use only the first N validation utterances")
    p.add_argument(
        "--json",
        help="write the report as JSON here (a report w2v2-probe wrote is replaced; another "
        "file only with --overwrite, never one a training run wrote)",
    )
    p.add_argument("--markdown", help="write the markdown table here too (the same rule)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a --json or --markdown file that w2v2-probe did not write",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no per-probe progress lines on stderr")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with _reported(PROG, args.debug, _HINTS):
        _main(args)


def _main(args: argparse.Namespace) -> None:
    _check_model_path(args.model)
    try:
        protocol = ProbeProtocol(
            steps=args.steps,
            lr=args.lr,
            batch_size=args.batch_size,
            standardize=not args.no_standardize,
            seed=args.seed,
            probe_seeds=args.probe_seeds,
            random_init_seeds=args.random_init_seeds,
            log_mel=args.log_mel,
            max_train_utterances=args.max_train,
            max_valid_utterances=args.max_valid,
        ).validate()
        if args.threads is not None and args.threads < 1:
            raise ProbeError(f"--threads must be >= 1, found {args.threads}")
        try:
            resolve(args.model)
        except UnknownPretrainedError as e:
            raise ProbeError(
                f"{e} (expected a run folder, a saved model folder, a Hugging Face folder, a "
                f"fairseq .pt or a shipped checkpoint's name)"
            ) from None
        if not Path(args.data).is_dir():
            raise ProbeError(f"{args.data}: data folder not found (expected SPLIT.tsv + SPLIT.ltr files)")
        _claim_outputs(args)  # before the probes run: a refused path costs nothing
    except (ProbeError, OutputError) as e:
        _fail(str(e))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    log = None if args.quiet else (lambda msg: sys.stderr.write(msg + "\n"))
    try:
        with _loading_model(args.model):
            report = run_probes(
                args.model, args.data, args.train, args.valid, protocol, labels=args.labels, log=log
            )
    except ProbeError as e:
        _fail(str(e))
    table = report.to_markdown()
    sys.stdout.write(table)
    try:
        _claim_outputs(args)  # again: the files may have appeared while the probes ran
        if args.markdown:
            atomic_write_text(args.markdown, table)
        if args.json:
            report.save_json(args.json)
            sys.stderr.write(f"wrote {args.json}\n")
    except (OSError, OutputError) as e:
        _fail(f"cannot write the report ({e}); the table above is the result")


def _own_json(path: Path) -> bool:
    """A JSON report of ``w2v2-probe``: an object of exactly ``protocol``, ``data`` and ``models``."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and set(record) == {"protocol", "data", "models"}


def _claim_outputs(args: argparse.Namespace) -> None:
    """``--json`` and ``--markdown`` follow the rule of :mod:`wav2vec2_lite.tools.output_dir`."""
    if args.json:
        claim_output_file(args.json, PROG, overwrite=args.overwrite, own=_own_json)
    if args.markdown:
        claim_output_file(
            args.markdown, PROG, overwrite=args.overwrite, own=starts_with(MARKDOWN_START.encode())
        )


if __name__ == "__main__":
    main()
