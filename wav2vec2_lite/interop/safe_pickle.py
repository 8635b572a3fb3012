"""Load pickled torch checkpoints without running code from them.

``torch.load(weights_only=True)`` rebuilds tensors, containers and numbers only; any other
class or function the pickle names (a ``GLOBAL``) is refused unless it is allowlisted.
Foreign checkpoints (fairseq ``.pt``) also hold an ``argparse.Namespace`` or an omegaconf
``DictConfig`` and, in ``extra_state``, sometimes numpy scalars; :func:`safe_globals` adds
exactly those data-only classes. Everything else — ``os.system``, ``builtins.eval``, a
``__reduce__`` of any other class — makes the load fail with
:class:`UntrustedCheckpointError`, before anything is called.

``trust=True`` falls back to full pickle, which executes whatever the file says; it logs
a warning and is meant only for files from a source you trust.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import pickle
import re
import typing
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from omegaconf import base as omegaconf_base
from omegaconf import nodes as omegaconf_nodes

try:
    from numpy._core import multiarray
except ImportError:  # numpy 1.x
    from numpy.core import multiarray  # type: ignore[no-redef]

__all__ = ["UntrustedCheckpointError", "DamagedCheckpointError", "safe_globals", "load_checkpoint"]

log = logging.getLogger(__name__)


class DamagedCheckpointError(pickle.UnpicklingError):
    """The file is empty, truncated or not a PyTorch checkpoint (torch's reader could not parse it)."""


@contextlib.contextmanager
def _readable(p: Path):
    """torch.load's reader errors on a damaged file (EOFError, IndexError, a zip-reader RuntimeError,
    BadZipFile) as one :class:`DamagedCheckpointError` naming the file."""
    try:
        yield
    except (EOFError, IndexError, RuntimeError, zipfile.BadZipFile) as e:
        if isinstance(e, RuntimeError) and not re.search(
            r"PytorchStreamReader|zip archive|central directory", str(e)
        ):
            raise  # e.g. a CUDA tensor on a machine without CUDA: not the file's fault
        size = p.stat().st_size
        why = "empty (0 bytes)" if size == 0 else f"truncated or not a PyTorch checkpoint ({size} bytes)"
        raise DamagedCheckpointError(
            f"{p}: cannot be read as a model: the file is {why}; copy it again, or give a run folder, a "
            f"model folder or a Hugging Face folder"
        ) from e


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The safe loader refused a checkpoint (it names code or classes outside the allowlist)."""


def _omegaconf_globals() -> list[Any]:
    """What a pickled ``DictConfig`` needs (measured: omegaconf 2.3 names these ten globals).

    ``DictConfig``/``ListConfig`` and their metadata restore themselves through
    ``__setstate__`` from plain dicts; ``dict``/``list``/``int``/``typing.Any`` appear as the
    recorded key/element types. The leaf node classes of typed configs are data holders too.
    """
    leaf = [
        getattr(omegaconf_nodes, n)
        for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode")
        if hasattr(omegaconf_nodes, n)
    ]
    return [
        DictConfig,
        ListConfig,
        omegaconf_base.ContainerMetadata,
        omegaconf_base.Metadata,
        *leaf,
        typing.Any,
        collections.defaultdict,
        dict,
        list,
        int,
        float,
        str,
        bool,
    ]


def _numpy_globals() -> list[Any]:
    """numpy scalars and arrays (``extra_state`` of some fairseq runs), under numpy 1 and 2 names."""
    out: list[Any] = [np.ndarray, np.dtype]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray._reconstruct, f"{mod}._reconstruct"), (multiarray.scalar, f"{mod}.scalar")]
    numeric = (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
        np.complex64,
        np.complex128,
    )
    out += [type(np.dtype(t)) for t in numeric]  # dtype instances are rebuilt with __setstate__
    return out


def safe_globals() -> list[Any]:
    """The allowlist added to ``weights_only`` loading: data-only classes, no callables with effects."""
    return [argparse.Namespace, *_omegaconf_globals(), *_numpy_globals()]


def _allowed_names() -> set[str]:
    names = set()
    for g in safe_globals():
        names.add(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}")
    return names


def _refused_globals(path: Path, message: str) -> list[str]:
    """The globals the file names that the safe loader refuses (static scan, nothing is run)."""
    names: list[str] = []
    try:
        allowed = _allowed_names()
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in allowed]
    except Exception:  # legacy (non-zip) format: the scan is not available
        pass
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", message)
    if not names:
        m = re.search(r"(unrecognized function .*?|but got <class '[^']+'>)(?:\n|$)", message)
        if m:
            names = [m.group(1)]
    return sorted(set(names))


def load_checkpoint(
    path: str | os.PathLike,
    *,
    trust: bool = False,
    map_location: Any = "cpu",
    how_to_trust: str = "trust=True",
) -> Any:
    """``torch.load`` a checkpoint without executing code from it, unless ``trust``.

    Args:
        path: the ``.pt`` file.
        trust: use full pickle (runs arbitrary code from the file; logs a warning).
        map_location: as for ``torch.load``.
        how_to_trust: how the caller's user asks for trust, for the error message
            (e.g. ``"load_fairseq(path, trust=True)"``).

    Raises:
        FileNotFoundError: no such file.
        UntrustedCheckpointError: the file needs globals outside :func:`safe_globals`
            (the message names them, the file and how to proceed).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist or is not a file")
    if trust:
        log.warning(
            "loading %s with full pickle (trust=True): this executes any code the file contains; "
            "do this only for files from a source you trust",
            p,
        )
        with _readable(p):
            return torch.load(p, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(safe_globals()), _readable(p):
            return torch.load(p, map_location=map_location, weights_only=True)
    except DamagedCheckpointError:
        raise
    except pickle.UnpicklingError as e:
        refused = _refused_globals(p, str(e))
        what = f"it names {', '.join(refused)}" if refused else "it needs objects outside the allowlist"
        raise UntrustedCheckpointError(
            f"{p}: refused to unpickle this checkpoint: {what}, which the safe loader does not allow "
            f"(unpickling such objects can run code from the file). If you trust the source of this file, "
            f"load it with {how_to_trust}, which uses full pickle; otherwise do not use it."
        ) from None
