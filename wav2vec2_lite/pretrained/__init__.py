"""Pretrained checkpoints shipped inside the package (the offline "bundles" users start from).

Each bundle is a folder ``wav2vec2_lite/pretrained/NAME/`` written by :func:`save_model`
(``model.safetensors`` + ``config.json``) plus ``provenance.json``: how it was made (command, code
commit, CPU, corpus, audio seen, the valid curve, final metrics), and ``checksums.json``, the
sha256 of those three, which every load verifies. ``docs/results/pretrained.md`` describes the
shipped ones.

    >>> from wav2vec2_lite import pretrained
    >>> pretrained.available()
    ['tiny-espeak-10h']
    >>> model = pretrained.load("tiny-espeak-10h")      # Wav2Vec2ForPreTraining, eval mode

Every CLI that takes a pretrained model or model folder also takes a bundle name
(:func:`resolve`): an existing path wins, an unknown name lists :func:`available`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from wav2vec2_lite.serialization import CONFIG_NAME, WEIGHTS_NAME, load_model

__all__ = [
    "available",
    "load",
    "folder",
    "provenance",
    "resolve",
    "PROVENANCE_NAME",
    "UnknownPretrainedError",
]

PROVENANCE_NAME = "provenance.json"
_ROOT = Path(__file__).resolve().parent


class UnknownPretrainedError(FileNotFoundError):
    """Neither an existing path nor the name of a shipped checkpoint."""


def available() -> list[str]:
    """Names of the shipped checkpoints (folders here holding weights, config and provenance)."""
    return sorted(
        p.name
        for p in _ROOT.iterdir()
        if p.is_dir() and all((p / f).is_file() for f in (WEIGHTS_NAME, CONFIG_NAME, PROVENANCE_NAME))
    )


def folder(name: str) -> Path:
    """The folder of the shipped checkpoint ``name``."""
    if name not in available():
        names = ", ".join(available()) or "none"
        raise UnknownPretrainedError(f"{name!r} is not a shipped pretrained checkpoint (available: {names})")
    return _ROOT / name


def provenance(name: str) -> dict[str, Any]:
    """How the checkpoint was made: command, code commit, CPU kind, corpus, valid curve, final metrics."""
    return json.loads((folder(name) / PROVENANCE_NAME).read_text())


def load(name: str) -> nn.Module:
    """The shipped ``Wav2Vec2ForPreTraining`` ``name`` in eval mode; its files' sha256 are checked."""
    return load_model(folder(name)).eval()


def resolve(path_or_name: str | Path) -> Path:
    """A path as given if it exists, else the folder of the shipped checkpoint of that name.

    Raises :class:`UnknownPretrainedError` (a ``FileNotFoundError``) naming both readings."""
    path = Path(path_or_name)
    if path.exists():
        return path
    if str(path_or_name) in available():
        return _ROOT / str(path_or_name)
    names = ", ".join(available()) or "none"
    raise UnknownPretrainedError(
        f"{path_or_name}: no such file or folder, and not the name of a shipped "
        f"pretrained checkpoint (available: {names})"
    )
