"""Any wav2vec 2.0 checkpoint in: our folders, Hugging Face folders, fairseq ``.pt`` files.

:func:`detect` says what a path holds (no weights read); :func:`load_any` reads it into our
classes with the same weights and numerics; :func:`load_backbone` keeps the
:class:`Wav2Vec2Model` that fine-tuning, the probes and feature extraction start from.

Accepted, detected from the files (a shipped checkpoint's name works too, an existing path wins):

* ours: a run folder (its ``checkpoints/best``, else ``last``) or a folder written by
  ``save_model`` / ``save_pretrained``;
* transformers: a ``save_pretrained`` folder of ``Wav2Vec2ForPreTraining``, ``Wav2Vec2Model``
  or ``Wav2Vec2ForCTC`` (read offline; needs the ``transformers`` extra);
* fairseq: a wav2vec 2.0 ``.pt``, pretraining or fine-tuned, or a folder holding
  ``checkpoint_best.pt`` / ``checkpoint_last.pt``. Read without running code from the file
  unless ``trust=True`` (:func:`wav2vec2_lite.interop.fairseq.load_fairseq`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from wav2vec2_lite.interop.hf import from_hf
from wav2vec2_lite.models import (
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
    backbone_of,
    register_checkpoint_reader,
    with_config_overrides,
)
from wav2vec2_lite.pretrained import resolve
from wav2vec2_lite.serialization import CONFIG_NAME, CheckpointError, find_model_folder, load_model

__all__ = ["CheckpointSource", "LoadedCheckpoint", "detect", "load_any", "load_backbone", "SOURCE_KINDS"]

log = logging.getLogger(__name__)

SOURCE_KINDS = ("wav2vec2_lite", "transformers", "fairseq")
_FAIRSEQ_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_EXPECTED = (
    "a wav2vec2_lite run or model folder, a Hugging Face wav2vec2 folder (config.json + weights), "
    "a fairseq wav2vec 2.0 .pt file, or a shipped checkpoint's name"
)


@dataclass(frozen=True)
class CheckpointSource:
    """What a path holds: ``kind`` (one of :data:`SOURCE_KINDS`) and the folder or file to read."""

    kind: str
    path: Path

    def __str__(self) -> str:
        """The path, then the kind when it is another library's (messages start with the path)."""
        return str(self.path) if self.kind == "wav2vec2_lite" else f"{self.path} ({self.kind} checkpoint)"


@dataclass
class LoadedCheckpoint:
    """A checkpoint read into our classes.

    ``normalize``: whether the source's inputs are normalised to zero mean, unit variance per
    utterance (our ``metadata.normalize``, HF ``do_normalize``, fairseq ``task.normalize``);
    None when the source does not say.
    """

    model: nn.Module
    source: CheckpointSource
    normalize: bool | None = None

    @property
    def backbone(self) -> Wav2Vec2Model:
        return backbone_of(self.model)

    @property
    def has_ctc_head(self) -> bool:
        return isinstance(self.model, Wav2Vec2ForCTC)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def detect(path_or_name: str | Path) -> CheckpointSource:
    """The kind of checkpoint at ``path_or_name`` and the folder or file holding it.

    Raises ``FileNotFoundError`` (no such path or shipped name, no checkpoint in the folder) or
    :class:`CheckpointError` (the path holds something else), each naming the path and what is accepted.
    """
    path = resolve(path_or_name)
    if path.is_file():
        if path.name in (CONFIG_NAME, *_HF_WEIGHTS) or path.suffix == ".safetensors":
            path = path.parent
        else:
            return CheckpointSource("fairseq", path)
    folder = find_model_folder(path, CONFIG_NAME)
    if folder is not None:
        info = _read_json(folder / CONFIG_NAME)
        if "model_class" in info and "config" in info:
            return CheckpointSource("wav2vec2_lite", folder)
        model_type = info.get("model_type")
        if model_type == "wav2vec2":
            if not any((folder / w).is_file() for w in _HF_WEIGHTS):
                raise CheckpointError(
                    f"{folder}: a Hugging Face config.json without weights ({' or '.join(_HF_WEIGHTS)})"
                )
            return CheckpointSource("transformers", folder)
        raise CheckpointError(
            f"{folder / CONFIG_NAME}: neither a wav2vec2_lite config nor a transformers wav2vec2 "
            f"one (model_type {model_type!r}); expected {_EXPECTED}"
        )
    for base in (path, path / "checkpoints"):
        for name in _FAIRSEQ_NAMES:
            if (base / name).is_file():
                return CheckpointSource("fairseq", base / name)
    raise FileNotFoundError(f"{path}: no checkpoint found; expected {_EXPECTED}")


def _hf_normalize(folder: Path) -> bool | None:
    """``do_normalize`` from the feature extractor's config (transformers 4.x writes
    ``preprocessor_config.json``; a processor config may nest it under ``feature_extractor``)."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        p = folder / name
        if p.is_file():
            cfg = _read_json(p)
            cfg = cfg.get("feature_extractor", cfg) if "do_normalize" not in cfg else cfg
            if isinstance(cfg, dict) and "do_normalize" in cfg:
                return bool(cfg["do_normalize"])
    return None


def load_any(
    path_or_name: str | Path, *, trust: bool = False, map_location: str = "cpu", **config_overrides: Any
) -> LoadedCheckpoint:
    """Read any supported checkpoint (see the module docstring) into our classes, in eval mode.

    ``trust`` lets a fairseq file that needs full pickle run it (only for files you trust);
    ``config_overrides`` change :class:`Wav2Vec2Config` fields of an imported model.
    """
    src = detect(path_or_name)
    if src.kind == "wav2vec2_lite":
        model = load_model(src.path, map_location=map_location)
        model = with_config_overrides(model, config_overrides)
        info = _read_json(src.path / CONFIG_NAME)
        normalize = (info.get("metadata") or {}).get("normalize")
        return LoadedCheckpoint(model.eval(), src, None if normalize is None else bool(normalize))
    if src.kind == "transformers":
        if importlib.util.find_spec("transformers") is None:
            raise CheckpointError(
                f"{src.path}: a Hugging Face folder; reading it needs transformers "
                "(pip install 'wav2vec2_lite[hf]')"
            )
        model = from_hf(src.path, **config_overrides).to(map_location)
        return LoadedCheckpoint(model.eval(), src, _hf_normalize(src.path))
    # start-up: the fairseq reader and omegaconf (~90 ms) stay out of `import wav2vec2_lite` (every w2v2-*)
    from wav2vec2_lite.interop.fairseq import load_fairseq

    model = load_fairseq(src.path, trust=trust, map_location=map_location, **config_overrides)
    normalize = (model.config.extra or {}).get("normalize")
    return LoadedCheckpoint(model.eval(), src, None if normalize is None else bool(normalize))


def load_backbone(
    path_or_name: str | Path, *, trust: bool = False, map_location: str = "cpu", **config_overrides: Any
) -> LoadedCheckpoint:
    """:func:`load_any`, keeping only the backbone (``.model`` is a :class:`Wav2Vec2Model`); what was
    dropped (objective, CTC head) is logged."""
    loaded = load_any(path_or_name, trust=trust, map_location=map_location, **config_overrides)
    backbone = loaded.backbone
    if loaded.model is not backbone:
        dropped = (
            f"its CTC head ({loaded.model.config.vocab_size} outputs)"
            if loaded.has_ctc_head
            else "its pretraining objective (quantizer, projections)"
        )
        log.info(
            "%s: took the backbone (%s); dropped %s", loaded.source, type(loaded.model).__name__, dropped
        )
    return LoadedCheckpoint(backbone, loaded.source, loaded.normalize)


register_checkpoint_reader(load_any)  # what Wav2Vec2*.from_pretrained read with
