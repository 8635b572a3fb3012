"""``w2v2-manifest``, ``w2v2-extract``, ``w2v2-probe``, ``w2v2-report``, ``w2v2-sweep-summary``: data
preparation, representations and run reports."""

from __future__ import annotations

import sys
from pathlib import Path

from wav2vec2_lite.cli.common import (
    _TRUST_HINT,
    EXIT_PARTIAL,
    EXIT_USAGE,
    _add_dtype_option,
    _add_overwrite_option,
    _check_device,
    _dtype_note,
    _loading_model,
    _Parser,
    _reported,
    console_script,
)
from wav2vec2_lite.serialization import atomic_write_text
from wav2vec2_lite.tools.output_dir import claim_output_dir, claim_output_file, contains, starts_with
from wav2vec2_lite.tools.sweep import (
    PLOT_SOFTWARE,
    TABLE_START,
    collect_sweep,
    plot_sweep,
    seed_table,
    sweep_table,
)


# --------------------------------------------------------------------------------- representations
@console_script("w2v2-extract")
def extract(argv: list[str] | None = None) -> None:
    """``w2v2-extract MODEL INPUT... --out DIR``: frame states of chosen layers and per-frame
    discrete units (--units: the pretraining objective's codes for every frame) for audio files,
    folders (recursively) and .tsv manifests; one .safetensors (or .npy per array) per utterance
    under DIR, mirroring the inputs' relative paths, and DIR/index.jsonl. A bad input is one
    error line and the rest go on (exit 1)."""
    # start-up: soundfile and the model readers stay out of the other w2v2-* (FORMATS is needed for --help)
    from wav2vec2_lite.extract import FORMATS, ExtractionFailure, Extractor, extract_to_folder

    prog = "w2v2-extract"
    p = _Parser(prog, extract.__doc__)
    p.add_argument(
        "model", help="run dir, model folder, Hugging Face folder, fairseq .pt or shipped checkpoint name"
    )
    p.add_argument("audio", nargs="+", help="audio files, folders of them, or .tsv manifests")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: new or empty (a folder an earlier "
        "w2v2-extract wrote is refused: give every input to one call)",
    )
    _add_overwrite_option(p, "--out")
    p.add_argument(
        "--layers",
        default="last",
        help="comma-separated: conv, layer_0 ... layer_L, last, or all "
        "(default: last); empty with --units for units only",
    )
    p.add_argument(
        "--units",
        action="store_true",
        help="also the objective's code of every frame (a pretraining checkpoint)",
    )
    p.add_argument("--format", choices=FORMATS, default="safetensors")
    p.add_argument("--limit", type=int, help="at most this many rows of each manifest")
    p.add_argument("--device", default="cpu")
    _add_dtype_option(p)
    p.add_argument(
        "--trust-pickle", action="store_true", help="let a fairseq .pt that needs full pickle run it"
    )
    args = p.parse_intermixed_args(argv)
    layers = [x for x in args.layers.split(",") if x.strip()]
    done = failed = 0
    with _reported(prog, args.debug, _TRUST_HINT):
        _check_device(args.device)
        _dtype_note(prog, args.dtype, args.device)
        out = claim_output_dir(
            args.out, prog, overwrite=args.overwrite, inputs=[args.model, *args.audio], rerun="refuse"
        )
        with out:  # written beside --out, then put in place whole; nothing on an error or an interrupt
            with _loading_model(args.model):
                ex = Extractor.from_path(
                    args.model,
                    layers,
                    units=args.units,
                    trust=args.trust_pickle,
                    device=args.device,
                    dtype=args.dtype,
                    compile=args.compile,
                )
            for item in extract_to_folder(
                ex, args.audio, out.staging, fmt=args.format, limit=args.limit, progress=sys.stderr.isatty()
            ):
                if isinstance(item, ExtractionFailure):
                    failed += 1
                    sys.stderr.write(f"{prog}: error: {item.path}: {item.error}\n")
                else:
                    done += 1
    print(
        f"wrote {done} utterance(s) to {args.out} ({', '.join(ex.layers + (['units'] if ex.units else []))}; "
        f"index.jsonl)"
    )
    if failed:
        sys.stderr.write(f"{prog}: {failed} of {done + failed} inputs failed\n")
        raise SystemExit(EXIT_PARTIAL if done else EXIT_USAGE)


# --------------------------------------------------------------------------------- data preparation
@console_script("w2v2-manifest")
def manifest(argv: list[str] | None = None) -> None:
    """``w2v2-manifest AUDIO_DIR --dest DIR``: fairseq manifests for a folder of audio, and with
    transcripts (a path<TAB>text or CSV file, LibriSpeech *.trans.txt, or .txt/.lab sidecars)
    the .ltr/.wrd labels and dict.ltr.txt, text normalised to a character set with a report of
    what was dropped. Splits per file (--valid-percent, --test-percent: fractions) or per speaker
    (--speaker-disjoint). A bad file stops it with one message naming it, or with --skip-bad is
    skipped and listed (exit 1)."""
    # start-up: soundfile stays out of the other w2v2-* (--help needs AUDIO_EXTENSIONS, DEFAULT_CHARSET)
    from wav2vec2_lite.data.prepare import AUDIO_EXTENSIONS, DEFAULT_CHARSET, prepare_dataset

    prog = "w2v2-manifest"
    p = _Parser(prog, manifest.__doc__)
    p.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder searched recursively for audio files")
    p.add_argument(
        "--dest",
        required=True,
        help="output folder for SPLIT.tsv/.ltr/.wrd and dict.ltr.txt: new, "
        "empty, or written by w2v2-manifest (its whole set is then replaced)",
    )
    _add_overwrite_option(p, "--dest")
    p.add_argument(
        "--transcripts",
        metavar="FILE",
        help="path<TAB>text lines, or a CSV with path and text columns "
        "(default: LibriSpeech *.trans.txt or .txt/.lab sidecars if present, else unlabelled)",
    )
    p.add_argument(
        "--ext",
        default=",".join(AUDIO_EXTENSIONS),
        help="audio extensions, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--valid-percent",
        type=float,
        help="fraction of the files (or of the "
        "utterances, by speaker) in valid (default: 0.01, or 0 with --test-percent 1 or --split-name; "
        "0: no valid split)",
    )
    p.add_argument(
        "--test-percent",
        type=float,
        default=0.0,
        help="fraction in test (default: 0, none; 1: the whole folder is the test set, no train split)",
    )
    p.add_argument(
        "--split-name",
        metavar="NAME",
        help="every file in one split NAME.tsv (a whole folder as one evaluation set, e.g. dev-clean)",
    )
    p.add_argument(
        "--speaker-disjoint",
        action="store_true",
        help="whole speakers per split: the first folder "
        "below AUDIO_DIR, or the first group of --speaker-pattern",
    )
    p.add_argument(
        "--speaker-pattern",
        metavar="REGEX",
        help="regular expression on the relative path whose first group is the speaker",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument(
        "--charset", default=DEFAULT_CHARSET, help="characters kept in transcripts (default: %(default)s)"
    )
    p.add_argument("--skip-bad", action="store_true", help="skip and list unusable files instead of stopping")
    p.add_argument("--path-must-contain", metavar="TEXT", help="keep only files whose path contains TEXT")
    args = p.parse_intermixed_args(argv)
    if args.valid_percent is None:
        args.valid_percent = 0.0 if args.test_percent == 1 or args.split_name else 0.01
    with _reported(prog, args.debug):
        out = claim_output_dir(
            args.dest, prog, overwrite=args.overwrite, inputs=[args.audio_dir, args.transcripts]
        )
        with out:  # written beside --dest, then swapped in whole: never a new .tsv beside an old .ltr
            report = prepare_dataset(
                args.audio_dir,
                out.staging,
                transcripts=args.transcripts,
                extensions=args.ext.split(","),
                valid_percent=args.valid_percent,
                test_percent=args.test_percent,
                speaker_disjoint=args.speaker_disjoint or args.speaker_pattern is not None,
                speaker_pattern=args.speaker_pattern,
                seed=args.seed,
                charset=args.charset,
                skip_bad=args.skip_bad,
                path_must_contain=args.path_must_contain,
                single_split=args.split_name,
            )
    for s in report.skipped:
        sys.stderr.write(f"{prog}: skipped {s['path']}: {s['reason']}\n")
    for line in report.summary():
        print(line)
    print(
        f"wrote {args.dest} ({', '.join(report.splits)}"
        f"{' + labels, dict.ltr.txt' if report.labelled else ''}, "
        f"prepare_report.json)"
    )
    if report.skipped:
        sys.stderr.write(f"{prog}: {len(report.skipped)} of {report.audio_files} files skipped\n")
        raise SystemExit(EXIT_PARTIAL)


# --------------------------------------------------------------------------------- run reports
@console_script("w2v2-report")
def report(argv: list[str] | None = None) -> None:
    """``w2v2-report RUN_DIR``: one self-contained HTML page for a training run (curves, health
    events, config; codebook usage on a split with --manifest-dir)."""
    prog = "w2v2-report"
    p = _Parser(prog, report.__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--out",
        type=Path,
        help="default: RUN_DIR/report.html (a page w2v2-report wrote is replaced; "
        "another file only with --overwrite, never one the run wrote)",
    )
    _add_overwrite_option(p, "--out")
    p.add_argument(
        "--manifest-dir", type=Path, help="pretraining runs: corpus folder for the codebook-usage plot"
    )
    p.add_argument("--split", default="valid")
    args = p.parse_intermixed_args(argv)
    from wav2vec2_lite.tools.report import GENERATOR, write_report  # start-up: yaml, soundfile after --help

    with _reported(prog, args.debug):
        out = claim_output_file(
            args.out or args.run_dir / "report.html",
            prog,
            overwrite=args.overwrite,
            own=contains(GENERATOR.encode()),
        )
        notes: list[str] = []
        written = write_report(
            args.run_dir, out, manifest_dir=args.manifest_dir, split=args.split, notes=notes
        )
        for note in notes:
            sys.stderr.write(f"{prog}: note: {note}\n")
        print(f"wrote {written}")


@console_script("w2v2-sweep-summary")
def sweep_summary(argv: list[str] | None = None) -> None:
    """``w2v2-sweep-summary SWEEP_DIR``: a Hydra multirun sweep as a markdown table of each run's
    final validation metrics (SWEEP_DIR/summary.md), and with --plot a plot of one metric."""
    prog = "w2v2-sweep-summary"
    p = _Parser(prog, sweep_summary.__doc__)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--metrics", nargs="*", help="validation metrics to show (default: all)")
    p.add_argument("--plot", metavar="METRIC", help="also write sweep_METRIC.png in the sweep folder")
    p.add_argument(
        "--seed-key",
        default="trainer.seed",
        help="the override that only reseeds a run: runs differing in it alone are also shown as mean ± sd "
        "(default: trainer.seed)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="write the table here (default: SWEEP_DIR/summary.md; a table "
        "w2v2-sweep-summary wrote is replaced, another file only with --overwrite)",
    )
    _add_overwrite_option(p, "--out and the plot")
    args = p.parse_intermixed_args(argv)
    with _reported(prog, args.debug):
        out = claim_output_file(
            args.out or args.sweep_dir / "summary.md",
            prog,
            overwrite=args.overwrite,
            own=starts_with(TABLE_START.encode()),
        )
        png = (
            claim_output_file(
                args.sweep_dir / f"sweep_{args.plot}.png",
                prog,
                overwrite=args.overwrite,
                own=contains(PLOT_SOFTWARE.encode()),
            )
            if args.plot
            else None
        )
        notes: list[str] = []
        runs = collect_sweep(args.sweep_dir, notes)
        for note in notes:
            sys.stderr.write(f"{prog}: note: {note}\n")
        table = sweep_table(runs, args.metrics)
        grouped = seed_table(runs, args.metrics, args.seed_key)
        table += f"\nMean ± sd over seeds ({args.seed_key}):\n\n{grouped}" if grouped else ""
        atomic_write_text(out, table)
        print(table)
        print(f"wrote {out}")
        if png is not None:
            print(f"wrote {plot_sweep(runs, args.plot, png)}")


@console_script("w2v2-probe")
def probe(argv: list[str] | None = None) -> None:
    """``w2v2-probe MODEL --data DIR``: per-layer linear CTC probes (valid CER) of a model, its
    architecture at random init and the log-mel front end (``wav2vec2_lite.probes``, docs/probes.md)."""
    from wav2vec2_lite.probes.cli import main  # start-up: soundfile, the probes not in the other w2v2-*

    main(argv)
