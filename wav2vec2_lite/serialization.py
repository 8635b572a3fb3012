"""Save and load models as a folder: ``model.safetensors`` + ``config.json``; atomic files.

``config.json`` records a ``format_version``. Version 2 moved the pretraining model's
target-side modules under its objective (``quantizer.*`` -> ``objective.quantizer.*``,
likewise ``project_q`` and ``final_proj``); :func:`load_model` renames the keys of
version-1 folders (:func:`upgrade_state_dict`), so folders saved before still load. Version 3
moved each objective's settings into its own sub-config (``contrastive.*``, ``best_rq.*``);
:func:`~wav2vec2_lite.config.upgrade_config_dict` reads older configs in today's layout.

Version 4 added ``checksums.json``, the integrity record of the whole folder: the sha256 and
size of every file in it (``config.json``, ``model.safetensors``, a checkpoint's
``training_state.pt`` and ``dict.ltr.txt``, a bundle's ``provenance.json``), written last
(:func:`write_checksums`; a file cannot hold its own hash). Every load verifies the files it
depends on (:func:`verify_checksums`): a changed ``layer_norm_eps`` in ``config.json``, a flipped
byte in the dictionary or the AdamW moments is an error naming the file, not a silently
different model. A version-4 folder without its record is refused; a folder of an earlier
version (no record) is verified by the ``weights_sha256`` its ``config.json`` records, and says
so once per folder (a warning). Files added to a folder after saving (a ``tokenizer.json``
beside a saved model) are not covered: logged, not refused. Non-finite weights are an error.

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

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from wav2vec2_lite.atomic_files import atomic_write_bytes, atomic_write_text, file_sha256, fsync_dir
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
    "CHECKSUMS_NAME",
    "TRAINING_STATE_NAME",
    "write_checksums",
    "verify_checksums",
    "check_finite",
    "read_checksums",
    "note_unrecorded",
    "COVERED_IF_PRESENT",
]

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CHECKSUMS_NAME = "checksums.json"  # the integrity record of a folder (format_version 4)
TRAINING_STATE_NAME = "training_state.pt"  # a training checkpoint's state (wav2vec2_lite.train.checkpoint)
FORMAT_VERSION = 4
CHECKSUMS_VERSION = 1  # of the record's own layout

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


_MODEL_CLASSES: dict[str, type[nn.Module]] = {}


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
    """Write ``model.safetensors``, ``config.json`` (class name, config, metadata) and last
    ``checksums.json`` (those two and any tokenizer or provenance file already beside them) to
    ``directory``."""
    directory = Path(directory)
    classes = _model_classes()
    name = type(model).__name__
    if name not in classes:
        raise TypeError(f"save_model supports {sorted(classes)}; got {name}")
    own = model.state_dict()
    tied = tied_names(own)
    state = {k: _own_storage(v.detach().contiguous().cpu()) for k, v in own.items() if k not in tied}
    check_finite(state, directory, saving=True)
    file_meta = {"format": "pt", **({"tied": json.dumps(tied, sort_keys=True)} if tied else {})}
    atomic_write_bytes(directory / WEIGHTS_NAME, lambda f: save_file(state, f.name, metadata=file_meta))
    w_path = directory / WEIGHTS_NAME
    weights = {"sha256": file_sha256(w_path), "bytes": w_path.stat().st_size}
    info = {
        "format_version": FORMAT_VERSION,
        "model_class": name,
        "config": model.config.to_dict(),
        "weights_sha256": weights["sha256"],
        "metadata": metadata or {},
    }
    text = json.dumps(info, indent=2, sort_keys=True)
    atomic_write_text(directory / CONFIG_NAME, text)
    beside = [n for n in COVERED_IF_PRESENT if (directory / n).is_file()]
    write_checksums(directory, [WEIGHTS_NAME, CONFIG_NAME, *beside], reuse={WEIGHTS_NAME: weights})
    return directory


# ------------------------------------------------------------------ the integrity record
# files a loader reads from a model folder besides config.json and the weights: covered by the
# record save_model writes when they are there (a checkpoint's record covers every file in it)
COVERED_IF_PRESENT = (TRAINING_STATE_NAME, "tokenizer.json", "vocab.json", "dict.ltr.txt", "provenance.json")
_NOTED: set[str] = set()  # folders whose missing record was already reported in this process


def write_checksums(
    directory: str | Path,
    names: Iterable[str] | None = None,
    *,
    reuse: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Write ``directory/checksums.json``: the sha256 and size of each of ``names`` (default: every
    file in the folder whose name does not start with a dot, but the record), atomically, after
    them. ``reuse``: entries computed moments ago by the same save (e.g. the weights' hash
    :func:`save_model` recorded), taken as they are for a file of the recorded size, so that no
    file is hashed twice. Returns the entries."""
    directory = Path(directory)
    if names is None:
        names = [p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
    files: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names) - {CHECKSUMS_NAME}):
        size = (directory / name).stat().st_size
        known = (reuse or {}).get(name)
        if known is not None and known.get("bytes") == size:
            files[name] = {"sha256": known["sha256"], "bytes": size}
        else:
            files[name] = {"sha256": file_sha256(directory / name), "bytes": size}
    record = {"checksums_version": CHECKSUMS_VERSION, "algorithm": "sha256", "files": files}
    atomic_write_text(directory / CHECKSUMS_NAME, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return files


def read_checksums(directory: str | Path) -> dict[str, dict[str, Any]] | None:
    """The entries (file name -> ``{"sha256", "bytes"}``) of a folder's ``checksums.json``; None
    when the folder has none. A record that is not one is an error naming it."""
    path = Path(directory) / CHECKSUMS_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        version = int(record["checksums_version"])
        if version > CHECKSUMS_VERSION:
            raise ValueError(f"checksums_version {version} is newer than this library's {CHECKSUMS_VERSION}")
        if record.get("algorithm") != "sha256":
            raise ValueError(f"algorithm {record.get('algorithm')!r}, expected 'sha256'")
        files = record["files"]
        for name, entry in files.items():
            sha, size = entry["sha256"], entry["bytes"]
            if "/" in name or name.startswith(".") or not name:
                raise ValueError(f"{name!r} is not a file name in the folder")
            if not (isinstance(sha, str) and len(sha) == 64) or not isinstance(size, int):
                raise ValueError(f"{name!r}: expected 64 hex digits and a size, got {sha!r}, {size!r}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a valid checksum record ({e})") from None
    return files


def verify_checksums(
    directory: str | Path,
    names: Iterable[str] | None = None,
    *,
    required: Iterable[str] = (),
    skip: Iterable[str] = (),
) -> dict[str, dict[str, Any]] | None:
    """Check files of ``directory`` against its ``checksums.json``: ``names`` (default: every file the
    record lists but ``skip``). Each of ``names`` and ``required`` must be listed. Returns the
    record's entries, or None when the folder has no record (the caller decides what that means:
    :func:`note_unrecorded`). A file missing, or whose size or sha256 differs from the record, is
    a :class:`CheckpointError` naming it; a loader-read file beside them that the record does not
    list (added after saving) is logged."""
    directory = Path(directory)
    files = read_checksums(directory)
    if files is None:
        return None
    record = directory / CHECKSUMS_NAME
    names = [n for n in files if n not in set(skip)] if names is None else list(names)
    for name in (*names, *required):
        if name not in files:
            raise CheckpointError(
                f"{directory / name}: not covered by {record} (the folder was changed after saving)"
            )
    for name in names:
        path, entry = directory / name, files[name]
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; {record} lists it (an incomplete copy of the folder?)")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"{path}: corrupted: {size} bytes where {CHECKSUMS_NAME} recorded {entry['bytes']} "
                f"(truncated, or changed after saving)"
            )
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise CheckpointError(
                f"{path}: corrupted: its sha256 {actual[:12]}… does not match the {entry['sha256'][:12]}… "
                f"recorded in {CHECKSUMS_NAME} (the file was changed after saving)"
            )
    extra = [n for n in COVERED_IF_PRESENT if n not in files and (directory / n).is_file()]
    if extra:
        log.info("%s: %s not in %s (added after saving): unverified", directory, extra, CHECKSUMS_NAME)
    return files


def note_unrecorded(directory: str | Path, format_version: int | None, weights_sha256: str | None) -> None:
    """For a folder without ``checksums.json``: refuse it when its ``config.json`` says
    ``format_version`` 4 or later (such folders carry one), else log once per folder what is
    verified (the weights, by the ``weights_sha256`` its config records) and what is not."""
    directory = Path(directory)
    if format_version is not None and format_version >= 4:
        raise CheckpointError(
            f"{directory / CHECKSUMS_NAME}: missing: {CONFIG_NAME} says format_version {format_version}, "
            f"whose folders carry it (copy the whole folder)"
        )
    key = str(directory.resolve())
    if key in _NOTED:
        return
    _NOTED.add(key)
    if weights_sha256 is None:
        log.warning(
            "%s: no %s and no weights_sha256 in %s (saved by an older version or another tool): "
            "loading without an integrity check",
            directory,
            CHECKSUMS_NAME,
            CONFIG_NAME,
        )
    else:
        log.warning(
            "%s: no %s (saved before format_version 4): verified by its weights' sha256 only; "
            "%s and any other file are unverified",
            directory,
            CHECKSUMS_NAME,
            CONFIG_NAME,
        )


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


def _open_folder(directory: Path, *, skip: tuple[str, ...] = (TRAINING_STATE_NAME,)) -> dict[str, Any]:
    """Verify a saved folder (every file its record lists but ``skip``; without a record, the
    weights by the sha256 in ``config.json``), then parse its ``config.json``."""
    for p in (directory / CONFIG_NAME, directory / WEIGHTS_NAME):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing (expected a folder written by save_model)")
    files = verify_checksums(directory, required=(CONFIG_NAME, WEIGHTS_NAME), skip=skip)
    info = _read_info(directory)
    if files is None:
        note_unrecorded(directory, info["format_version"], info["weights_sha256"])
        _verify_weights_sha(directory, info["weights_sha256"])
    elif info["weights_sha256"] not in (None, files[WEIGHTS_NAME]["sha256"]):
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: its weights_sha256 is not the one {CHECKSUMS_NAME} records for "
            f"{WEIGHTS_NAME} (files of two saves mixed)"
        )
    return info


def read_config(directory: str | Path) -> Wav2Vec2Config:
    """The model config of a folder written by :func:`save_model`, in today's layout (weights not
    read; ``config.json`` verified against the folder's record, if it has one)."""
    directory = Path(directory)
    if (directory / CONFIG_NAME).is_file():
        verify_checksums(directory, [CONFIG_NAME])
    return _read_info(directory)["config"]


def read_weights(
    directory: str | Path, map_location: str = "cpu", *, verify: bool = True
) -> dict[str, torch.Tensor]:
    """The tensors of a folder written by :func:`save_model`, under today's key names (a
    folder of an older ``format_version`` has its keys renamed by :func:`upgrade_state_dict`).
    Weights without a ``config.json`` beside them (another writer's) are returned as stored.
    ``verify=False``: the caller has just verified the folder (:func:`verify_checksums`)."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).exists():
        if verify:
            verify_checksums(directory, skip=(TRAINING_STATE_NAME,))
        return _read_state(directory, None, map_location)
    info = _open_folder(directory) if verify else _read_info(directory)
    return _read_state(directory, info, map_location)


def _read_state(directory: Path, info: dict[str, Any] | None, map_location: str) -> dict[str, torch.Tensor]:
    """The weights file of ``directory``, keys upgraded per ``info`` (its parsed config.json, if any)."""
    w_path = directory / WEIGHTS_NAME
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
    check_finite(state, w_path)
    if info is None:
        return state
    try:
        return upgrade_state_dict(state, info["model_class"], info["format_version"])
    except CheckpointError as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {e}") from None


def _verify_weights_sha(directory: Path, expected: str | None) -> None:
    """A folder without a record: compare ``model.safetensors`` with the sha256 in its ``config.json``."""
    w_path = directory / WEIGHTS_NAME
    if expected is None:
        return
    actual = file_sha256(w_path)
    if actual != expected:
        raise CheckpointError(
            f"{w_path}: corrupted: its sha256 {actual[:12]}… does not match the "
            f"{expected[:12]}… recorded in {CONFIG_NAME} (the file was changed after saving)"
        )


def check_finite(state: Mapping[str, torch.Tensor], where: str | Path, *, saving: bool = False) -> None:
    """Refuse weights holding a NaN or Inf (any format: ours, transformers, fairseq): a
    :class:`CheckpointError` naming ``where`` (the file) and the tensors."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    if saving:
        raise CheckpointError(f"{where}: refusing to save non-finite weights ({_name_some(bad)})")
    raise CheckpointError(
        f"{where}: non-finite weights (NaN/Inf) in {_name_some(bad)}; this model cannot "
        f"be used: load an earlier checkpoint"
    )


def _name_some(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_model(
    directory: str | Path, cls: type[nn.Module] | None = None, map_location: str = "cpu"
) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, after verifying the folder (every file its
    ``checksums.json`` lists but a checkpoint's training state, which only resuming reads). ``cls``
    overrides the saved class (a pretraining folder's backbone into ``Wav2Vec2ForCTC`` is *not*
    done here: use ``Wav2Vec2ForCTC.from_pretraining``)."""
    directory = Path(directory)
    info = _open_folder(directory)
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
