"""Where a tool may write: a tool never overwrites what it did not write (docs/reliability.md).

Every console script that writes a folder claims it with :func:`claim_output_dir` before any
work, and every one that writes a single file (a report, a table) with
:func:`claim_output_file`. A folder may be used when it is

* new, or empty, or
* written by the same tool: its marker file ``.w2v2-output.json`` (``{"tool", "written",
  "files"}``) names the tool, and the folder holds no file the marker does not list.

Anything else is refused with one line naming the folder, what is in it and ``--overwrite``.
The tool writes its whole output set into a hidden sibling folder; :meth:`OutputDir.commit`
adds the marker and swaps it in (``DIR -> .DIR.w2v2-old-*``, ``tmp -> DIR``, delete the old
one), so the folder holds either the old set or the new one, never a mix. A crash between the
two renames is undone by the next claim, which also removes the temporary folders of dead
processes. A training run folder (``run.json``, ``metrics.jsonl``, ``.hydra/``, ``checkpoints/{last,best}``),
or anything inside one, is never an output folder, even with ``--overwrite``; nor is a folder
that holds one of the command's inputs or the current folder, when it would be replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from wav2vec2_lite.serialization import atomic_write_text, fsync_dir
from wav2vec2_lite.train.checkpoint import _pid_alive  # the same test as the checkpoints' temporary folders

__all__ = [
    "MARKER",
    "OutputDir",
    "OutputError",
    "claim_output_dir",
    "claim_output_file",
    "is_training_run",
    "training_run_of",
    "check_training_run_dir",
]

MARKER = ".w2v2-output.json"
_TMP, _OLD = ".w2v2-tmp-", ".w2v2-old-"
_SHOWN = 4  # entries named in a refusal


class OutputError(ValueError):
    """The output path cannot be used: one line with the path, what is in it, and what to do."""


# --------------------------------------------------------------------------------- what a folder holds
def is_training_run(folder: Path) -> bool:
    """A training run folder: it holds ``run.json``, ``metrics.jsonl``, Hydra's ``.hydra/`` or a
    ``checkpoints/last`` or ``best``."""
    return (
        (folder / "run.json").is_file()
        or (folder / "metrics.jsonl").is_file()
        or (folder / ".hydra").is_dir()
        or any((folder / "checkpoints" / name).is_dir() for name in ("last", "best"))
    )


def training_run_of(path: Path) -> Path | None:
    """``path`` or the nearest folder above it that is a training run folder; None if there is none."""
    path = Path(os.path.abspath(path))
    return next((p for p in (path, *path.parents) if is_training_run(p)), None)


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` (links included, not followed), relative POSIX paths, sorted."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        rel = Path(root).relative_to(folder)
        found += [(rel / n).as_posix() for n in names]
        found += [(rel / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(found)


def _runs_below(folder: Path) -> list[Path]:
    """Training run folders inside ``folder`` (not following links)."""
    return [
        Path(root) for root, _, _ in os.walk(folder) if Path(root) != folder and is_training_run(Path(root))
    ]


def _count_files(folder: Path, cap: int = 100_000) -> str:
    """How many files are below ``folder``; counting stops at ``cap`` (a refusal should not take minutes)."""
    count = 0
    for _, _, names in os.walk(folder):
        count += len(names)
        if count > cap:
            return f"more than {cap} files"
    return f"{count} file{'s' if count != 1 else ''}"


def _listing(folder: Path, names: list[str] | None = None) -> str:
    """``3 files: a, b/, c`` (at most ``_SHOWN`` names: ``names``, or the top-level entries)."""
    count = _count_files(folder) if names is None else f"{len(names)} file{'s' if len(names) != 1 else ''}"
    if names is None:
        names = sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in folder.iterdir())
    return f"{count}: " + ", ".join(names[:_SHOWN]) + (", …" if len(names) > _SHOWN else "")


def _marker(folder: Path) -> dict | None:
    """The marker's record, or None when there is none or it is not one."""
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("tool"), str)
        and isinstance(record.get("files"), list)
    )
    return record if ok else None


# --------------------------------------------------------------------------------- temporary siblings
def _tag(folder: Path) -> str:
    name = folder.name
    return name if len(name) <= 120 else name[:80] + "~" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _sibling(folder: Path, kind: str) -> Path:
    return folder.parent / f".{_tag(folder)}{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _recover(folder: Path) -> None:
    """Undo a swap cut between its renames (the previous set comes back), finish one cut after
    them, and remove the temporary folders of processes that no longer run."""
    if not folder.parent.is_dir():
        return
    prefix = f".{_tag(folder)}"
    for p in sorted(folder.parent.iterdir()):
        kind = (
            _OLD if p.name.startswith(prefix + _OLD) else _TMP if p.name.startswith(prefix + _TMP) else None
        )
        if kind is None or not p.is_dir():
            continue
        pid = p.name[len(prefix + kind) :].split("-")[0]
        if kind == _OLD and not folder.exists():
            os.rename(p, folder)
        elif kind == _OLD or (pid.isdigit() and not _pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------------- the rule
def _state(folder: Path, given: Path, tool: str, overwrite: bool, rerun: str) -> str:
    """``new``, ``empty``, ``own`` (replace an earlier output of ``tool``) or ``replace`` (``--overwrite``);
    OutputError for a folder the rule refuses."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{given}: is a file; {tool} needs a folder")
    run = training_run_of(folder)
    if run is not None:
        where = "is a training run folder" if run == folder else f"is inside the training run folder {run}"
        raise OutputError(
            f"{given} {where}: it belongs to the run, and {tool} never writes there, even with "
            f"--overwrite; choose another folder"
        )
    if not folder.exists():
        return "new"
    if not any(folder.iterdir()):
        return "empty"
    hint = "choose a new folder or pass --overwrite to replace everything in it"
    record = _marker(folder)
    if record is None:
        problem = f"{given} is not empty (holds {_listing(folder)}) and was not written by {tool}"
    elif record["tool"] != tool:
        problem = f"{given} was written by {record['tool']}, not {tool} (holds {_listing(folder)})"
    else:
        extra = [f for f in _files(folder) if f != MARKER and f not in set(record["files"])]
        if extra:
            problem = (
                f"{given} was written by {tool} but also holds {_listing(folder, extra)} "
                f"that it did not write"
            )
        elif rerun == "refuse" and not overwrite:
            raise OutputError(
                f"{given} already holds the output of an earlier {tool} ({_listing(folder)}); {tool} "
                f"does not add to it: give every input to one call, choose a new folder, or pass "
                f"--overwrite to replace it"
            )
        else:
            return "own"
    if not overwrite:
        raise OutputError(f"{problem}; {hint}")
    return "replace"


def _check_replaceable(folder: Path, given: Path, tool: str, inputs: Iterable[str | Path]) -> None:
    """A folder about to be replaced holds no input of the command, no training run and not the
    current folder."""
    for item in inputs:
        p = Path(item).resolve()
        if p == folder or folder in p.parents:
            raise OutputError(
                f"{given} holds {item}, an input of this command; replacing it would delete it: "
                f"choose another folder"
            )
    cwd = Path.cwd().resolve()
    if cwd == folder or folder in cwd.parents:
        raise OutputError(
            f"{given} is (or holds) the current folder; {tool} replaces its output folder as a whole: "
            f"run it from another folder"
        )
    runs = _runs_below(folder)
    if runs:
        raise OutputError(
            f"{given} holds the training run folder {runs[0]}; {tool} never replaces one, even with "
            f"--overwrite: choose another folder"
        )


@dataclass
class OutputDir:
    """A claimed output folder: write into :attr:`staging`, then :meth:`commit` (or :meth:`discard`).

    As a context manager: commits when the block ends normally, discards on an exception.
    """

    path: Path
    """The folder, as given."""
    tool: str
    overwrite: bool
    rerun: str
    inputs: tuple[str | Path, ...]
    state: str
    """``new``, ``empty``, ``own`` or ``replace``: what the folder was when claimed."""
    staging: Path
    """The hidden sibling folder the tool writes its output set into."""

    @property
    def folder(self) -> Path:
        return self.path.resolve()

    def commit(self) -> Path:
        """Record the files in the marker and put the set in place: all of it, or nothing.
        Returns :attr:`path`."""
        folder = self.folder
        try:  # the folder may have changed while the tool ran: the rule again
            self.state = _state(folder, self.path, self.tool, self.overwrite, self.rerun)
            if self.state in ("own", "replace"):
                _check_replaceable(folder, self.path, self.tool, self.inputs)
            self.staging.mkdir(exist_ok=True)
            record = {
                "tool": self.tool,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": [f for f in _files(self.staging) if f != MARKER],
            }
            atomic_write_text(self.staging / MARKER, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
            if self.state == "new":
                os.rename(self.staging, folder)
            elif self.state == "empty":  # keep the folder itself (it may be the current one or a mount point)
                for entry in sorted(self.staging.iterdir(), key=lambda p: p.name == MARKER):
                    shutil.move(str(entry), str(folder / entry.name))
                self.staging.rmdir()
            else:
                old = _sibling(folder, _OLD)
                os.rename(folder, old)
                try:
                    os.rename(self.staging, folder)
                except BaseException:
                    os.rename(old, folder)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            self.discard()
            raise
        fsync_dir(folder.parent)
        if self.state in ("own", "replace"):
            what = f"the earlier output of {self.tool}" if self.state == "own" else "everything (--overwrite)"
            sys.stderr.write(f"{self.tool}: note: replaced {what} in {self.path}\n")
        return self.path

    def discard(self) -> None:
        """Remove what was written; the folder is left as it was."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "OutputDir":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def claim_output_dir(
    path: str | Path,
    tool: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
    rerun: str = "replace",
) -> OutputDir:
    """Check ``path`` against the rule for ``tool`` and return an :class:`OutputDir` to write into.

    Args:
        overwrite: replace a folder the rule would refuse (never a training run, an input or the
            current folder).
        inputs: what the command reads (model, audio, data): a folder holding one is never replaced.
        rerun: what a folder written by the same tool gets: ``replace`` (the whole set, with a note on
            stderr) or ``refuse`` (without ``overwrite``).
    Raises:
        OutputError: one line naming the folder, what is in it and ``--overwrite``.
    """
    if rerun not in ("replace", "refuse"):
        raise ValueError(f"rerun must be 'replace' or 'refuse', found {rerun!r}")
    given = Path(path)
    folder = given.resolve()
    _recover(folder)
    state = _state(folder, given, tool, overwrite, rerun)
    inputs = tuple(i for i in inputs if i is not None)
    if state in ("own", "replace"):
        _check_replaceable(folder, given, tool, inputs)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(folder, _TMP)
    staging.mkdir()
    return OutputDir(given, tool, overwrite, rerun, inputs, state, staging)


def claim_output_file(
    path: str | Path, tool: str, *, overwrite: bool = False, own: Callable[[Path], bool] = lambda p: False
) -> Path:
    """Check that ``tool`` may write the file ``path``: it is new, or ``own(path)`` recognises it as
    written by ``tool``, or ``overwrite`` is given and it is not a file of a training run. Write it
    with :func:`~wav2vec2_lite.serialization.atomic_write_text` afterwards. Returns ``path``."""
    given = Path(path)
    file = given.resolve()
    if file.is_dir():
        raise OutputError(f"{given}: is a folder; {tool} writes a file there: give a file name")
    if not file.exists() or own(file):
        return given
    run = training_run_of(file.parent)
    if run is not None:
        raise OutputError(
            f"{given} belongs to the training run {run}, not to {tool}; it is never replaced, even with "
            f"--overwrite: choose another file name"
        )
    if not overwrite:
        raise OutputError(
            f"{given} exists and was not written by {tool}; choose another file name or pass "
            f"--overwrite to replace it"
        )
    return given


def starts_with(prefix: bytes) -> Callable[[Path], bool]:
    """An ``own`` test for :func:`claim_output_file`: the file starts with ``prefix``."""

    def test(path: Path) -> bool:
        with open(path, "rb") as f:
            return f.read(len(prefix)) == prefix

    return test


def contains(signature: bytes, within: int = 4096) -> Callable[[Path], bool]:
    """An ``own`` test for :func:`claim_output_file`: ``signature`` is in the file's first
    ``within`` bytes."""

    def test(path: Path) -> bool:
        with open(path, "rb") as f:
            return signature in f.read(within)

    return test


def check_training_run_dir(path: str | Path, key: str) -> None:
    """A training command's run folder (``key`` names the setting) is never another tool's output
    folder (one with a marker: a corpus of ``w2v2-manifest``, an export, features); OutputError if
    it is. Any other folder is left to the trainer as before: an earlier run's is resumed, and
    scripts may record their recipe there first."""
    given = Path(path)
    folder = given.resolve()
    record = _marker(folder) if folder.is_dir() and not is_training_run(folder) else None
    if record is not None:
        raise OutputError(
            f"{given} was written by {record['tool']} (holds {_listing(folder)}); a training run "
            f"writes run.json, config.yaml, metrics.jsonl and checkpoints/ in its folder: set {key} to "
            f"a new folder (the folder of an earlier run resumes it)"
        )
