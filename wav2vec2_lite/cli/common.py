"""What every command shares: one-line user errors, exit codes, the argument parser, the options
of the tools that read a fine-tuned model (conventions: ``wav2vec2_lite.cli``)."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import pickle
import sys
import traceback
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import NoReturn

from wav2vec2_lite.serialization import CheckpointError
from wav2vec2_lite.tools import hardware  # hardware.native_bf16 looked up per call (tests replace it)

CONFIG_DIR = Path(os.environ.get("W2V2_CONFIG_DIR") or str(resources.files("wav2vec2_lite") / "configs"))
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # the shell's 128 + SIGINT / SIGPIPE
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".aiff", ".aif")

# Library errors state hints in Python keywords; the training commands take Hydra overrides.
_OVERRIDE_HINTS = {
    "mono='mix'": "data.mono=mix",
    "resample='soxr'": "data.resample=soxr",
    "skip_invalid=True": "data.skip_invalid=true",
    "set run_dir to": "set hydra.run.dir to",
    "load_fairseq(path, trust=True)": "finetune.trust_pickle=true",
    "raise max_tokens, crop with max_sample_size, or pass too_long='skip'": (
        "raise data.max_tokens, crop with data.max_sample_size, or set data.too_long=skip"
    ),
}
_TRUST_HINT = {"load_fairseq(path, trust=True)": "--trust-pickle"}  # the tools that read a fine-tuned model


# --------------------------------------------------------------------------------- errors
def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or settings, not a bug: reported as one message."""
    # start-up: train.* loads omegaconf (~0.1 s); every w2v2-* imports this module, only an error needs these
    from safetensors import SafetensorError

    from wav2vec2_lite.train.run_dir import RunDirError
    from wav2vec2_lite.train.trainer import NonFiniteError

    return (
        ValueError,
        KeyError,
        OSError,
        pickle.UnpicklingError,
        CheckpointError,
        RunDirError,
        NonFiniteError,
        SafetensorError,
    )


def debug_wanted(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether tracebacks were asked for (``--debug`` or
    ``HYDRA_FULL_ERROR=1``)."""
    rest = [a for a in argv if a != "--debug"]
    return rest, len(rest) != len(argv) or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _message(e: BaseException, hints: dict[str, str] | None = None) -> str:
    """The error's text (and notes), hints rewritten to the command's syntax; the type for built-in
    errors; for an OSError that names its file, the file, the reason and what to do."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename and e.strerror:
        code = errno.errorcode.get(e.errno, "") if e.errno else ""
        fix = _OS_FIX.get(e.errno, _OS_FIX[None])
        text = f"{e.filename}: {e.strerror}{f' ({code})' if code else ''}; {fix}"
    text = "\n".join([text, *getattr(e, "__notes__", [])]).strip() or type(e).__name__
    for python, override in (hints or {}).items():
        text = text.replace(python, override)
    builtin = type(e).__module__ == "builtins" and not isinstance(e, OSError)
    return f"{type(e).__name__}: {text}" if builtin and type(e) is not ValueError else text


# what to do about an OSError that names its file, by errno
_OS_FIX = {
    errno.ENOSPC: "free some disk space or write to another disk",
    errno.EDQUOT: "free some space under your quota or write to another disk",
    errno.EROFS: "the file system is read-only: write to another folder",
    errno.EACCES: "check its permissions or write to another folder",
    errno.EPERM: "check its permissions or write to another folder",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    None: "check the path and the storage",
}


def _fail(prog: str, message: str, code: int = EXIT_USAGE) -> NoReturn:
    """``PROG: error: MESSAGE`` on stderr, then exit with ``code``."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


@contextmanager
def _reported(prog: str, debug: bool, hints: dict[str, str] | None = None) -> Iterator[None]:
    """User errors inside become one message and exit 2 (1 once training had run updates);
    with ``debug`` they are re-raised."""
    try:
        yield
    except _user_errors() as e:
        if debug:
            raise
        _fail(prog, _message(e, hints), EXIT_PARTIAL if getattr(e, "updates_run", 0) else EXIT_USAGE)


def console_script(prog: str) -> Callable[[Callable], Callable]:
    """Wrap a console script's ``main(argv)``: nothing it raises becomes a traceback unless
    ``--debug`` (or ``HYDRA_FULL_ERROR=1``) asks for one.

    A user error that reached the top is one ``PROG: error: ...`` line (exit 2, or 1 once training
    ran updates); Ctrl-C is one line, with what a rerun resumes from when training (exit 130); a
    reader that stopped reading (``| head``) ends the command quietly (exit 141, as SIGPIPE would).
    Other exceptions are bugs and keep their traceback."""

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(argv: list[str] | None = None):
            _, debug = debug_wanted(sys.argv[1:] if argv is None else list(argv))
            try:
                return main(argv) if argv is not None else main()
            except KeyboardInterrupt as e:
                if debug:
                    raise
                notes = " ".join(getattr(e, "__notes__", []))
                _fail(prog, f"interrupted (Ctrl-C){'. ' + notes if notes else ''}", EXIT_INTERRUPTED)
            except BrokenPipeError:
                _close_stdout()
                raise SystemExit(EXIT_BROKEN_PIPE) from None
            except _user_errors() as e:
                if debug:
                    raise
                _fail(prog, _message(e), EXIT_PARTIAL if getattr(e, "updates_run", 0) else EXIT_USAGE)

        return run

    return wrap


def _close_stdout() -> None:
    """After the reader of stdout went away: point stdout at /dev/null, so that the interpreter's
    final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test's buffer)
        pass


def _check_device(device: str, option: str = "--device") -> str:
    """``device`` if torch can run on it here; otherwise ValueError naming ``option``, what this
    machine has and what to pass instead."""
    from wav2vec2_lite.train.device import check_device  # start-up: torch, after --help

    check_device(device, option)
    return device


_MODEL_KINDS = "a run folder, a model folder, a Hugging Face folder or a fairseq .pt"


def _check_model_path(path: str, where: str = "the model is the first argument") -> None:
    """A model argument that is an audio file (a positional argument out of place) is one line saying so."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
        raise ValueError(f"{path}: an audio file where the model goes; {where}: {_MODEL_KINDS}")


def _raised_by_torch_load(e: BaseException) -> bool:
    """Whether ``e`` came out of torch's file reader (not, say, a model that did not fit its weights)."""
    readers = (
        "torch/serialization.py",
        "torch/_weights_only_unpickler.py",
        "zipfile.py",
        "zipfile/__init__.py",
    )
    return any(f.filename.replace("\\", "/").endswith(readers) for f in traceback.extract_tb(e.__traceback__))


@contextmanager
def _loading_model(path: str, where: str = "the model is the first argument") -> Iterator[None]:
    """While ``path`` (a model) loads: an empty, truncated or non-PyTorch model *file* is one line naming
    it (torch's reader raises EOFError, IndexError or RuntimeError for those), not a traceback."""
    _check_model_path(path, where)
    try:
        yield
    except (EOFError, IndexError, RuntimeError, zipfile.BadZipFile) as e:
        p = Path(path)
        ours = type(e) in (EOFError, IndexError, RuntimeError) or isinstance(e, zipfile.BadZipFile)
        if not (p.is_file() and ours and _raised_by_torch_load(e)):
            raise  # a project error (it names the file already), a folder's, or not the reader's
        size = p.stat().st_size
        why = "empty (0 bytes)" if size == 0 else f"truncated or not a PyTorch checkpoint ({size} bytes)"
        detail = str(e).split(". ")[0].strip() or type(e).__name__
        raise CheckpointError(
            f"{path}: cannot be read as a model: the file is {why} ({detail}); copy it again, or give a run "
            f"folder, a model folder or a Hugging Face folder"
        ) from e


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) and a ``--debug`` option."""

    def __init__(self, prog: str, description: str | None) -> None:
        super().__init__(prog=prog, description=description)
        self.add_argument("--debug", action="store_true", help="show the traceback of an error")

    def error(self, message: str) -> NoReturn:
        _fail(self.prog, f"{message} (see {self.prog} --help)")


def _add_overwrite_option(p: argparse.ArgumentParser, option: str) -> None:
    """``--overwrite``: replace an output the rule of ``wav2vec2_lite.tools.output_dir`` refuses."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace what {option} holds although this tool did "
        f"not write it (the whole output set is swapped in at once; never a training run folder)",
    )


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """``--dict`` and ``--trust-pickle``: what a fairseq fine-tuned ``.pt`` may need."""
    p.add_argument(
        "--dict",
        metavar="DICT",
        help="the model's dict.ltr.txt (default: the tokenizer saved beside "
        "the model; for a fairseq .pt, the dict.ltr.txt next to it)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="let a fairseq .pt that needs full pickle run it "
        "(only for files you trust; by default no code from the file runs)",
    )


def _add_dtype_option(p: argparse.ArgumentParser) -> None:
    """``--dtype float32|bfloat16`` (the weights inference runs in, ``inference_dtype``) and ``--compile``."""
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "bf16"),
        default="float32",
        help="float32 (default) or bfloat16: the transformer's weights and activations in bf16, "
        "convolutions and norms in float32 (fast on GPUs and CPUs with AVX512-BF16/AMX; emulated, "
        "slow, elsewhere)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's dense part (projection, "
        "transformer, CTC head): slower start, faster per file where it pays (docs/benchmarks.md)",
    )


def _dtype_note(prog: str, dtype: str, device: str) -> None:
    """One line on stderr when bf16 is asked for where the hardware only emulates it."""
    if dtype in ("bfloat16", "bf16") and not hardware.native_bf16(device):
        sys.stderr.write(
            f"{prog}: note: this CPU has no bf16 units (avx512_bf16/amx_bf16): bfloat16 is emulated "
            f"and slower than float32 here\n"
        )


def _add_decoding_options(p: argparse.ArgumentParser) -> None:
    """Greedy, prefix beam search, or beam search with an n-gram LM (``asr.decode.DecodingConfig``)."""
    p.add_argument(
        "--decoder",
        choices=("greedy", "beam"),
        help="greedy (default; word timings) or beam search (the default with --lm)",
    )
    p.add_argument("--beam-size", type=int, default=16, help="beam width (default: %(default)s)")
    p.add_argument(
        "--lm", metavar="FILE", help="word n-gram LM, .arpa or KenLM binary (needs wav2vec2_lite[lm])"
    )
    p.add_argument(
        "--lexicon",
        metavar="FILE",
        help="words the LM decoder may output, one per line (default: the .arpa's unigrams)",
    )
    p.add_argument("--lm-weight", type=float, default=0.5, help="LM weight (default: %(default)s)")
    p.add_argument(
        "--word-score", type=float, default=0.0, help="score added per word (default: %(default)s)"
    )


def _decoding(args: argparse.Namespace):
    from wav2vec2_lite.asr.decode import DecodingConfig  # start-up: soundfile, the ASR stack not in --help

    decoder = args.decoder or ("beam" if args.lm or args.lexicon else "greedy")
    return DecodingConfig(
        decoder=decoder,
        beam_size=args.beam_size,
        lm=args.lm,
        lexicon=args.lexicon,
        lm_weight=args.lm_weight,
        word_score=args.word_score,
    ).validate()


def _report_failure(prog: str, failure, as_json: bool, debug: bool) -> None:
    """One error line on stderr, or a JSON record on stdout; the traceback first with ``--debug``."""
    if debug and failure.exception is not None:
        traceback.print_exception(failure.exception, file=sys.stderr)
    if as_json:
        sys.stdout.write(json.dumps(failure.to_dict()) + "\n")
        sys.stdout.flush()
    else:
        sys.stderr.write(f"{prog}: error: {failure.path}: {failure.error}\n")
        sys.stderr.flush()
