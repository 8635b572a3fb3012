"""An experiment's spec: typed sections, defaults, and the fairness rules every plan obeys.

A spec (YAML or JSON) names the corpus, the **variants** (each one of: ``pretrain`` overrides of
a pretraining recipe, existing ``checkpoints`` — paths or shipped names, one per pretraining
seed — or ``scratch``), and the **measures**: ``probe`` (every-layer frozen probes, chosen on
valid) and/or ``finetune`` (CTC fine-tuning at label sizes, the lr trial chosen on valid, test
scored once). OmegaConf checks the keys and types against the dataclasses below; the protocol's
minimums (:class:`Protocol`) are defaults a spec may lower, and the plan and report say so.
Keys and a worked example: docs/ablations.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

__all__ = [
    "ExperimentError",
    "load_mapping",
    "validate_spec",
    "lowered_protocol",
    "Protocol",
    "ExperimentSpec",
]

TOPLINE = "topline"
# keys the plan sets for each run; an override of one of them would silently fight it
_MANAGED = "trainer.seed trainer.max_updates trainer.num_threads data.manifest_dir hydra".split()
FINETUNE_MANAGED = (
    *_MANAGED,
    *"optim.lr optim.lr_scale data.train_subset finetune.pretrained run_dir".split(),
)
PRETRAIN_MANAGED = (*_MANAGED, *"trainer.max_epochs trainer.resume schedule.total_updates".split())


class ExperimentError(Exception):
    """A user error: the CLI prints it on one line and exits with status 2."""


@dataclass(kw_only=True)
class Trial:
    lr: float
    lr_scale: dict[str, float] = field(default_factory=dict)
    """Per-part lr multipliers by parameter-name prefix (e.g. ``{lm_head: 4}``)."""


@dataclass(kw_only=True)
class Size:
    subset: str
    """A labeled split of the corpus (``SUBSET.tsv`` + ``.ltr``)."""
    minutes: float
    updates: int
    """The fine-tuning budget at this size, the same for every variant."""


@dataclass(kw_only=True)
class Topline:
    """A supervised reference line: a scratch variant's recipe and trials on a large labeled set."""

    like: str
    subset: str = "unlabeled_text"
    """The demo corpus's unlabeled pool with its transcripts (corpus/build.py)."""
    minutes: float
    updates: int
    seeds: Optional[list[int]] = None
    """None: the fine-tuning seeds."""


@dataclass(kw_only=True)
class FinetuneSpec:
    config: str = "finetune_demo"
    overrides: list[str] = field(default_factory=list)
    sizes: list[Size]
    seeds: list[int]
    trials: Optional[list[Trial]] = None
    """The lr trials of every variant that gives none of its own."""
    topline: Optional[Topline] = None


@dataclass(kw_only=True)
class PretrainSpec:
    config: str = "pretrain_demo"
    updates: int
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ProbeSpec:
    train: str
    valid: str
    protocol: dict[str, Any] = field(default_factory=dict)
    """:class:`~wav2vec2_lite.probes.protocol.ProbeProtocol`'s fields."""


@dataclass(kw_only=True)
class Checkpoint:
    name: str
    path: str
    """A model or run folder, a fairseq/Hugging Face checkpoint, or a shipped name."""
    sizes: Optional[list[str]] = None
    """The label sizes it is fine-tuned at (None: every size)."""


@dataclass(kw_only=True)
class VariantFinetune:
    overrides: list[str] = field(default_factory=list)
    trials: Optional[list[Trial]] = None


@dataclass(kw_only=True)
class Variant:
    """Exactly one of ``pretrain``, ``checkpoints``, ``checkpoint`` or ``scratch``."""

    pretrain: Optional[list[str]] = None
    checkpoints: Optional[list[Checkpoint]] = None
    checkpoint: Optional[str] = None
    scratch: bool = False
    finetune: VariantFinetune = field(default_factory=VariantFinetune)


@dataclass(kw_only=True)
class Protocol:
    min_seeds: int = 3
    """Fine-tuning seeds per cell."""
    min_trials: int = 2
    """lr trials per variant."""
    min_pretrain_seeds: int = 2
    """Pretraining seeds (checkpoints) per pretrained variant ..."""
    min_pretrain_seeds_at: Optional[list[str]] = None
    """... at these sizes (None: every size)."""
    collapse_threshold: float = 0.9
    """Final valid output this empty counts as blank collapse."""
    bootstrap_resamples: int = 10_000
    bootstrap_seed: int = 0


@dataclass(kw_only=True)
class ExperimentSpec:
    name: str
    corpus: str
    runs_dir: Optional[str] = None
    """None: ``runs/experiments/NAME``."""
    results_dir: Optional[str] = None
    """None: the spec's folder."""
    threads_per_run: int = 1
    reference: Optional[str] = None
    """The variant every other is divided by in the report."""
    variants: dict[str, Variant]
    pretrain: Optional[PretrainSpec] = None
    probe: Optional[ProbeSpec] = None
    finetune: Optional[FinetuneSpec] = None
    protocol: Protocol = field(default_factory=Protocol)
    slurm: dict[str, Any] = field(default_factory=dict)
    """:class:`~wav2vec2_lite.experiments.jobs.SlurmOptions`' fields."""


def _need(ok: Any, message: str) -> None:
    if not ok:
        raise ExperimentError(message)


def load_mapping(path: Path) -> dict:
    """A YAML or JSON file holding a mapping; anything else is the user's error, named."""
    path = Path(path)
    _need(path.is_file(), f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except Exception as e:  # any parse error is the user's file
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ExperimentError(f"{path}: not valid {kind} ({str(e).splitlines()[0]})") from None
    _need(isinstance(data, dict), f"{path}: expected a mapping at the top level")
    return data


def _typed(raw: dict) -> ExperimentSpec:
    """The spec checked against :class:`ExperimentSpec` (keys, types, required keys), one line on error."""
    try:
        return OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(ExperimentSpec), OmegaConf.create(raw))
        )
    except ConfigKeyError as e:
        typ = e.object_type
        known = [f.name for f in dataclasses.fields(typ)] if dataclasses.is_dataclass(typ) else []
        raise ExperimentError(f"spec.{e.full_key}: unknown key; known: {', '.join(known)}") from None
    except MissingMandatoryValue as e:
        raise ExperimentError(f"spec.{e.full_key}: required") from None
    except OmegaConfBaseException as e:
        raise ExperimentError(f"spec.{e.full_key}: {str(e.msg).splitlines()[0]}") from None


def _name(where: str, name: str) -> str:
    """Variant, checkpoint and subset names become run ids, file names and --only patterns."""
    _need(
        re.fullmatch(r"[A-Za-z0-9_.]+", name),
        f"{where}: {name!r}: names use letters, digits, '_' and '.' only (they become run ids)",
    )
    return name


def _overrides(where: str, overrides: list[str], managed: tuple[str, ...]) -> list[str]:
    for o in overrides:
        key, eq, value = o.lstrip("+~").partition("=")
        _need(eq, f"{where}: {o!r} is not a Hydra override KEY=VALUE")
        _need(
            not any(key == m or key.startswith(m + ".") for m in managed),
            f"{where}: {o!r} sets {key}, which the plan sets for each run (corpus, sizes, updates, "
            f"seeds, trials, checkpoints, threads_per_run)",
        )
        _need(
            not (key in ("data.train_subset", "data.valid_subset") and value.strip() == "test"),
            f"{where}: {o!r}: test is never trained or chosen on",
        )
    return list(overrides)


def _seeds(where: str, seeds: list[int]) -> list[int]:
    _need(
        seeds and len(set(seeds)) == len(seeds) and min(seeds) >= 0,
        f"{where}: a list of distinct seeds >= 0 (got {seeds!r})",
    )
    return seeds


def _trials(where: str, trials: list[Trial] | None) -> list[dict] | None:
    if trials is None:
        return None
    _need(trials, f"{where}: a non-empty list of {{lr: X[, lr_scale: {{PREFIX: SCALE}}]}}")
    for i, t in enumerate(trials):
        _need(
            t.lr > 0 and all(v > 0 for v in t.lr_scale.values()), f"{where}[{i}]: lr and lr_scale values > 0"
        )
    return [{"lr": t.lr, "lr_scale": dict(sorted(t.lr_scale.items()))} for t in trials]


def _pretrain(p: PretrainSpec) -> dict:
    _need(p.updates >= 1, "spec.pretrain.updates: >= 1")
    overrides = _overrides("spec.pretrain.overrides", p.overrides, PRETRAIN_MANAGED)
    return dataclasses.asdict(p) | {"seeds": _seeds("spec.pretrain.seeds", p.seeds), "overrides": overrides}


def _probe(p: ProbeSpec) -> dict:
    from wav2vec2_lite.probes.protocol import ProbeError, ProbeProtocol  # keeps the spec torch-free

    _need(p.train != p.valid, "spec.probe: train and valid must be two different splits")
    _need("test" not in (p.train, p.valid), "spec.probe: a probe split is test; test is never read")
    try:
        protocol = ProbeProtocol.from_dict(dict(p.protocol)).validate()
    except ProbeError as e:
        raise ExperimentError(f"spec.probe.protocol: {e}") from None
    return {"train": p.train, "valid": p.valid, "protocol": protocol.to_dict()}


def _finetune(f: FinetuneSpec) -> dict:
    _need(f.sizes, "spec.finetune.sizes: a list of {subset: NAME, minutes: M, updates: N}")
    for i, s in enumerate(f.sizes):
        _name(f"spec.finetune.sizes[{i}].subset", s.subset)
        _need(s.minutes > 0 and s.updates >= 1, f"spec.finetune.sizes[{i}]: minutes > 0 and updates >= 1")
    subsets = [s.subset for s in f.sizes]
    _need(len(set(subsets)) == len(subsets), f"spec.finetune.sizes: a subset appears twice ({subsets})")
    top = f.topline
    if top is not None:
        _need(top.updates >= 1, "spec.finetune.topline.updates: >= 1")
        top = dataclasses.asdict(top) | {
            "subset": _name("spec.finetune.topline.subset", top.subset),
            "seeds": _seeds("spec.finetune.topline.seeds", top.seeds or f.seeds),
        }
    return {
        "config": f.config,
        "overrides": _overrides("spec.finetune.overrides", f.overrides, FINETUNE_MANAGED),
        "sizes": [dataclasses.asdict(s) for s in f.sizes],
        "seeds": _seeds("spec.finetune.seeds", f.seeds),
        "trials": _trials("spec.finetune.trials", f.trials),
        "topline": top,
    }


def _variant(name: str, v: Variant, spec: dict) -> dict:
    where = f"spec.variants.{name}"
    kinds = [k for k in ("pretrain", "checkpoints", "checkpoint") if getattr(v, k) is not None]
    kinds += ["scratch"] if v.scratch else []
    _need(
        len(kinds) == 1,
        f"{where}: exactly one of pretrain (overrides), checkpoints (a list), checkpoint (a path or "
        f"shipped name) or scratch: true (got {kinds or 'none'})",
    )
    out: dict[str, Any] = {"source": "checkpoint" if kinds[0] == "checkpoints" else kinds[0]}
    if kinds[0] == "pretrain":
        _need(spec["pretrain"] is not None, f"{where}: pretrains, so the spec needs a pretrain section")
        out["pretrain"] = _overrides(f"{where}.pretrain", v.pretrain, PRETRAIN_MANAGED)
    elif kinds[0] != "scratch":
        ckpts = v.checkpoints if v.checkpoints is not None else [Checkpoint(name="c1", path=v.checkpoint)]
        _need(ckpts, f"{where}.checkpoints: a list of {{name, path[, sizes]}}, one per pretraining seed")
        out["checkpoints"] = [dataclasses.asdict(c) for c in ckpts]
        names = [_name(f"{where}.checkpoints", c.name) for c in ckpts]
        _need(len(set(names)) == len(names), f"{where}.checkpoints: names must be distinct")
    out["finetune"] = {
        "overrides": _overrides(f"{where}.finetune.overrides", v.finetune.overrides, FINETUNE_MANAGED),
        "trials": _trials(f"{where}.finetune.trials", v.finetune.trials),
    }
    return out


def _at_least(proto: dict, key: str, n: int, where: str, what: str) -> None:
    _need(
        n >= proto[key],
        f"{where}: the protocol asks for >= {proto[key]} {what} (got {n}; a spec may lower protocol.{key}, "
        f"and the report says so)",
    )


def _fairness(spec: dict) -> None:
    """Every variant gets the same budget (sizes carry it), the same number of lr trials, the same
    per-part lr multipliers, and the protocol's minimum seeds."""
    proto, ft, variants = spec["protocol"], spec["finetune"], spec["variants"]
    if ft is not None:
        _at_least(proto, "min_seeds", len(ft["seeds"]), "spec.finetune.seeds", "fine-tuning seeds per cell")
        counts = {n: len(v["trials"]) for n, v in variants.items()}
        _need(len(set(counts.values())) == 1, f"unequal number of lr trials between variants ({counts})")
        _at_least(proto, "min_trials", next(iter(counts.values())), "spec.variants", "lr trials per variant")
        scales = {
            n: sorted(json.dumps(t["lr_scale"], sort_keys=True) for t in v["trials"])
            for n, v in variants.items()
        }
        _need(
            len({json.dumps(s) for s in scales.values()}) == 1,
            f"per-part lr multipliers differ between variants ({scales}): a multiplier counts as a "
            f"trial and is offered to every variant",
        )
    subsets = [s["subset"] for s in ft["sizes"]] if ft else []
    at = proto["min_pretrain_seeds_at"]
    for subset in at or []:
        _need(
            subset in subsets,
            f"spec.protocol.min_pretrain_seeds_at: {subset!r} is not among the sizes {subsets}",
        )
    for name, v in variants.items():
        if v["source"] == "scratch":
            continue
        counts = {
            s: sum(s in c["sizes"] for c in v["checkpoints"]) for s in (at if at is not None else subsets)
        }
        for subset, n in (counts if subsets else {"(probes)": len(v["checkpoints"])}).items():
            _at_least(
                proto, "min_pretrain_seeds", n, f"spec.variants.{name}", f"pretraining seeds at {subset}"
            )


def validate_spec(raw: dict) -> dict:
    """The spec with defaults filled in, as plain data; :class:`ExperimentError` names the first problem."""
    spec = _typed(raw)
    _need(spec.probe or spec.finetune, "spec: no measure; give probe and/or finetune")
    _need(spec.threads_per_run >= 1, "spec.threads_per_run: >= 1")
    _need(spec.variants, "spec.variants: a mapping of names to variants")
    _need(TOPLINE not in spec.variants, f"spec.variants: {TOPLINE!r} is reserved for the finetune topline")
    protocol = dataclasses.asdict(spec.protocol)
    for key in ("min_seeds", "min_trials", "min_pretrain_seeds"):
        _need(protocol[key] >= 1, f"spec.protocol.{key}: a whole number >= 1")
    out: dict[str, Any] = {
        "name": _name("spec.name", spec.name),
        "corpus": spec.corpus,
        "runs_dir": spec.runs_dir or f"runs/experiments/{spec.name}",
        "results_dir": spec.results_dir,
        "threads_per_run": spec.threads_per_run,
        "pretrain": spec.pretrain and _pretrain(spec.pretrain),
        "probe": spec.probe and _probe(spec.probe),
        "finetune": spec.finetune and _finetune(spec.finetune),
        "protocol": protocol,
        "slurm": spec.slurm,
    }
    out["variants"] = {_name("spec.variants", n): _variant(n, v, out) for n, v in spec.variants.items()}
    ft = out["finetune"]
    subsets = [s["subset"] for s in ft["sizes"]] if ft else []
    for name, v in out["variants"].items():
        if v["source"] == "pretrain":
            v["checkpoints"] = [
                {"name": f"p{s}", "path": None, "sizes": subsets} for s in out["pretrain"]["seeds"]
            ]
        for c in v.get("checkpoints", []):
            c["sizes"] = subsets if c["sizes"] is None else c["sizes"]
            _need(
                not set(c["sizes"]) - set(subsets),
                f"spec.variants.{name}.checkpoints: sizes among {subsets} (got {c['sizes']!r})",
            )
            c["sizes"] = [s for s in subsets if s in c["sizes"]]
        if ft is not None:
            v["trials"] = v["finetune"]["trials"] or ft["trials"]
            _need(
                v["trials"], f"spec.variants.{name}: no lr trials; give finetune.trials or the variant's own"
            )
        _need(
            v["source"] != "scratch" or ft,
            f"spec.variants.{name}: a scratch variant is measured by fine-tuning; the spec has no finetune",
        )
    if ft and ft["topline"]:
        like = ft["topline"]["like"]
        _need(like in out["variants"], f"spec.finetune.topline.like: {like!r} is not a variant")
        _need(out["variants"][like]["source"] == "scratch", "spec.finetune.topline.like: a scratch variant")
    _need(spec.reference in (None, *out["variants"]), f"spec.reference: {spec.reference!r} is not a variant")
    out["reference"] = spec.reference
    _fairness(out)
    return out


def lowered_protocol(protocol: dict) -> list[str]:
    """The protocol's minimums this spec lowers below the defaults, in words (for plan and report)."""
    default = dataclasses.asdict(Protocol())
    out = [
        f"{k} {protocol[k]} (default {default[k]})"
        for k in ("min_seeds", "min_trials", "min_pretrain_seeds")
        if protocol[k] < default[k]
    ]
    if (at := protocol["min_pretrain_seeds_at"]) is not None:
        out.append(f"min_pretrain_seeds only at {', '.join(at)} (default: every size)")
    return out
