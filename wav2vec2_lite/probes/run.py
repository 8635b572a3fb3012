"""``run_probes``: per-layer linear CTC probes of a model, its architecture at random init, and log-mel.

    from wav2vec2_lite.probes import ProbeProtocol, run_probes
    report = run_probes("outputs/pretrain/RUN", "data/demo", "train_10min", "valid",
                        ProbeProtocol(steps=1000, log_mel=True))
    print(report.to_markdown()); report.save_json("probes.json")

Every model's features are extracted once (frozen, eval mode, no gradient) and kept in
memory: ``frames x (C + (L + 1) x D) x 4`` bytes per split (BASE on 10 minutes: ~1.2 GB).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wav2vec2_lite.data.audio import AudioError
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.manifest import ManifestError
from wav2vec2_lite.data.tokenizer import CharTokenizer, TokenizerError
from wav2vec2_lite.interop.sources import load_backbone as load_any_backbone
from wav2vec2_lite.models import Wav2Vec2Model, backbone_of
from wav2vec2_lite.modules.log_mel import LogMel
from wav2vec2_lite.probes.features import (
    FrameFeatures,
    extract_layer_features,
    log_mel_features,
)
from wav2vec2_lite.probes.linear_ctc import ProbeResult, train_ctc_probe
from wav2vec2_lite.probes.protocol import ProbeError, ProbeProtocol
from wav2vec2_lite.probes.report import LayerScore, ModelProbes, ProbeReport
from wav2vec2_lite.serialization import CheckpointError

__all__ = ["LabelledSplit", "load_backbone", "load_split", "run_probes"]

Log = Callable[[str], None]


@dataclass
class LabelledSplit:
    """The waves (S_i,) float32 at 16 kHz, token ids and reference texts of one manifest split."""

    name: str
    waves: list[Tensor]
    labels: list[Tensor]
    texts: list[str]
    skipped: int  # rows dropped: shorter than the receptive field, or an empty transcript


METRICS = {"ltr": "cer", "phn": "per"}  # label extension -> error-rate name (others: "ter", token error rate)


def _tokenizer(manifest_dir: Path, train_split: str, labels: str = "ltr") -> CharTokenizer:
    """``dict.LABELS.txt`` of the corpus; without one, the symbols of the training labels
    (others -> <unk>)."""
    d = manifest_dir / f"dict.{labels}.txt"
    if d.is_file():
        return CharTokenizer.from_dictionary(d)
    symbols: list[str] = []
    for line in (manifest_dir / f"{train_split}.{labels}").read_text(encoding="utf-8").split("\n"):
        symbols += [s for s in line.split() if s not in symbols]
    return CharTokenizer(
        symbols, unk="map", source=f"the symbols of {manifest_dir / (train_split + '.' + labels)}"
    )


def load_split(
    manifest_dir: str | Path,
    split: str,
    tokenizer: CharTokenizer,
    *,
    min_samples: int = 400,
    limit: int | None = None,
    labels: str = "ltr",
) -> LabelledSplit:
    """``DIR/SPLIT.tsv`` + ``DIR/SPLIT.LABELS``: waves (mono, resampled to 16 kHz if needed) and labels.

    ``labels="ltr"``: letters (fairseq ``.ltr``); any other extension holds space-separated
    symbols too (``phn``: phonemes, :mod:`wav2vec2_lite.probes.phonemes`); its texts are the lines.
    """
    manifest_dir = Path(manifest_dir)
    tsv, ltr = manifest_dir / f"{split}.tsv", manifest_dir / f"{split}.{labels}"
    for p, what in ((tsv, "manifest"), (ltr, f".{labels} labels")):
        if not p.is_file():
            found = sorted(q.stem for q in manifest_dir.glob(f"*.{labels}"))
            raise ProbeError(
                f"split {split!r}: {what} {p} not found (labelled splits in {manifest_dir}: "
                f"{', '.join(found) or 'none'})"
            )
    letters = labels == "ltr"
    try:
        ds = AudioDataset(
            tsv,
            labels_path=ltr,
            tokenizer=tokenizer if letters else None,
            min_sample_size=min_samples,
            mono="mix",
            resample="soxr",
            indices=None,
        )
        rows = [i for i in range(len(ds)) if letters or ds.texts[i].strip()][:limit]  # type: ignore[index]
        items = [ds[i] for i in rows]
        if not letters:
            for i, it in zip(rows, items):
                try:
                    it["labels"] = torch.tensor(tokenizer.encode_ltr(it["text"]), dtype=torch.long)
                except TokenizerError as e:
                    raise DatasetError(f"{ltr}:{ds.rows[i] + 1}: {e}") from None
    except (ManifestError, DatasetError, TokenizerError, AudioError, OSError) as e:
        raise ProbeError(f"split {split!r}: {e}") from None
    if not items:
        raise ProbeError(
            f"split {split!r}: no usable utterance in {tsv} (all shorter than {min_samples} samples "
            f"or with an empty transcript)"
        )
    return LabelledSplit(
        split,
        [it["waveform"] for it in items],
        [it["labels"] for it in items],
        [it["text"] for it in items],
        skipped=len(ds.manifest) - len(ds),
    )


def load_backbone(model_or_path: nn.Module | str | Path) -> tuple[Wav2Vec2Model, bool, str]:
    """``(backbone, normalize_waves, source)`` from a model (pretraining, CTC or backbone) or any
    checkpoint :func:`wav2vec2_lite.interop.sources.detect` accepts (our run or model folder, a
    Hugging Face folder, a fairseq ``.pt``, a shipped checkpoint's name).

    ``normalize_waves``: the saved ``metadata.normalize`` if any, else True for layer-norm
    (LARGE-style) encoders, as ``w2v2-transcribe`` decides.
    """
    if isinstance(model_or_path, nn.Module):
        try:
            backbone = backbone_of(model_or_path)
        except TypeError as e:
            raise ProbeError(str(e)) from None
        return backbone, backbone.config.feat_extract_norm == "layer", type(model_or_path).__name__
    try:
        loaded = load_any_backbone(model_or_path)
    except (FileNotFoundError, CheckpointError, ValueError, KeyError, ImportError) as e:
        raise ProbeError(f"cannot load a model from {model_or_path} ({e})") from None
    normalize = (
        loaded.model.config.feat_extract_norm == "layer" if loaded.normalize is None else loaded.normalize
    )
    return loaded.model, normalize, str(loaded.source.path)


def _probe_layers(
    features: dict[str, tuple[FrameFeatures, FrameFeatures]],
    train: LabelledSplit,
    valid: LabelledSplit,
    vocab: list[str],
    protocol: ProbeProtocol,
    log: Log,
    tag: str,
    metric: str = "cer",
) -> list[tuple[str, ProbeResult, list[float]]]:
    """Each layer's probe, averaged over ``protocol.probe_seeds`` probe seeds: ``(name, mean result,
    each probe seed's valid error)``."""
    results = []
    for name, (tr, va) in features.items():
        runs = [
            train_ctc_probe(
                tr,
                train.labels,
                va,
                valid.labels,
                valid.texts,
                vocab,
                dataclasses.replace(protocol, seed=protocol.seed + j),
                unit="char" if metric == "cer" else "token",
            )
            for j in range(protocol.probe_seeds)
        ]
        errors = [r.valid_error for r in runs]
        r = ProbeResult(
            dim=runs[0].dim,
            valid_error=sum(errors) / len(runs),
            valid_loss=sum(x.valid_loss for x in runs) / len(runs),
            train_loss=sum(x.train_loss for x in runs) / len(runs),
            hypotheses=runs[0].hypotheses,
        )
        spread = f" (probe seeds: {', '.join(f'{e:.3f}' for e in errors)})" if len(runs) > 1 else ""
        log(
            f"{tag} {name:>9} dim {r.dim:4d}: valid {metric.upper()} {r.valid_error:.3f}  "
            f"loss {r.valid_loss:.3f}  "
            f"train loss {r.train_loss:.3f}{spread}"
        )
        results.append((name, r, errors))
    return results


def _model_features(
    backbone: nn.Module, train: LabelledSplit, valid: LabelledSplit, normalize: bool
) -> dict[str, tuple[FrameFeatures, FrameFeatures]]:
    tr = extract_layer_features(backbone, train.waves, normalize=normalize)
    va = extract_layer_features(backbone, valid.waves, normalize=normalize)
    return {name: (tr[name], va[name]) for name in tr}


def _frames(backbone: Wav2Vec2Model, waves: list[Tensor]) -> list[int]:
    return backbone.feature_output_lengths(torch.tensor([len(w) for w in waves])).tolist()


def run_probes(
    model_or_path: nn.Module | str | Path,
    manifest_dir: str | Path,
    train_split: str = "train",
    valid_split: str = "valid",
    protocol: ProbeProtocol | None = None,
    *,
    labels: str = "ltr",
    log: Log | None = None,
    include_model: bool = True,
) -> ProbeReport:
    """Linear CTC probes of every layer of a model (``checkpoint``), of the same architecture at
    random init (``random_init``, averaged over ``protocol.random_init_seeds`` seeds) and, with
    ``protocol.log_mel``, of the log-mel front end (``log_mel``); trained on ``train_split`` and
    scored on ``valid_split`` of ``manifest_dir`` (``SPLIT.tsv`` + ``SPLIT.ltr``, ``dict.ltr.txt``).
    ``include_model=False`` probes only the baselines (the model gives their architecture).
    ``labels``: the label files' extension, ``ltr`` (letters, CER) or e.g. ``phn`` (phonemes,
    ``SPLIT.phn`` + ``dict.phn.txt``, PER). ``log`` receives one line per probe. User errors
    raise :class:`ProbeError`.
    """
    if not labels or not labels.isalnum():
        raise ProbeError(f"labels must be a file extension such as 'ltr' or 'phn', found {labels!r}")
    metric = METRICS.get(labels, "ter")
    protocol = (protocol or ProbeProtocol()).validate()
    log = log or (lambda _msg: None)
    if not train_split or not valid_split or train_split == valid_split:
        raise ProbeError(
            f"train and valid splits must be two different names, found {train_split!r} and {valid_split!r}"
        )
    manifest_dir = Path(manifest_dir)
    if not manifest_dir.is_dir():
        raise ProbeError(f"{manifest_dir}: data folder not found (expected SPLIT.tsv + SPLIT.ltr files)")
    backbone, normalize, source = load_backbone(model_or_path)
    cfg = backbone.config
    if protocol.log_mel and cfg.frame_stride % LogMel().hop:
        raise ProbeError(
            f"the encoder's frame stride ({cfg.frame_stride} samples) is not a multiple of the "
            f"log-mel hop ({LogMel().hop} samples): log-mel frames cannot be stacked onto its frames"
        )
    try:
        tokenizer = _tokenizer(manifest_dir, train_split, labels)
    except (OSError, ManifestError, TokenizerError) as e:
        raise ProbeError(
            f"{manifest_dir}: no usable dict.{labels}.txt or {train_split}.{labels} ({e})"
        ) from None
    train = load_split(
        manifest_dir,
        train_split,
        tokenizer,
        min_samples=cfg.receptive_field,
        limit=protocol.max_train_utterances,
        labels=labels,
    )
    valid = load_split(
        manifest_dir,
        valid_split,
        tokenizer,
        min_samples=cfg.receptive_field,
        limit=protocol.max_valid_utterances,
        labels=labels,
    )
    train_frames, valid_frames = _frames(backbone, train.waves), _frames(backbone, valid.waves)
    data = {
        "manifest_dir": str(manifest_dir),
        "train_split": train_split,
        "valid_split": valid_split,
        "labels": labels,
        "metric": metric,
        "train_utterances": len(train.waves),
        "valid_utterances": len(valid.waves),
        "train_skipped": train.skipped,
        "valid_skipped": valid.skipped,
        "train_frames": sum(train_frames),
        "valid_frames": sum(valid_frames),
        "valid_label_symbols": sum(len(lab) for lab in valid.labels),
        "valid_infeasible": sum(_infeasible(lab, t) for lab, t in zip(valid.labels, valid_frames)),
        "vocab": tokenizer.vocab,
        "frame_stride": cfg.frame_stride,
        "normalize_waves": normalize,
    }
    models: dict[str, ModelProbes] = {}

    # (a) the model itself
    if include_model:
        t0 = time.perf_counter()
        feats = _model_features(backbone, train, valid, normalize)
        t1 = time.perf_counter()
        scores = [
            LayerScore(n, r.dim, r.valid_error, r.valid_loss, r.train_loss, probe_seed_errors=e)
            for n, r, e in _probe_layers(
                feats, train, valid, tokenizer.vocab, protocol, log, "checkpoint", metric
            )
        ]
        models["checkpoint"] = ModelProbes(
            "checkpoint", source, scores, seconds_features=t1 - t0, seconds_probes=time.perf_counter() - t1
        )
        del feats

    # (b) the same architecture at random init, averaged over seeds
    if protocol.random_init_seeds:
        seeds = [protocol.seed + k for k in range(protocol.random_init_seeds)]
        per_seed: list[list[tuple[str, Any]]] = []
        t_feat = t_probe = 0.0
        for seed in seeds:
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random_model = Wav2Vec2Model(cfg)
            feats = _model_features(random_model, train, valid, normalize)
            t1 = time.perf_counter()
            per_seed.append(
                _probe_layers(feats, train, valid, tokenizer.vocab, protocol, log, f"random{seed}", metric)
            )
            t_feat, t_probe = t_feat + t1 - t0, t_probe + time.perf_counter() - t1
            del feats, random_model
        scores = []
        for k, (name, first, _) in enumerate(per_seed[0]):
            runs = [rs[k][1] for rs in per_seed]
            vals = {
                key: [getattr(r, key) for r in runs] for key in ("valid_error", "valid_loss", "train_loss")
            }
            scores.append(
                LayerScore(name, first.dim, *(sum(v) / len(v) for v in vals.values()), per_seed=vals)
            )
        models["random_init"] = ModelProbes(
            "random_init",
            f"{type(backbone).__name__}(config) at random init",
            scores,
            seeds=seeds,
            seconds_features=t_feat,
            seconds_probes=t_probe,
        )

    # (c) the log-mel front end, stacked onto the encoder's frames
    if protocol.log_mel:
        t0 = time.perf_counter()
        lm = LogMel()
        feats = {
            "log_mel": (
                log_mel_features(train.waves, train_frames, cfg.frame_stride, lm),
                log_mel_features(valid.waves, valid_frames, cfg.frame_stride, lm),
            )
        }
        t1 = time.perf_counter()
        scores = [
            LayerScore(n, r.dim, r.valid_error, r.valid_loss, r.train_loss, probe_seed_errors=e)
            for n, r, e in _probe_layers(
                feats, train, valid, tokenizer.vocab, protocol, log, "log-mel", metric
            )
        ]
        models["log_mel"] = ModelProbes(
            "log_mel",
            f"LogMel(n_mels={lm.n_mels}, 25 ms / 10 ms) x {cfg.frame_stride // lm.hop} stacked",
            scores,
            seconds_features=t1 - t0,
            seconds_probes=time.perf_counter() - t1,
        )
    return ProbeReport(protocol, data, models)


def _infeasible(labels: Tensor, frames: int) -> bool:
    """CTC cannot emit ``labels`` in ``frames`` frames (each repeat needs a blank between)."""
    repeats = int((labels[1:] == labels[:-1]).sum()) if len(labels) > 1 else 0
    return len(labels) + repeats > frames
