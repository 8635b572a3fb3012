"""Console entry points: ``w2v2-pretrain``, ``w2v2-finetune`` (Hydra), ``w2v2-transcribe``, ``w2v2-export-hf``,
``w2v2-evaluate``, ``w2v2-extract``, ``w2v2-probe``, ``w2v2-manifest``, ``w2v2-report``,
``w2v2-sweep-summary``.

    w2v2-pretrain data.manifest_dir=/data/ls960 trainer.update_freq=8
    w2v2-pretrain --config-name pretrain_tiny data.manifest_dir=/tmp/toy model.num_layers=2
    w2v2-finetune finetune.pretrained=outputs/pretrain/RUN data.manifest_dir=/data/ls10h recipe=base_10h
    w2v2-pretrain -m optim.lr=1e-3,5e-4 ...      # multirun: one run dir per job

Configs are read from the package's ``wav2vec2_lite/configs/`` (or ``$W2V2_CONFIG_DIR``).
Outputs go to Hydra's run directory (``outputs/<task>/<time>``; ``hydra.run.dir=DIR`` to
choose it, which is also how a killed run is resumed: the same dir continues from its
``checkpoints/last``).

Conventions shared by every command here:

* a user error (bad path, bad config key or value, bad input file) is one
  ``PROG: error: ...`` message on stderr, without a traceback unless ``--debug`` is given or
  ``HYDRA_FULL_ERROR=1`` is set; hints use the command's own syntax (``data.mono=mix``);
* exit status 0: all done; 1: some inputs failed (or training stopped after some updates)
  and the rest was processed; 2: a usage error, or nothing ran;
* options may come before or after positional arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import NoReturn

__all__ = ["pretrain", "finetune", "transcribe", "evaluate", "extract", "export_hf", "probe", "manifest",
           "report", "sweep_summary", "run_from_hydra", "CONFIG_DIR",
           "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE"]

CONFIG_DIR = Path(os.environ.get("W2V2_CONFIG_DIR") or str(resources.files("wav2vec2_lite") / "configs"))
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2

# Library errors state hints in Python keywords; the training commands take Hydra overrides.
_OVERRIDE_HINTS = {"mono='mix'": "data.mono=mix", "resample='soxr'": "data.resample=soxr",
                   "skip_invalid=True": "data.skip_invalid=true", "set run_dir to": "set hydra.run.dir to",
                   "load_fairseq(path, trust=True)": "finetune.trust_pickle=true",
                   "raise max_tokens, crop with max_sample_size, or pass too_long='skip'":
                       "raise data.max_tokens, crop with data.max_sample_size, or set data.too_long=skip"}
_TRUST_HINT = {"load_fairseq(path, trust=True)": "--trust-pickle"}  # the tools that read a fine-tuned model


# --------------------------------------------------------------------------------- errors
def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or settings, not a bug: reported as one message."""
    from wav2vec2_lite.serialization import CheckpointError
    from wav2vec2_lite.train.run_dir import RunDirError
    from wav2vec2_lite.train.trainer import NonFiniteError

    return ValueError, KeyError, OSError, pickle.UnpicklingError, CheckpointError, RunDirError, NonFiniteError


def _debug_wanted(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether tracebacks were asked for (``--debug``, ``HYDRA_FULL_ERROR=1``)."""
    rest = [a for a in argv if a != "--debug"]
    return rest, len(rest) != len(argv) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _message(e: BaseException, hints: dict[str, str] | None = None) -> str:
    """The error's text (and notes), hints rewritten to the command's syntax; the type for built-in errors."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    text = "\n".join([text, *getattr(e, "__notes__", [])]).strip() or type(e).__name__
    for python, override in (hints or {}).items():
        text = text.replace(python, override)
    builtin = type(e).__module__ == "builtins" and not isinstance(e, OSError)
    return f"{type(e).__name__}: {text}" if builtin and type(e) is not ValueError else text


def _fail(prog: str, message: str, code: int = EXIT_USAGE) -> NoReturn:
    """``PROG: error: MESSAGE`` on stderr, then exit with ``code``."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


@contextmanager
def _reported(prog: str, debug: bool, hints: dict[str, str] | None = None) -> Iterator[None]:
    """User errors inside become one message and exit 2 (1 once training had run updates); ``debug`` re-raises."""
    try:
        yield
    except _user_errors() as e:
        if debug:
            raise
        _fail(prog, _message(e, hints), EXIT_PARTIAL if getattr(e, "updates_run", 0) else EXIT_USAGE)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) and a ``--debug`` option."""

    def __init__(self, prog: str, description: str | None) -> None:
        super().__init__(prog=prog, description=description)
        self.add_argument("--debug", action="store_true", help="show the traceback of an error")

    def error(self, message: str) -> NoReturn:
        _fail(self.prog, f"{message} (see {self.prog} --help)")


# --------------------------------------------------------------------------------- training
def run_from_hydra(cfg) -> dict:
    """Typed config from Hydra's composed one, run dir from Hydra, then train."""
    from hydra.core.hydra_config import HydraConfig

    from wav2vec2_lite.train.config import to_run_config
    from wav2vec2_lite.train.trainer import train

    run_cfg = to_run_config(cfg)
    run_dir = run_cfg.run_dir or (HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None)
    return train(run_cfg, run_dir)


def _check_run_dir_overrides(argv: list[str]) -> None:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` must name a folder: RunDirError before Hydra tries to create it."""
    from wav2vec2_lite.train.run_dir import RunDir

    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value:
            RunDir(value).check_folder(key.lstrip("+"))


def _hydra_task(prog: str, debug: bool):
    """``run_from_hydra`` with user errors reported as one message (inside the job, before Hydra's own report)."""

    def task(cfg) -> dict:
        with _reported(prog, debug, _OVERRIDE_HINTS):
            return run_from_hydra(cfg)

    return task


_MAIN_KEYS = {
    "pretrain": ["data.manifest_dir", "data.max_tokens", "data.max_sample_size", "model.preset", "model.objective",
                 "optim.lr", "schedule.warmup_updates", "trainer.max_updates", "trainer.update_freq",
                 "trainer.precision", "trainer.seed", "trainer.num_threads"],
    "finetune": ["data.manifest_dir", "data.max_tokens", "finetune.pretrained", "finetune.freeze_finetune_updates",
                 "ctc.mask_time_prob", "optim.lr", "trainer.max_updates", "trainer.update_freq", "trainer.precision",
                 "trainer.seed", "trainer.num_threads"],
}


def _first_comment(path: Path, width: int = 90) -> str:
    """The first sentence of a config file's opening comment (what it is for), at most ``width`` characters."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    return _clip(" ".join(words).split(". ")[0].split(": ")[0].rstrip("."), width)


def _clip(text: str, width: int) -> str:
    """``text``, cut at a word boundary with an ellipsis when longer than ``width``."""
    return text if len(text) <= width else text[:width - 1].rsplit(" ", 1)[0] + "…"


def _key_doc(kind: str, key: str) -> str:
    """The first sentence of a run-config key's docstring (``group.name``), from the dataclass source."""
    import ast
    import inspect
    import textwrap

    from wav2vec2_lite.config import Wav2Vec2Config
    from wav2vec2_lite.train.config import _SCHEMAS, _groups
    from wav2vec2_lite.train.schedules import SCHEDULES

    group, _, name = key.partition(".")
    if name == "preset":
        return "model size: tiny | base | large (a config group: model=tiny)"
    classes = {"ctc": [Wav2Vec2Config], "schedule": list(SCHEDULES.values())}.get(group) or [_groups(_SCHEMAS[kind])[group]]
    for cls in classes:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name \
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                return " ".join(str(after.value.value).split()).split(". ")[0].rstrip(".")
    raise KeyError(f"{key}: no such documented key of a {kind} run")


def _training_help(kind: str, prog: str) -> str:
    """``--help`` of the training commands: the named configs, config groups and main keys."""
    names = sorted(p.stem for p in CONFIG_DIR.glob(f"{kind}*.yaml"))
    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()
              and any(d.glob("*.yaml"))}
    lines = [f"usage: {prog} [--config-name NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--debug]", "",
             f"{'Self-supervised pretraining' if kind == 'pretrain' else 'CTC fine-tuning'} with Hydra configs from "
             f"{CONFIG_DIR}.", "", "named configs (--config-name NAME; default: " + kind + "):"]
    width = max(len(n) for n in names)
    lines += [f"  {n:<{width}}  {_first_comment(CONFIG_DIR / (n + '.yaml'))}" for n in names]
    lines += ["", "config groups (GROUP=OPTION):"] + [f"  {g}: {' | '.join(opts)}" for g, opts in groups.items()]
    lines += ["", "main keys (KEY=VALUE):"]
    width = max(len(k) for k in _MAIN_KEYS[kind])
    lines += [f"  {k:<{width}}  {_clip(_key_doc(kind, k), 90)}" for k in _MAIN_KEYS[kind]]
    lines += ["", "other options:",
              "  hydra.run.dir=DIR   the run folder; running again with the same DIR resumes from its last checkpoint",
              "  -m                  multirun: comma-separated values sweep, one run folder per job",
              "  --cfg job           print the composed config and exit",
              "  --debug             show the traceback of an error",
              "", "Every key with its default and meaning: docs/config.md."]
    return "\n".join(lines)


def _main(config_name: str, prog: str) -> None:
    """Run Hydra with ``--debug`` taken out; Hydra's own usage errors (bad key, bad override) become one message."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from wav2vec2_lite.train.config import register_configs

    argv, debug = _debug_wanted(sys.argv[1:])
    if not CONFIG_DIR.is_dir():
        _fail(prog, f"config folder {CONFIG_DIR} not found; set W2V2_CONFIG_DIR to a folder of configs")
    if "-h" in argv or "--help" in argv:
        print(_training_help(config_name, prog))
        return
    with _reported(prog, debug, _OVERRIDE_HINTS):
        _check_run_dir_overrides(argv)
    register_configs()
    sys.argv[1:] = argv
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its own report; we report
    try:
        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(
            _hydra_task(prog, debug))()
    except (HydraException, OmegaConfBaseException) as e:
        if debug:
            raise
        _fail(prog, _hydra_message(e, kind=config_name))
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _hydra_message(e: BaseException, kind: str) -> str:
    """A Hydra/OmegaConf error in one line. A key the schema lacks gets the project's unknown-key line
    (closest valid key); otherwise Hydra's first line, its cause's, then the rest, without OmegaConf's
    indented details."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from wav2vec2_lite.train.config import unknown_key_error

    head = str(e).split("'")
    if isinstance(e.__cause__, (ConfigKeyError, ConfigAttributeError)) and head[0] == "Could not override " \
            and len(head) > 2:
        return str(unknown_key_error(head[1].lstrip("+~"), kind))
    own = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(" ")]
    cause = str(e.__cause__).splitlines()[:1] if isinstance(e.__cause__, Exception) else []
    lines = dict.fromkeys(own[:1] + [ln.strip() for ln in cause] + own[1:])
    return " ".join(ln if ln[-1] in ".:;!?" else f"{ln}." for ln in lines)


def pretrain() -> None:
    """``w2v2-pretrain``: self-supervised pretraining (configs/pretrain.yaml)."""
    _main("pretrain", "w2v2-pretrain")


def finetune() -> None:
    """``w2v2-finetune``: CTC fine-tuning (configs/finetune.yaml)."""
    _main("finetune", "w2v2-finetune")


# --------------------------------------------------------------------------------- transcription
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
    from wav2vec2_lite.asr.transcribe import Failure, Transcriber, transcribe_all

    prog = "w2v2-transcribe"
    p = _Parser(prog, transcribe.__doc__)
    p.add_argument("model", help="run dir, model folder, Hugging Face folder or fairseq fine-tuned .pt")
    p.add_argument("audio", nargs="*", help="audio files (wav/flac/ogg), folders of them, or .tsv manifests")
    _add_checkpoint_options(p)
    p.add_argument("--manifest", action="append", default=[], help="a fairseq TSV manifest (repeatable)")
    p.add_argument("--limit", type=int, help="at most this many rows of each manifest")
    p.add_argument("--json", action="store_true", help="JSON lines (with per-word timings when decoding greedily)")
    p.add_argument("--chunk-s", type=float, default=30.0, help="window length for long files (seconds)")
    p.add_argument("--overlap-s", type=float, default=4.0, help="overlap between windows (seconds)")
    p.add_argument("--device", default="cpu")
    _add_decoding_options(p)
    args = p.parse_intermixed_args(argv)
    inputs = args.audio + args.manifest
    if not inputs:
        p.error("give audio files, folders or manifests")
    with _reported(prog, args.debug, _TRUST_HINT):
        tr = Transcriber.from_path(args.model, dictionary=args.dict, trust=args.trust_pickle, chunk_s=args.chunk_s,
                                   overlap_s=args.overlap_s, device=args.device, decoding=_decoding(args))
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


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """``--dict`` and ``--trust-pickle``: what a fairseq fine-tuned ``.pt`` may need."""
    p.add_argument("--dict", metavar="DICT", help="the model's dict.ltr.txt (default: the tokenizer saved beside "
                   "the model; for a fairseq .pt, the dict.ltr.txt next to it)")
    p.add_argument("--trust-pickle", action="store_true", help="let a fairseq .pt that needs full pickle run it "
                   "(only for files you trust; by default no code from the file runs)")


def _add_decoding_options(p: argparse.ArgumentParser) -> None:
    """Greedy, prefix beam search, or beam search with an n-gram LM (``asr.decode.DecodingConfig``)."""
    p.add_argument("--decoder", choices=("greedy", "beam"), help="greedy (default; word timings) or beam search "
                   "(the default with --lm)")
    p.add_argument("--beam-size", type=int, default=16, help="beam width (default: %(default)s)")
    p.add_argument("--lm", metavar="FILE", help="word n-gram LM, .arpa or KenLM binary (needs wav2vec2_lite[lm])")
    p.add_argument("--lexicon", metavar="FILE", help="words the LM decoder may output, one per line "
                   "(default: the .arpa's unigrams)")
    p.add_argument("--lm-weight", type=float, default=0.5, help="LM weight (default: %(default)s)")
    p.add_argument("--word-score", type=float, default=0.0, help="score added per word (default: %(default)s)")


def _decoding(args: argparse.Namespace):
    from wav2vec2_lite.asr.decode import DecodingConfig

    decoder = args.decoder or ("beam" if args.lm or args.lexicon else "greedy")
    return DecodingConfig(decoder=decoder, beam_size=args.beam_size, lm=args.lm, lexicon=args.lexicon,
                          lm_weight=args.lm_weight, word_score=args.word_score).validate()


def _report_failure(prog: str, failure, as_json: bool, debug: bool) -> None:
    """One error line on stderr, or a JSON record on stdout; the traceback first with ``--debug``."""
    if debug and failure.exception is not None:
        import traceback

        traceback.print_exception(failure.exception, file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(failure.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        sys.stderr.write(f"{prog}: error: {failure.path}: {failure.error}\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------------- evaluation
def evaluate(argv: list[str] | None = None) -> None:
    """``w2v2-evaluate MODEL --data DIR``: corpus WER/CER of a fine-tuned model on a labelled split
    (SPLIT.tsv + SPLIT.wrd), by sentence kind where the corpus records it, greedy or beam search
    with an optional n-gram LM. With --out, writes summary.json (rates, error counts, decoder,
    dtype, model) and utterances.jsonl (path, ref, hyp, errors). An utterance that cannot be
    transcribed is named on stderr and scored as an empty hypothesis (exit 1)."""
    from wav2vec2_lite.asr.evaluate import by_kind, evaluate_split, sentence_kinds
    from wav2vec2_lite.asr.metrics import char_errors, word_errors
    from wav2vec2_lite.asr.transcribe import Transcriber

    prog = "w2v2-evaluate"
    p = _Parser(prog, evaluate.__doc__)
    p.add_argument("model", help="fine-tuned run dir or model folder, Hugging Face folder or fairseq fine-tuned .pt")
    p.add_argument("--data", required=True, help="folder of SPLIT.tsv and SPLIT.wrd (or .ltr)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--labels", choices=("wrd", "ltr"), default="wrd", help="reference file (default: wrd)")
    p.add_argument("--limit", type=int, help="score the first N utterances only")
    p.add_argument("--out", metavar="DIR", help="write summary.json and utterances.jsonl here")
    p.add_argument("--device", default="cpu")
    _add_checkpoint_options(p)
    _add_decoding_options(p)
    args = p.parse_intermixed_args(argv)
    with _reported(prog, args.debug, _TRUST_HINT):
        out = Path(args.out) if args.out else None
        if out is not None and out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out}: is a file; --out needs a folder")
        tr = Transcriber.from_path(args.model, dictionary=args.dict, trust=args.trust_pickle, device=args.device,
                                   decoding=_decoding(args))
        result = evaluate_split(tr, args.data, args.split, args.limit, labels=args.labels,
                                progress=sys.stderr.isatty())
        kinds = sentence_kinds(args.data)
    for path, why in result.failed.items():
        sys.stderr.write(f"{prog}: error: {path}: {why}\n")
    decoding = tr.decoding.to_dict()
    print(f"{args.split}: WER {100 * result.wer:.2f} %  CER {100 * result.cer:.2f} %  ({result.utterances} utterances; "
          f"{' '.join(f'{k}={v}' for k, v in decoding.items())}; {tr.dtype})")
    parts = by_kind(result, kinds)
    for kind, part in parts.items():
        print(f"  {kind}: WER {100 * part.wer:.2f} %  CER {100 * part.cer:.2f} %  ({part.utterances} utterances)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        w, c = word_errors(result.references, result.hypotheses), char_errors(result.references, result.hypotheses)
        summary = {"model": str(args.model), "data": str(args.data), "split": args.split, "labels": args.labels,
                   **result.to_dict(), "word_errors": vars(w), "char_errors": vars(c), "decoding": decoding,
                   "dtype": tr.dtype, "by_kind": {k: v.to_dict() for k, v in parts.items()},
                   "failed_utterances": result.failed}
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        with open(out / "utterances.jsonl", "w", encoding="utf-8") as f:
            for rec in result.records(kinds):
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"wrote {out / 'summary.json'} and {out / 'utterances.jsonl'}")
    if result.failed:
        sys.stderr.write(f"{prog}: {len(result.failed)} of {result.utterances} utterances failed (scored as empty)\n")
        raise SystemExit(EXIT_PARTIAL)


# --------------------------------------------------------------------------------- representations
def extract(argv: list[str] | None = None) -> None:
    """``w2v2-extract MODEL INPUT... --out DIR``: frame states of chosen layers and per-frame
    discrete units (--units: the pretraining objective's codes for every frame) for audio files,
    folders (recursively) and .tsv manifests; one .safetensors (or .npy per array) per utterance
    under DIR, mirroring the inputs' relative paths, and DIR/index.jsonl. A bad input is one
    error line and the rest go on (exit 1)."""
    from wav2vec2_lite.extract import FORMATS, ExtractionFailure, Extractor, extract_to_folder

    prog = "w2v2-extract"
    p = _Parser(prog, extract.__doc__)
    p.add_argument("model", help="run dir, model folder, Hugging Face folder, fairseq .pt or shipped checkpoint name")
    p.add_argument("audio", nargs="+", help="audio files, folders of them, or .tsv manifests")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--layers", default="last", help="comma-separated: conv, layer_0 ... layer_L, last, or all "
                   "(default: last); empty with --units for units only")
    p.add_argument("--units", action="store_true", help="also the objective's code of every frame (a pretraining "
                   "checkpoint)")
    p.add_argument("--format", choices=FORMATS, default="safetensors")
    p.add_argument("--limit", type=int, help="at most this many rows of each manifest")
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-pickle", action="store_true", help="let a fairseq .pt that needs full pickle run it")
    args = p.parse_intermixed_args(argv)
    layers = [x for x in args.layers.split(",") if x.strip()]
    with _reported(prog, args.debug, _TRUST_HINT):
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out}: is a file; --out needs a folder")
        ex = Extractor.from_path(args.model, layers, units=args.units, trust=args.trust_pickle, device=args.device)
    done = failed = 0
    for item in extract_to_folder(ex, args.audio, out, fmt=args.format, limit=args.limit,
                                  progress=sys.stderr.isatty()):
        if isinstance(item, ExtractionFailure):
            failed += 1
            sys.stderr.write(f"{prog}: error: {item.path}: {item.error}\n")
        else:
            done += 1
    print(f"wrote {done} utterance(s) to {out} ({', '.join(ex.layers + (['units'] if ex.units else []))}; "
          f"index.jsonl)")
    if failed:
        sys.stderr.write(f"{prog}: {failed} of {done + failed} inputs failed\n")
        raise SystemExit(EXIT_PARTIAL if done else EXIT_USAGE)


# --------------------------------------------------------------------------------- export
def export_hf(argv: list[str] | None = None) -> None:
    """``w2v2-export-hf MODEL OUT``: a fine-tuned run -> a Hugging Face folder that
    ``transformers.pipeline("automatic-speech-recognition", model=OUT)`` loads offline."""
    from wav2vec2_lite.asr.transcribe import Transcriber
    from wav2vec2_lite.interop.hf_export import export_ctc_to_hf

    prog = "w2v2-export-hf"
    p = _Parser(prog, export_hf.__doc__)
    p.add_argument("model", help="fine-tuned run dir or model folder (with its dict.ltr.txt), Hugging Face folder "
                   "or fairseq fine-tuned .pt")
    p.add_argument("out", help="output folder")
    _add_checkpoint_options(p)
    args = p.parse_intermixed_args(argv)
    with _reported(prog, args.debug, _TRUST_HINT):
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"{out}: is a file; the export needs a folder")
        tr = Transcriber.from_path(args.model, dictionary=args.dict, trust=args.trust_pickle)
        print(f"wrote {export_ctc_to_hf(tr.model, tr.tokenizer, out)}")


# --------------------------------------------------------------------------------- data preparation
def manifest(argv: list[str] | None = None) -> None:
    """``w2v2-manifest AUDIO_DIR --dest DIR``: fairseq manifests for a folder of audio, and with
    transcripts (a path<TAB>text or CSV file, LibriSpeech *.trans.txt, or .txt/.lab sidecars)
    the .ltr/.wrd labels and dict.ltr.txt, text normalised to a character set with a report of
    what was dropped. Splits per file (--valid-percent, --test-percent: fractions) or per speaker
    (--speaker-disjoint). A bad file stops it with one message naming it, or with --skip-bad is
    skipped and listed (exit 1)."""
    from wav2vec2_lite.data.prepare import AUDIO_EXTENSIONS, DEFAULT_CHARSET, prepare_dataset

    prog = "w2v2-manifest"
    p = _Parser(prog, manifest.__doc__)
    p.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder searched recursively for audio files")
    p.add_argument("--dest", required=True, help="output folder for SPLIT.tsv/.ltr/.wrd and dict.ltr.txt")
    p.add_argument("--transcripts", metavar="FILE", help="path<TAB>text lines, or a CSV with path and text columns "
                   "(default: LibriSpeech *.trans.txt or .txt/.lab sidecars if present, else unlabelled)")
    p.add_argument("--ext", default=",".join(AUDIO_EXTENSIONS), help="audio extensions, comma-separated "
                   "(default: %(default)s)")
    p.add_argument("--valid-percent", type=float, default=0.01, help="fraction of the files (or of the "
                   "utterances, by speaker) in valid (default: %(default)s; 0: no valid split)")
    p.add_argument("--test-percent", type=float, default=0.0, help="fraction in test (default: 0, none)")
    p.add_argument("--speaker-disjoint", action="store_true", help="whole speakers per split: the first folder "
                   "below AUDIO_DIR, or the first group of --speaker-pattern")
    p.add_argument("--speaker-pattern", metavar="REGEX", help="regular expression on the relative path whose "
                   "first group is the speaker")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument("--charset", default=DEFAULT_CHARSET, help="characters kept in transcripts (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true", help="skip and list unusable files instead of stopping")
    p.add_argument("--path-must-contain", metavar="TEXT", help="keep only files whose path contains TEXT")
    args = p.parse_intermixed_args(argv)
    with _reported(prog, args.debug):
        report = prepare_dataset(
            args.audio_dir, args.dest, transcripts=args.transcripts, extensions=args.ext.split(","),
            valid_percent=args.valid_percent, test_percent=args.test_percent,
            speaker_disjoint=args.speaker_disjoint or args.speaker_pattern is not None,
            speaker_pattern=args.speaker_pattern, seed=args.seed, charset=args.charset, skip_bad=args.skip_bad,
            path_must_contain=args.path_must_contain)
    for s in report.skipped:
        sys.stderr.write(f"{prog}: skipped {s['path']}: {s['reason']}\n")
    for line in report.summary():
        print(line)
    print(f"wrote {args.dest} ({', '.join(report.splits)}{' + labels, dict.ltr.txt' if report.labelled else ''}, "
          f"prepare_report.json)")
    if report.skipped:
        sys.stderr.write(f"{prog}: {len(report.skipped)} of {report.audio_files} files skipped\n")
        raise SystemExit(EXIT_PARTIAL)


# --------------------------------------------------------------------------------- run reports
def report(argv: list[str] | None = None) -> None:
    """``w2v2-report RUN_DIR``: one self-contained HTML page for a training run (curves, health
    events, config; codebook usage on a split with --manifest-dir)."""
    from wav2vec2_lite.tools.report import write_report

    prog = "w2v2-report"
    p = _Parser(prog, report.__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="default: RUN_DIR/report.html")
    p.add_argument("--manifest-dir", type=Path, help="pretraining runs: corpus folder for the codebook-usage plot")
    p.add_argument("--split", default="valid")
    args = p.parse_intermixed_args(argv)
    with _reported(prog, args.debug):
        print(f"wrote {write_report(args.run_dir, args.out, manifest_dir=args.manifest_dir, split=args.split)}")


def sweep_summary(argv: list[str] | None = None) -> None:
    """``w2v2-sweep-summary SWEEP_DIR``: a Hydra multirun sweep as a markdown table of each run's
    final validation metrics (SWEEP_DIR/summary.md), and with --plot a plot of one metric."""
    from wav2vec2_lite.tools.sweep import collect_sweep, plot_sweep, sweep_table

    prog = "w2v2-sweep-summary"
    p = _Parser(prog, sweep_summary.__doc__)
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--metrics", nargs="*", help="validation metrics to show (default: all)")
    p.add_argument("--plot", metavar="METRIC", help="also write sweep_METRIC.png in the sweep folder")
    p.add_argument("--out", type=Path, help="write the table here (default: SWEEP_DIR/summary.md)")
    args = p.parse_intermixed_args(argv)
    with _reported(prog, args.debug):
        runs = collect_sweep(args.sweep_dir)
        table = sweep_table(runs, args.metrics)
        out = args.out or args.sweep_dir / "summary.md"
        out.write_text(table)
        print(table)
        print(f"wrote {out}")
        if args.plot:
            print(f"wrote {plot_sweep(runs, args.plot, args.sweep_dir / f'sweep_{args.plot}.png')}")


def probe(argv: list[str] | None = None) -> None:
    """``w2v2-probe MODEL --data DIR``: per-layer linear CTC probes (valid CER) of a model, its
    architecture at random init and the log-mel front end (``wav2vec2_lite.probes``, docs/probes.md)."""
    from wav2vec2_lite.probes.cli import main

    main(argv)
