"""Files written all at once or not at all, and their sha256.

:func:`atomic_write_bytes` writes a temporary file in the same folder, flushes and fsyncs it,
renames it over the target and fsyncs the folder, so a crash leaves the previous file intact.
Model folders (:mod:`wav2vec2_lite.serialization`), training checkpoints and every tool's
outputs use it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["fsync_dir", "atomic_write_bytes", "atomic_write_text", "file_sha256"]


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a folder so that renames inside it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, write: bytes | bytearray | Callable[[BinaryIO], Any]) -> Path:
    """Write ``path`` all at once or not at all.

    ``write`` is the bytes, or a function given the open temporary file (binary, in the same
    folder as ``path``); a library that only writes to a path can use ``f.name``. The file is
    flushed, fsync'ed and renamed over ``path``, then the folder is fsync'ed. On any error
    (or interrupt) the temporary file is removed and ``path`` keeps its previous content;
    a SIGKILL can leave a hidden ``.NAME.tmp-PID-XXXXXXXX`` file, never a half-written ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "xb") as f:
            if isinstance(write, (bytes, bytearray)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
