"""Representations for research: chosen layers' frame states and per-frame discrete units.

:class:`Extractor` runs a model (any checkpoint :func:`~wav2vec2_lite.interop.sources.load_any`
reads) on one utterance at a time, eval mode, no padding, and returns

* ``conv``, ``layer_0`` ... ``layer_L``: the frames of the chosen layers (the names of
  :func:`wav2vec2_lite.probes.features.layer_names`; ``last`` = the context vectors c_t,
  after the final LayerNorm of pre-LN models), each (T, D) float32;
* ``units``: (T, G) int64, the code of every frame in each of the G code groups, as the
  pretraining objective's quantizer assigns it without noise (contrastive: the Gumbel
  quantizer's most probable entry, the input quantizer's when only the input is quantized;
  BEST-RQ: the random-projection code). Needs a pretraining checkpoint with a codebook
  (contrastive with continuous targets and inputs has none: refused when the Extractor is built).

:func:`extract_to_folder` writes one ``.safetensors`` (or one ``.npy`` per array) per
utterance, mirroring the input's relative paths, plus ``index.jsonl``; ``w2v2-extract`` is
the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from wav2vec2_lite.asr.transcribe import Failure, expand_inputs
from wav2vec2_lite.compile import compile_dense
from wav2vec2_lite.data.audio import AudioError, load_audio, out_of_range
from wav2vec2_lite.data.audio import normalize as normalize_wave
from wav2vec2_lite.data.manifest import ManifestError, iter_manifest
from wav2vec2_lite.inference_dtype import cast_for_inference, inference_dtype_of
from wav2vec2_lite.interop.sources import load_any
from wav2vec2_lite.models import Wav2Vec2ForPreTraining, backbone_of
from wav2vec2_lite.objectives.base import ObjectiveInputs
from wav2vec2_lite.probes.features import layer_names

__all__ = ["Extractor", "ExtractionFailure", "extract_to_folder", "FORMATS"]

FORMATS = ("safetensors", "npy")


@dataclass
class ExtractionFailure:
    """An input that gave no output file: its path (or ``manifest:line``) and why."""

    path: str
    error: str


class Extractor:
    """Chosen layers and/or units of one utterance at a time.

    Args:
        model: a wav2vec2_lite model (pretraining, CTC or backbone).
        layers: layer names (``conv``, ``layer_0`` ... ``layer_L``, ``last``); ``["all"]`` for every one.
        units: also return the objective's per-frame codes (a pretraining model only).
        normalize: zero-mean unit-variance waves first (what the checkpoint was trained on).
        compile: ``torch.compile`` the dense part (:func:`~wav2vec2_lite.compile.compile_dense`).
        dtype: ``float32`` or ``bfloat16`` (:func:`~wav2vec2_lite.inference_dtype.cast_for_inference`);
            the features are returned in float32 either way.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str] = ("last",),
        *,
        units: bool = False,
        normalize: bool = False,
        device: str = "cpu",
        sample_rate: int = 16000,
        dtype: str | torch.dtype = "float32",
        compile: bool = False,
    ) -> None:
        self.model = cast_for_inference(model.to(device), dtype)  # float32, or bf16 Linear weights
        if compile:  # the dense part, traced on the first file (wav2vec2_lite.compile)
            compile_dense(self.model)
        self.backbone = backbone_of(model)
        valid = layer_names(self.backbone.config.num_layers) + ["last"]
        layers = list(layers)
        self.layers = valid if layers == ["all"] else layers
        unknown = [n for n in self.layers if n not in valid]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}: this model has {', '.join(valid)} (or 'all')")
        if units and not isinstance(model, Wav2Vec2ForPreTraining):
            raise ValueError(
                f"units come from a pretraining objective's quantizer; this checkpoint holds a "
                f"{type(model).__name__} (give a pretraining checkpoint)"
            )
        if units and type(model.objective).health_reference(model.config)["code_groups"] == 0:
            raise ValueError(
                "units come from a pretraining objective's quantizer; this model has none "
                "(contrastive.quantize_targets=false and quantize_input=false: continuous targets)"
            )
        if not self.layers and not units:
            raise ValueError("nothing to extract: choose layers and/or units")
        self.units, self.normalize, self.device, self.sample_rate = units, normalize, device, sample_rate
        self.dtype = inference_dtype_of(self.model)
        """The dtype the model ran in (``float32`` or ``bfloat16``); features are written in float32."""

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        layers: Iterable[str] = ("last",),
        *,
        units: bool = False,
        trust: bool = False,
        **kwargs,
    ) -> "Extractor":
        """From any checkpoint :func:`~wav2vec2_lite.interop.sources.load_any` reads; the input
        normalisation it records is used unless ``normalize=`` is given."""
        loaded = load_any(path, trust=trust)
        if "normalize" not in kwargs:
            norm = loaded.normalize
            kwargs["normalize"] = (
                bool(norm) if norm is not None else loaded.model.config.feat_extract_norm == "layer"
            )
        return cls(loaded.model, layers, units=units, **kwargs)

    @torch.no_grad()
    def extract_wave(self, wave: Tensor) -> dict[str, Tensor]:
        """(S,) float wave -> ``{layer name: (T, D) float32, "units": (T, G) int64}``."""
        w = normalize_wave(wave.float()) if self.normalize else wave.float()
        w = w[None].to(self.device)
        out = self.backbone(w, output_hidden_states=True)
        result = {name: out.layer(name)[0].float().cpu().contiguous() for name in self.layers}
        if self.units:
            inputs = ObjectiveInputs(
                waveform=w,
                sample_padding=None,
                conv_features=out.conv_features.float(),
                extract_features=out.extract_features.float(),
                context=out.last_hidden_state.float(),
                mask_indices=torch.zeros_like(out.extract_features[..., 0], dtype=torch.bool),
                frame_padding=None,
                frame_lengths=out.frame_lengths,
                input_quantization=out.input_quantization,
            )
            result["units"] = self.model.objective.frame_codes(inputs)[0].long().cpu().contiguous()
        return result

    def extract_file(self, path: str | Path) -> dict[str, Tensor]:
        """One audio file (mono-mixed and resampled to the model's rate when needed)."""
        wave = load_audio(path, sample_rate=self.sample_rate, mono="mix", resample="soxr")
        field = self.backbone.config.receptive_field
        if wave.shape[0] < field:
            raise ValueError(
                f"{path}: {wave.shape[0]} samples, shorter than the model's {field}-sample receptive field"
            )
        loud = None if self.normalize else out_of_range(wave)
        if loud:  # a model without input normalisation would see saturated features
            raise AudioError(f"{path}: {loud}")
        return self.extract_wave(torch.from_numpy(wave))


def _named_inputs(
    inputs: Iterable[str | Path], limit: int | None
) -> Iterator[tuple[str, str] | ExtractionFailure]:
    """``(audio path, output name)`` per input: a file by its name, a folder's files by their path
    below it, a manifest's rows by their path below its root; failures for what yields nothing."""
    for item in inputs:
        p = Path(item)
        base = p if p.is_dir() else None
        if p.suffix == ".tsv" and p.is_file():
            try:
                base, _ = iter_manifest(p)
            except ManifestError:
                base = None
        for got in expand_inputs([item], limit):
            if isinstance(got, Failure):
                yield ExtractionFailure(got.path, got.error)
                continue
            path = Path(got)
            try:
                name = path.relative_to(base).as_posix() if base is not None else path.name
            except ValueError:
                name = path.name
            yield str(path), name


def extract_to_folder(
    extractor: Extractor,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    fmt: str = "safetensors",
    limit: int | None = None,
    progress: bool = False,
) -> Iterator[dict | ExtractionFailure]:
    """Extract each input and write it under ``out_dir``; yields each written record (path, out,
    frames) or failure as it goes. ``index.jsonl`` lists the records; a folder that already holds
    one is refused (``FileExistsError``), so that no earlier output drops out of its index."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, found {fmt!r}")
    out_dir = Path(out_dir)
    if (out_dir / "index.jsonl").exists():  # another call's outputs would no longer be indexed
        raise FileExistsError(f"{out_dir}: already holds an index.jsonl; extract into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc="extract", unit="file", disable=not progress)
    written: dict[str, str] = {}
    with open(out_dir / "index.jsonl", "x", encoding="utf-8") as index:
        for item in _named_inputs(inputs, limit):
            bar.update(1)
            if isinstance(item, ExtractionFailure):
                yield item
                continue
            path, name = item
            key = str(Path(name).with_suffix(""))
            if key in written:
                yield ExtractionFailure(path, f"its output {key} would overwrite that of {written[key]}")
                continue
            written[key] = path
            try:
                arrays = extractor.extract_file(path)
            except Exception as e:  # noqa: BLE001 - this file's failure; the others go on
                yield ExtractionFailure(
                    path, " ".join(str(e).split()).removeprefix(f"{path}: ") or type(e).__name__
                )
                continue
            stem = out_dir / Path(name).with_suffix("")
            stem.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "safetensors":
                files = [str(stem.with_suffix(".safetensors"))]
                try:
                    save_file(arrays, files[0], metadata={"source": path, "dtype": extractor.dtype})
                except SafetensorError as e:  # a failed write (a full disk) is not an OSError there
                    raise OSError(
                        f"{files[0]}: could not write ({e}); free some disk space or use another --out"
                    ) from e
            else:
                files = []
                for key, value in arrays.items():
                    files.append(f"{stem}.{key}.npy")
                    np.save(files[-1], value.numpy())
            frames = next(iter(arrays.values())).shape[0]
            record = {
                "path": path,
                "out": [str(Path(f).relative_to(out_dir)) for f in files],
                "frames": frames,
                "arrays": {k: list(v.shape) for k, v in arrays.items()},
                "dtype": extractor.dtype,
            }
            index.write(json.dumps(record) + "\n")
            index.flush()
            yield record
    bar.close()
