"""Crash-safe checkpoints: safetensors weights + a plain training-state file.

Layout of a checkpoint folder (``RUN/checkpoints/last``, ``RUN/checkpoints/best``)::

    model.safetensors    weights (wav2vec2_lite.serialization.save_model)
    config.json          model config (+ class name), so load_model(folder) works
    dict.ltr.txt         a fine-tuning checkpoint's vocabulary (the task's save_extras)
    training_state.pt    optimizer, precision/scaler, RNG states, sampler position,
                         update, epoch, run config, sha256 of model.safetensors
    checksums.json       sha256 and size of each file above, written last

Writing is atomic at two levels. Every file is written to a temporary name in its own
folder, flushed, fsync'ed and ``os.replace``'d. A whole checkpoint is first written to
a hidden ``.NAME.tmp-PID`` folder; only when complete is it swapped in
(``NAME -> .NAME.old``, ``tmp -> NAME``, delete ``.NAME.old``). A crash at any point
leaves either ``NAME`` or ``.NAME.old`` complete, and :func:`resolve_checkpoint`
recovers from the latter; temporary folders are never taken as a checkpoint.

Loading never executes pickled code: the state file is read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, dicts only). Every file
is checked against ``checksums.json`` before anything is read (a flipped byte in the AdamW
moments is an error, not a silently different resume); a checkpoint saved before the record
existed is checked by the weights' hash its state file records. Every error names the file at
fault.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

# one implementation of atomic files and of the error type, shared with save_model/load_model
from wav2vec2_lite.serialization import (
    CONFIG_NAME,
    TRAINING_STATE_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    note_unrecorded,
    read_checksums,
    read_weights,
    save_model,
    verify_checksums,
    write_checksums,
)
from wav2vec2_lite.serialization import fsync_dir as _fsync_dir

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "load_training_state",
    "save_checkpoint",
    "resolve_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "STATE_FILE",
    "WEIGHTS_FILE",
    "file_sha256",
    "remove_stale_temps",
]

STATE_FILE = TRAINING_STATE_NAME
WEIGHTS_FILE = WEIGHTS_NAME


# ------------------------------------------------------------------ atomic files
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write_bytes` (streamed into the temporary file)."""
    return atomic_write_bytes(path, lambda f: torch.save(obj, f))


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a training-state file without running pickled code; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training-state file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors, numbers, strings, "
            f"lists and dicts (torch.load weights_only=True). Training-state files written by wav2vec2_lite "
            f"never do; do not trust this file. Details: {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: corrupt or truncated training-state file ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(state, dict) or "update" not in state:
        raise CheckpointError(f"{path}: not a wav2vec2_lite training-state file (no 'update' entry)")
    return state


# ------------------------------------------------------------------ RNG state
def capture_rng_state(generator: torch.Generator | None = None) -> dict:
    """Every random source the loop draws from, as weights_only-loadable values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        if "generator" not in state:
            raise CheckpointError("training state has no mask/negative generator state")
        generator.set_state(state["generator"])


# ------------------------------------------------------------------ checkpoint folders
def _os_error_number(message: str) -> int | None:
    """The errno in safetensors' message (``... (os error 28)``), or None."""
    found = re.search(r"os error (\d+)", message)
    return int(found.group(1)) if found else None


def save_checkpoint(
    root: str | os.PathLike,
    name: str,
    model: nn.Module,
    state: dict,
    save_weights: Callable[[nn.Module, Path], None] | None = None,
) -> Path:
    """Write ``root/name`` (weights + ``state``) so that a crash never leaves it half-written.

    If writing fails (disk full, permissions, I/O error) the temporary folder is removed,
    the previous ``root/name`` is left as it was, and :class:`CheckpointError` says why; an
    interrupt (KeyboardInterrupt) is cleaned up the same way and re-raised as is.
    """
    root = Path(root)
    final, old = root / name, root / f".{name}.old"
    tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        (save_weights or save_model)(model, tmp)
        if not (tmp / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{tmp}: the weight saver wrote no {WEIGHTS_FILE}")
        saved = read_checksums(tmp) or {}  # save_model's record, written moments ago: its hashes are reused
        size = (tmp / WEIGHTS_FILE).stat().st_size
        if saved.get(WEIGHTS_FILE, {}).get("bytes") != size:
            saved = {WEIGHTS_FILE: {"sha256": file_sha256(tmp / WEIGHTS_FILE), "bytes": size}}
        state = {**state, "weights_sha256": saved[WEIGHTS_FILE]["sha256"]}
        atomic_torch_save(state, tmp / STATE_FILE)
        write_checksums(tmp, reuse=saved)  # every file of the checkpoint, last
        _fsync_dir(tmp)
        # Swap in. Between the two renames only .NAME.old exists; resolve_checkpoint recovers it.
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not final.exists():  # failed between the renames: put the previous one back
            os.rename(old, final)
        if isinstance(e, (OSError, SafetensorError)):  # safetensors' own error carries "(os error N)"
            code = e.errno if isinstance(e, OSError) else _os_error_number(str(e))
            why = errno.errorcode.get(code, "") if code else ""
            text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise CheckpointError(
                f"{final}: could not write the checkpoint ({why + ': ' if why else ''}{text}); "
                f"nothing was replaced: the previous {final} (if any) is intact"
                + ("; free some disk space" if code in (errno.ENOSPC, errno.EDQUOT) else "")
            ) from e
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Delete ``.NAME.tmp-PID-*`` folders/files left in ``root`` by killed processes (PID gone).

    They are never read as checkpoints, but each holds up to a checkpoint's worth of disk.
    Returns what was removed.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if not p.name.startswith(".") or ".tmp-" not in p.name:
            continue
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_complete(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def resolve_checkpoint(root: str | os.PathLike, name: str = "last") -> Path | None:
    """The complete checkpoint ``root/name``, recovering one interrupted mid-swap; None if none."""
    root = Path(root)
    final, old = root / name, root / f".{name}.old"
    if final.is_dir() and _is_complete(final):
        return final
    if old.is_dir() and _is_complete(old) and not final.exists():
        os.rename(old, final)
        _fsync_dir(root)
        return final
    if final.exists():
        raise CheckpointError(f"{final}: incomplete checkpoint (needs {WEIGHTS_FILE} and {STATE_FILE})")
    return None


def load_checkpoint(folder: str | os.PathLike, model: nn.Module | None = None) -> dict:
    """Verify ``folder`` (every file against its ``checksums.json``), load its weights into
    ``model`` (strict) and return its training state."""
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder / STATE_FILE}: training-state file not found")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    files = verify_checksums(folder, required=(STATE_FILE, WEIGHTS_FILE))
    version = _format_version(folder) if files is None else None
    state = load_training_state(folder / STATE_FILE)
    expected = state.get("weights_sha256")
    if files is None:  # saved before the record: the weights against the hash the state file holds
        note_unrecorded(folder, version, expected)
    if files is not None and expected not in (None, files[WEIGHTS_FILE]["sha256"]):
        raise CheckpointError(
            f"{folder / STATE_FILE}: records weights other than the {WEIGHTS_FILE} beside it "
            f"(files of two checkpoints mixed)"
        )
    if files is None and expected is not None and file_sha256(weights) != expected:
        raise CheckpointError(
            f"{weights}: content does not match the sha256 recorded in {folder / STATE_FILE} "
            f"(corrupt, truncated, or replaced after saving)"
        )
    if model is not None:
        # today's key names, also for an older format_version; verified above when there is a record
        tensors = read_weights(folder, verify=files is None)
        missing, unexpected = _load_into(model, tensors)
        if missing or unexpected:
            raise CheckpointError(
                f"{weights}: does not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    return state


def _format_version(folder: Path) -> int | None:
    """``format_version`` of the folder's ``config.json``; None without one (another writer's weights)."""
    try:
        return int(json.loads((folder / CONFIG_NAME).read_text()).get("format_version", 1))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{folder / CONFIG_NAME}: not a valid wav2vec2_lite config ({e})") from None


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        return missing, unexpected
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(tensors[k])
    return [], []
