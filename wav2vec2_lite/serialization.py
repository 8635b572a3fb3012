"""Save and load models as a folder: ``model.safetensors`` + ``config.json``.

Weights never go through pickle. Files are written atomically (temporary file in the same
folder, fsync, rename), so a crash mid-save leaves the previous files intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from wav2vec2_lite.config import Wav2Vec2Config

__all__ = ["save_model", "load_model", "atomic_write_bytes", "WEIGHTS_NAME", "CONFIG_NAME", "CheckpointError"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A saved model or training state is missing, truncated or inconsistent (names the file)."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then fsync and rename the temporary file over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _model_classes() -> dict[str, type[nn.Module]]:
    from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model

    return {c.__name__: c for c in (Wav2Vec2Model, Wav2Vec2ForPreTraining, Wav2Vec2ForCTC)}


def save_model(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (class name, config, metadata) to ``directory``."""
    directory = Path(directory)
    classes = _model_classes()
    name = type(model).__name__
    if name not in classes:
        raise TypeError(f"save_model supports {sorted(classes)}; got {name}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    info = {"format_version": FORMAT_VERSION, "model_class": name, "config": model.config.to_dict(),
            "metadata": metadata or {}}
    text = json.dumps(info, indent=2, sort_keys=True)
    atomic_write_bytes(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    return directory


def load_model(directory: str | Path, cls: type[nn.Module] | None = None, map_location: str = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model`. ``cls`` overrides the saved class
    (e.g. load a pretraining folder's backbone into ``Wav2Vec2ForCTC`` is *not* done here:
    use ``Wav2Vec2ForCTC.from_pretraining``)."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing (expected a folder written by save_model)")
    try:
        info = json.loads(cfg_path.read_text())
        config = Wav2Vec2Config.from_dict(info["config"])
        saved_class = info["model_class"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_path}: not a valid wav2vec2_lite config ({e})") from e
    classes = _model_classes()
    if cls is None:
        if saved_class not in classes:
            raise CheckpointError(f"{cfg_path}: unknown model_class {saved_class!r}")
        cls = classes[saved_class]
    try:
        state = load_file(str(w_path), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path}: unreadable or truncated safetensors file ({e})") from e
    model = cls(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{w_path}: weights do not fit {cls.__name__} with the saved config ({e})") from e
    return model.to(map_location)


def state_dict_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Exact equality of two state dicts (same keys, ``torch.equal`` tensors)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
