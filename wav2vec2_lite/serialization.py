"""Save and load models as a folder: ``model.safetensors`` + ``config.json``; atomic files.

``config.json`` records a ``format_version``. Version 2 moved the pretraining model's
target-side modules under its objective (``quantizer.*`` -> ``objective.quantizer.*``,
likewise ``project_q`` and ``final_proj``); :func:`load_model` renames the keys of
version-1 folders (:func:`upgrade_state_dict`), so folders saved before still load. Version 3
moved each objective's settings into its own sub-config (``contrastive.*``, ``best_rq.*``);
:func:`~wav2vec2_lite.config.upgrade_config_dict` reads older configs in today's layout.

``config.json`` also records ``weights_sha256``, the sha256 of ``model.safetensors``;
:func:`load_model` and :func:`read_weights` check it on every load, so a weights file that was
corrupted in place (same size, other bytes) is an error rather than a silently wrong model. A
folder without it (saved before, or by another tool) loads with a one-line notice. Non-finite
weights are an error too.

Tied weights (one tensor under several names, e.g. the shared quantizer of
``contrastive.same_quantizer``) are stored once: safetensors refuses tensors that share
memory, so each further name is listed in the file's ``tied`` metadata (name -> stored name)
and restored on load (:func:`read_weights`, :func:`load_model`). Files without ties are as
before.

Weights never go through pickle. Every file is written atomically (:func:`atomic_write_bytes`:
temporary file in the same folder, flush, fsync, ``os.replace``, fsync of the folder), so
a crash mid-save leaves the previous file intact. The training checkpoints
(:mod:`wav2vec2_lite.train.checkpoint`) use the same writer and :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from wav2vec2_lite.config import Wav2Vec2Config, upgrade_config_dict

__all__ = [
    "find_model_folder",
    "save_model",
    "load_model",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "CheckpointError",
    "FORMAT_VERSION",
    "upgrade_state_dict",
    "read_config",
    "read_weights",
    "file_sha256",
    "tied_names",
]

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 3

# key prefixes renamed when a folder of an older format version is loaded: version -> class -> (old, new)
_KEY_RENAMES: dict[int, dict[str, tuple[tuple[str, str], ...]]] = {
    1: {
        "Wav2Vec2ForPreTraining": (
            ("quantizer.", "objective.quantizer."),
            ("project_q.", "objective.project_q."),
            ("final_proj.", "objective.final_proj."),
        )
    },
}


class CheckpointError(RuntimeError):
    """A saved model, checkpoint or training state is missing, corrupt, inconsistent, unsafe
    or could not be written; the message names the file."""


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


_MODEL_CLASSES: dict[str, type[nn.Module]] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def register_model_class(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: ``save_model`` / ``load_model`` know a model class by its name.
    The models register themselves (``models.py``), so this module never imports them."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def _model_classes() -> dict[str, type[nn.Module]]:
    return dict(_MODEL_CLASSES)


def upgrade_state_dict(
    state: dict[str, torch.Tensor], model_class: str, format_version: int
) -> dict[str, torch.Tensor]:
    """Rename the keys of a ``model_class`` state dict saved at ``format_version`` to today's
    layout (:data:`FORMAT_VERSION`); keys that did not change are kept as they are."""
    if format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"saved with format_version {format_version}, newer than this library's "
            f"{FORMAT_VERSION}: upgrade wav2vec2_lite to load it"
        )
    for version in range(format_version, FORMAT_VERSION):
        renames = _KEY_RENAMES.get(version, {}).get(model_class, ())
        out = {}
        for key, value in state.items():
            for old, new in renames:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            out[key] = value
        state = out
    return state


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``t``, copied if it is a slice of a larger storage (parameters bound to one flat buffer by
    mixed-precision training): safetensors refuses tensors that share memory."""
    return t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t


def tied_names(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Names whose tensor is the very tensor of an earlier name (same memory, offset, shape and
    strides: tied weights) -> that earlier name."""
    first: dict[tuple, str] = {}
    tied: dict[str, str] = {}
    for key, v in state.items():
        if v.numel() == 0:
            continue
        ident = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), v.shape, v.stride(), v.dtype)
        if ident in first:
            tied[key] = first[ident]
        else:
            first[ident] = key
    return tied


def save_model(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (class name, config, metadata) to ``directory``."""
    directory = Path(directory)
    classes = _model_classes()
    name = type(model).__name__
    if name not in classes:
        raise TypeError(f"save_model supports {sorted(classes)}; got {name}")
    own = model.state_dict()
    tied = tied_names(own)
    state = {k: _own_storage(v.detach().contiguous().cpu()) for k, v in own.items() if k not in tied}
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(f"{directory}: refusing to save non-finite weights ({_name_some(bad)})")
    file_meta = {"format": "pt", **({"tied": json.dumps(tied, sort_keys=True)} if tied else {})}
    atomic_write_bytes(directory / WEIGHTS_NAME, lambda f: save_file(state, f.name, metadata=file_meta))
    info = {
        "format_version": FORMAT_VERSION,
        "model_class": name,
        "config": model.config.to_dict(),
        "weights_sha256": file_sha256(directory / WEIGHTS_NAME),
        "metadata": metadata or {},
    }
    text = json.dumps(info, indent=2, sort_keys=True)
    atomic_write_text(directory / CONFIG_NAME, text)
    return directory


def _read_info(directory: Path) -> dict[str, Any]:
    """config.json of a saved folder: the parsed config, class name and format version."""
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing (expected a folder written by save_model)")
    try:
        info = json.loads(cfg_path.read_text())
        sha = info.get("weights_sha256")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
            raise ValueError(f"weights_sha256 must be 64 hex digits, got {sha!r}")
        return {
            "config": Wav2Vec2Config.from_dict(upgrade_config_dict(info["config"])),
            "model_class": info["model_class"],
            "format_version": int(info.get("format_version", 1)),
            "weights_sha256": sha,
        }
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_path}: not a valid wav2vec2_lite config ({e})") from e


def read_config(directory: str | Path) -> Wav2Vec2Config:
    """The model config of a folder written by :func:`save_model`, in today's layout (weights not read)."""
    return _read_info(Path(directory))["config"]


def read_weights(directory: str | Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a folder written by :func:`save_model`, under today's key names (a
    folder of an older ``format_version`` has its keys renamed by :func:`upgrade_state_dict`).
    Weights without a ``config.json`` beside them (another writer's) are returned as stored."""
    directory = Path(directory)
    info = _read_info(directory) if (directory / CONFIG_NAME).exists() else None
    return _read_state(directory, info, map_location)


def _read_state(directory: Path, info: dict[str, Any] | None, map_location: str) -> dict[str, torch.Tensor]:
    """The weights file of ``directory``, keys upgraded per ``info`` (its parsed config.json, if any)."""
    w_path = directory / WEIGHTS_NAME
    if info is not None:
        _verify_checksum(directory, info.get("weights_sha256"))
    try:
        state = load_file(str(w_path), device=map_location)
        with safe_open(str(w_path), framework="pt") as f:
            tied = json.loads((f.metadata() or {}).get("tied", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path}: unreadable or truncated safetensors file ({e})") from e
    if not isinstance(tied, dict):
        raise CheckpointError(f"{w_path}: its 'tied' metadata must map names to stored names; got {tied!r}")
    lost = sorted(src for src in tied.values() if src not in state)
    if lost:
        raise CheckpointError(f"{w_path}: its 'tied' metadata names tensors the file lacks: {lost[:3]}")
    state.update({alias: state[src] for alias, src in tied.items()})
    bad = _non_finite(state)
    if bad:
        raise CheckpointError(
            f"{w_path}: non-finite weights (NaN/Inf) in {_name_some(bad)}; this model cannot "
            f"be used: load an earlier checkpoint"
        )
    if info is None:
        return state
    try:
        return upgrade_state_dict(state, info["model_class"], info["format_version"])
    except CheckpointError as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {e}") from None


def _verify_checksum(directory: Path, expected: str | None) -> None:
    """Compare ``model.safetensors`` with the sha256 its ``config.json`` records."""
    w_path = directory / WEIGHTS_NAME
    if expected is None:
        log.info(
            "%s: no weights_sha256 in config.json (saved by an older version or another tool): "
            "loading without an integrity check",
            directory,
        )
        return
    actual = file_sha256(w_path)
    if actual != expected:
        raise CheckpointError(
            f"{w_path}: corrupted: its sha256 {actual[:12]}… does not match the "
            f"{expected[:12]}… recorded in {CONFIG_NAME} (the file was changed after saving)"
        )


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or Inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _name_some(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_model(
    directory: str | Path, cls: type[nn.Module] | None = None, map_location: str = "cpu"
) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`. ``cls`` overrides the saved class
    (e.g. load a pretraining folder's backbone into ``Wav2Vec2ForCTC`` is *not* done here:
    use ``Wav2Vec2ForCTC.from_pretraining``)."""
    directory = Path(directory)
    info = _read_info(directory)
    classes = _model_classes()
    if cls is None:
        if info["model_class"] not in classes:
            raise CheckpointError(f"{directory / CONFIG_NAME}: unknown model_class {info['model_class']!r}")
        cls = classes[info["model_class"]]
    state = _read_state(directory, info, map_location)
    model = cls(info["config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME}: weights do not fit {cls.__name__} with the saved config ({e})"
        ) from e
    return model.to(map_location)


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Exact equality of two state dicts (same keys, ``torch.equal`` tensors)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def find_model_folder(path: str | Path, marker: str = CONFIG_NAME) -> Path | None:
    """The folder holding a saved model: a run dir's ``checkpoints/best`` (else ``last``), a
    ``best``/``last`` folder below ``path``, or ``path`` itself — the first that holds ``marker``."""
    path = Path(path)
    for folder in (
        path / "checkpoints" / "best",
        path / "checkpoints" / "last",
        path / "best",
        path / "last",
        path,
    ):
        if (folder / marker).is_file():
            return folder
    return None
