"""Results of a probing run: per-layer valid CER and loss of each model, the best layer, the protocol.

JSON layout (``ProbeReport.to_dict``)::

    {"protocol": {steps, lr, batch_size, standardize, seed, random_init_seeds, log_mel, ...},
     "data": {manifest_dir, train_split, valid_split, train_utterances, valid_utterances,
              train_frames, valid_frames, vocab, ...},
     "models": {"checkpoint": {"source", "layers": [{"layer", "dim", "valid_cer", "valid_loss",
                                                    "train_loss"}, ...],
                               "best_layer", "best_valid_cer", "seconds_features", "seconds_probes"},
                "random_init": {... "seeds": [s0, s1], each layer also "per_seed": {...}},
                "log_mel": {... one layer "log_mel"}}}

With phoneme labels (``labels="phn"``) the error rate is over phonemes and its keys say
``per`` (``valid_per``, ``best_valid_per``); ``data.metric`` names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wav2vec2_lite.probes.protocol import ProbeProtocol
from wav2vec2_lite.serialization import atomic_write_text

__all__ = ["LayerScore", "ModelProbes", "ProbeReport", "MARKDOWN_START"]

MARKDOWN_START = "| layer | dim |"
"""How every table of :meth:`ProbeReport.to_markdown` starts (how ``w2v2-probe`` recognises its own)."""


@dataclass
class LayerScore:
    """One layer's probe (for ``random_init``: the mean over seeds, each seed in ``per_seed``).
    ``valid_error``: the validation error rate of the label unit (CER for letters, PER for phonemes)."""

    layer: str
    dim: int
    valid_error: float
    valid_loss: float
    train_loss: float
    per_seed: dict[str, list[float]] | None = None
    probe_seed_errors: list[float] | None = None  # each probe seed's valid error (when several)

    def to_dict(self, metric: str = "cer") -> dict[str, Any]:
        d: dict[str, Any] = {
            "layer": self.layer,
            "dim": self.dim,
            f"valid_{metric}": self.valid_error,
            "valid_loss": self.valid_loss,
            "train_loss": self.train_loss,
        }
        if self.per_seed is not None:
            d["per_seed"] = {k.replace("valid_error", f"valid_{metric}"): v for k, v in self.per_seed.items()}
        if self.probe_seed_errors is not None and len(self.probe_seed_errors) > 1:
            d[f"probe_seeds_valid_{metric}"] = self.probe_seed_errors
        return d


@dataclass
class ModelProbes:
    """Every probed layer of one model, in order."""

    name: str
    source: str
    layers: list[LayerScore]
    seeds: list[int] | None = None
    seconds_features: float = 0.0
    seconds_probes: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> LayerScore:
        """The layer with the lowest valid CER (ties: the lower valid loss, then the earlier layer)."""
        return min(self.layers, key=lambda s: (s.valid_error, s.valid_loss))

    def layer(self, name: str) -> LayerScore:
        for s in self.layers:
            if s.layer == name:
                return s
        raise KeyError(f"{self.name} has no layer {name!r}; it has {[s.layer for s in self.layers]}")

    def to_dict(self, metric: str = "cer") -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source,
            "layers": [s.to_dict(metric) for s in self.layers],
            "best_layer": self.best.layer,
            f"best_valid_{metric}": self.best.valid_error,
            "seconds_features": round(self.seconds_features, 2),
            "seconds_probes": round(self.seconds_probes, 2),
            **self.extra,
        }
        if self.seeds is not None:
            d["seeds"] = self.seeds
        return d


@dataclass
class ProbeReport:
    protocol: ProbeProtocol
    data: dict[str, Any]
    models: dict[str, ModelProbes]

    @property
    def metric(self) -> str:
        """``cer`` (letters) or ``per`` (phonemes): what ``valid_error`` counts."""
        return self.data.get("metric", "cer")

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol.to_dict(),
            "data": self.data,
            "models": {name: m.to_dict(self.metric) for name, m in self.models.items()},
        }

    def save_json(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def to_markdown(self) -> str:
        """Per-layer valid CER / PER (and loss) of each model side by side, then the best layers and
        the protocol."""
        unit = self.metric.upper()
        layered = [m for m in self.models.values() if m.name != "log_mel"]
        names: list[str] = []
        for m in layered:
            names += [s.layer for s in m.layers if s.layer not in names]
        header = MARKDOWN_START + " " + " | ".join(f"{_title(m)} {unit} (loss)" for m in layered) + " |"
        lines = [header, "|" + " --- |" * (2 + len(layered))]
        for name in names:
            cells, dim = [], ""
            for m in layered:
                try:
                    s = m.layer(name)
                except KeyError:
                    cells.append("")
                    continue
                dim = str(s.dim)
                mark = "**" if s is m.best else ""
                cells.append(f"{mark}{s.valid_error:.3f}{mark} ({s.valid_loss:.3f})")
            lines.append(f"| {name} | {dim} | " + " | ".join(cells) + " |")
        out = ["\n".join(lines), ""]
        if "log_mel" in self.models:
            s = self.models["log_mel"].layers[0]
            out.append(
                f"log-mel front end ({s.dim} dims, stacked onto the encoder's frames): "
                f"valid {unit} {s.valid_error:.3f} (loss {s.valid_loss:.3f})"
            )
        for m in layered:
            out.append(f"best layer of {_title(m)}: {m.best.layer} (valid {unit} {m.best.valid_error:.3f})")
        p, d = self.protocol, self.data
        out.append("")
        out.append(
            f"protocol: linear CTC probe over {d.get('labels', 'ltr')} labels, "
            f"train `{d['train_split']}` ({d['train_utterances']} utterances, "
            f"{d['train_frames']} frames), valid `{d['valid_split']}` ({d['valid_utterances']} utterances); "
            f"{p.steps} Adam steps, lr {p.lr:g} (half-cosine), batch {p.batch_size} utterances, "
            f"standardize={p.standardize}, seed {p.seed}. {unit}: greedy CTC decoding, bold = best layer."
        )
        return "\n".join(out) + "\n"


def _title(m: ModelProbes) -> str:
    if m.name == "random_init" and m.seeds:
        return f"random init (mean of {len(m.seeds)} seeds)"
    return m.name.replace("_", " ")
