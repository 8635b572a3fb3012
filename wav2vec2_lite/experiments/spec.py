"""An experiment's spec: its keys, defaults and the fairness rules every plan obeys.

A spec (YAML or JSON) names the corpus, the **variants** (each one of: ``pretrain`` overrides of
a pretraining recipe, existing ``checkpoints`` — paths or shipped names, one per pretraining
seed — or ``scratch``), and the **measures**: ``probe`` (every-layer frozen probes, chosen on
valid) and/or ``finetune`` (CTC fine-tuning at label sizes, the lr trial chosen on valid, test
scored once). The protocol's minimums (``PROTOCOL_DEFAULTS``) are defaults a spec may lower;
the plan and the report then say so. Keys and a worked example: docs/ablations.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ExperimentError",
    "load_mapping",
    "validate_spec",
    "lowered_protocol",
    "PROTOCOL_DEFAULTS",
    "SPEC_KEYS",
    "TOPLINE",
    "TRANSCRIBED_UNLABELED",
]

TOPLINE = "topline"
TRANSCRIBED_UNLABELED = "unlabeled_text"
"""A subset the engine builds from a synthesized corpus (``utterances.jsonl``): the unlabeled pool
with its transcripts, for a supervised topline."""
PROTOCOL_DEFAULTS = {
    "min_seeds": 3,
    "min_trials": 2,
    "min_pretrain_seeds": 2,
    "min_pretrain_seeds_at": None,
    "collapse_threshold": 0.9,
    "bootstrap_resamples": 10_000,
    "bootstrap_seed": 0,
}
"""``min_seeds``: fine-tuning seeds per cell; ``min_trials``: lr trials per variant;
``min_pretrain_seeds``: pretraining seeds (checkpoints) per pretrained variant, at the sizes
``min_pretrain_seeds_at`` (None: every size); ``collapse_threshold``: final valid output this
empty counts as blank collapse; bootstrap settings of every CI."""
SPEC_KEYS = {
    "name",
    "corpus",
    "runs_dir",
    "results_dir",
    "threads_per_run",
    "reference",
    "variants",
    "pretrain",
    "probe",
    "finetune",
    "protocol",
    "slurm",
}
# keys the plan sets for each run; an override of one of them would silently fight it
FINETUNE_MANAGED = (
    "optim.lr",
    "optim.lr_scale",
    "trainer.seed",
    "trainer.max_updates",
    "trainer.num_threads",
    "data.train_subset",
    "data.manifest_dir",
    "finetune.pretrained",
    "run_dir",
    "hydra",
)
PRETRAIN_MANAGED = (
    "trainer.max_updates",
    "trainer.max_epochs",
    "trainer.seed",
    "trainer.num_threads",
    "trainer.resume",
    "schedule.total_updates",
    "data.manifest_dir",
    "hydra",
)


class ExperimentError(Exception):
    """A user error: the CLI prints it on one line and exits with status 2."""


def _need(ok: bool, message: str) -> None:
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _name(where: str, name: Any) -> str:
    """Variant, checkpoint and subset names become run ids, file names and --only patterns."""
    _need(
        isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.]+", name) is not None,
        f"{where}: {name!r}: names use letters, digits, '_' and '.' only (they become run ids)",
    )
    return name


def _overrides(where: str, overrides: Any, managed: tuple[str, ...]) -> list[str]:
    _need(
        isinstance(overrides, list) and all(isinstance(o, str) and "=" in o for o in overrides),
        f"{where}: a list of Hydra overrides KEY=VALUE (got {overrides!r})",
    )
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
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


def _seeds(where: str, seeds: Any) -> list[int]:
    _need(
        isinstance(seeds, list)
        and bool(seeds)
        and len(set(seeds)) == len(seeds)
        and all(_is_int(s) and s >= 0 for s in seeds),
        f"{where}: a list of distinct integer seeds >= 0 (got {seeds!r})",
    )
    return list(seeds)


def _positive_int(where: str, v: Any) -> int:
    _need(_is_int(v) and v >= 1, f"{where}: a whole number >= 1 (got {v!r})")
    return int(v)


def _trial(where: str, t: Any) -> dict:
    _need(
        isinstance(t, dict) and not set(t) - {"lr", "lr_scale"} and "lr" in t,
        f"{where}: a trial is {{lr: X[, lr_scale: {{PREFIX: SCALE}}]}} (got {t!r})",
    )
    lr, scale = t["lr"], t.get("lr_scale") or {}
    _need(_is_number(lr) and lr > 0, f"{where}: lr must be a number > 0 (got {lr!r})")
    _need(
        isinstance(scale, dict) and all(_is_number(v) and v > 0 for v in scale.values()),
        f"{where}: lr_scale maps parameter prefixes to numbers > 0 (got {scale!r})",
    )
    return {"lr": float(lr), "lr_scale": {str(k): float(v) for k, v in sorted(scale.items())}}


def _trials(where: str, trials: Any) -> list[dict]:
    _need(
        isinstance(trials, list) and bool(trials),
        f"{where}: a non-empty list of {{lr: X[, lr_scale: {{...}}]}}",
    )
    return [_trial(f"{where}[{i}]", t) for i, t in enumerate(trials)]


def _keys(where: str, obj: Any, allowed: set[str], required: set[str] = frozenset()) -> dict:
    _need(isinstance(obj, dict), f"{where}: a mapping (got {obj!r})")
    unknown, missing = sorted(set(obj) - allowed), sorted(set(required) - set(obj))
    _need(not unknown, f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    _need(not missing, f"{where}: '{missing[0] if missing else ''}' is required")
    return obj


def _pretrain_section(p: Any) -> dict:
    p = _keys("spec.pretrain", p, {"config", "updates", "seeds", "overrides"}, {"updates", "seeds"})
    return {
        "config": str(p.get("config", "pretrain_demo")),
        "updates": _positive_int("spec.pretrain.updates", p["updates"]),
        "seeds": _seeds("spec.pretrain.seeds", p["seeds"]),
        "overrides": _overrides("spec.pretrain.overrides", p.get("overrides", []), PRETRAIN_MANAGED),
    }


def _probe_section(p: Any) -> dict:
    from wav2vec2_lite.probes.protocol import ProbeError, ProbeProtocol  # keeps the spec torch-free

    p = _keys("spec.probe", p, {"train", "valid", "protocol"}, {"train", "valid"})
    _need(p["train"] != p["valid"], "spec.probe: train and valid must be two different splits")
    _need("test" not in (p["train"], p["valid"]), "spec.probe: a probe split is test; test is never read")
    _need(isinstance(p.get("protocol") or {}, dict), "spec.probe.protocol: a mapping")
    try:
        protocol = ProbeProtocol.from_dict(dict(p.get("protocol") or {})).validate()
    except ProbeError as e:
        raise ExperimentError(f"spec.probe.protocol: {e}") from None
    return {"train": str(p["train"]), "valid": str(p["valid"]), "protocol": protocol.to_dict()}


def _finetune_section(f: Any) -> dict:
    f = _keys(
        "spec.finetune",
        f,
        {"config", "overrides", "sizes", "seeds", "trials", "topline"},
        {"sizes", "seeds"},
    )
    sizes = f["sizes"]
    _need(
        isinstance(sizes, list) and bool(sizes),
        "spec.finetune.sizes: a list of {subset: NAME, minutes: M, updates: N}",
    )
    out_sizes = []
    for i, s in enumerate(sizes):
        where = f"spec.finetune.sizes[{i}]"
        s = _keys(where, s, {"subset", "minutes", "updates"}, {"subset", "minutes", "updates"})
        _need(_is_number(s["minutes"]) and s["minutes"] > 0, f"{where}.minutes: a number > 0")
        out_sizes.append(
            {
                "subset": _name(f"{where}.subset", s["subset"]),
                "minutes": float(s["minutes"]),
                "updates": _positive_int(f"{where}.updates", s["updates"]),
            }
        )
    subsets = [s["subset"] for s in out_sizes]
    _need(len(set(subsets)) == len(subsets), f"spec.finetune.sizes: a subset appears twice ({subsets})")
    topline = f.get("topline")
    if topline is not None:
        topline = _keys(
            "spec.finetune.topline",
            topline,
            {"like", "subset", "minutes", "updates", "seeds"},
            {"like", "minutes", "updates"},
        )
        _need(_is_number(topline["minutes"]), "spec.finetune.topline.minutes: a number")
        topline = {
            "like": str(topline["like"]),
            "subset": _name("spec.finetune.topline.subset", topline.get("subset", TRANSCRIBED_UNLABELED)),
            "minutes": float(topline["minutes"]),
            "updates": _positive_int("spec.finetune.topline.updates", topline["updates"]),
            "seeds": _seeds("spec.finetune.topline.seeds", topline.get("seeds", f["seeds"])),
        }
    return {
        "config": str(f.get("config", "finetune_demo")),
        "overrides": _overrides("spec.finetune.overrides", f.get("overrides", []), FINETUNE_MANAGED),
        "sizes": out_sizes,
        "seeds": _seeds("spec.finetune.seeds", f["seeds"]),
        "trials": _trials("spec.finetune.trials", f["trials"]) if "trials" in f else None,
        "topline": topline,
    }


def _variant(name: str, v: Any, spec: dict) -> dict:
    where = f"spec.variants.{name}"
    v = _keys(where, v, {"pretrain", "checkpoints", "checkpoint", "scratch", "finetune"})
    kinds = [k for k in ("pretrain", "checkpoints", "checkpoint", "scratch") if k in v]
    _need(
        len(kinds) == 1,
        f"{where}: exactly one of pretrain (overrides), checkpoints (a list), checkpoint (a path or "
        f"shipped name) or scratch: true (got {kinds or 'none'})",
    )
    out: dict[str, Any] = {"source": kinds[0].removesuffix("s") if kinds[0] == "checkpoints" else kinds[0]}
    if kinds[0] == "pretrain":
        _need(spec.get("pretrain") is not None, f"{where}: pretrains, so the spec needs a pretrain section")
        out["pretrain"] = _overrides(f"{where}.pretrain", v["pretrain"], PRETRAIN_MANAGED)
    elif kinds[0] == "scratch":
        _need(v["scratch"] is True, f"{where}.scratch: true (got {v['scratch']!r})")
    else:
        raw = v["checkpoints"] if kinds[0] == "checkpoints" else [{"name": "c1", "path": v["checkpoint"]}]
        _need(
            isinstance(raw, list) and bool(raw),
            f"{where}.checkpoints: a list of {{name, path[, sizes]}}, one per pretraining seed",
        )
        out["checkpoints"] = []
        for i, c in enumerate(raw):
            c = _keys(f"{where}.checkpoints[{i}]", c, {"name", "path", "sizes"}, {"name", "path"})
            out["checkpoints"].append(
                {
                    "name": _name(f"{where}.checkpoints[{i}].name", c["name"]),
                    "path": str(c["path"]),
                    "sizes": c.get("sizes"),
                }
            )
        names = [c["name"] for c in out["checkpoints"]]
        _need(len(set(names)) == len(names), f"{where}.checkpoints: names must be distinct")
    ft = _keys(f"{where}.finetune", v.get("finetune") or {}, {"overrides", "trials"})
    out["finetune"] = {
        "overrides": _overrides(f"{where}.finetune.overrides", ft.get("overrides", []), FINETUNE_MANAGED),
        "trials": _trials(f"{where}.finetune.trials", ft["trials"]) if "trials" in ft else None,
    }
    return out


def _fairness(spec: dict) -> None:
    """Both arms of every comparison get the same budget (sizes carry it), the same number of lr
    trials, the same per-part lr multipliers, and the protocol's minimum seeds."""
    proto, ft = spec["protocol"], spec["finetune"]
    if ft is not None:
        _need(
            len(ft["seeds"]) >= proto["min_seeds"],
            f"spec.finetune.seeds: the protocol asks for >= {proto['min_seeds']} fine-tuning seeds per "
            f"cell (got {len(ft['seeds'])}; a spec may lower protocol.min_seeds, and the report says so)",
        )
        counts = {n: len(v["trials"]) for n, v in spec["variants"].items()}
        _need(
            len(set(counts.values())) == 1,
            f"unequal number of lr trials between variants ({counts}): every variant gets the same number",
        )
        n = next(iter(counts.values()))
        _need(
            n >= proto["min_trials"],
            f"the protocol asks for >= {proto['min_trials']} lr trials per variant (got {n}; a spec may "
            f"lower protocol.min_trials, and the report says so)",
        )
        scales = {
            name: sorted(json.dumps(t["lr_scale"], sort_keys=True) for t in v["trials"])
            for name, v in spec["variants"].items()
        }
        _need(
            len({json.dumps(s) for s in scales.values()}) == 1,
            f"per-part lr multipliers differ between variants ({scales}): a multiplier counts as a "
            f"trial and is offered to every variant",
        )
    subsets = [s["subset"] for s in ft["sizes"]] if ft else []
    at = proto["min_pretrain_seeds_at"]
    if at is not None:
        _need(isinstance(at, list), f"spec.protocol.min_pretrain_seeds_at: a list of subsets (got {at!r})")
        for subset in at:
            _need(
                subset in subsets,
                f"spec.protocol.min_pretrain_seeds_at names {subset!r}, "
                f"which is not among the sizes {subsets}",
            )
    for name, v in spec["variants"].items():
        if v["source"] == "scratch":
            continue
        n_by_size = {
            s: sum(s in c["sizes"] for c in v["checkpoints"]) for s in (at if at is not None else subsets)
        }
        if not subsets:
            n_by_size = {"(probes)": len(v["checkpoints"])}
        for subset, n in n_by_size.items():
            _need(
                n >= proto["min_pretrain_seeds"],
                f"spec.variants.{name}: {n} pretraining seed(s) at {subset}; the protocol asks for >= "
                f"{proto['min_pretrain_seeds']} (a spec may lower protocol.min_pretrain_seeds)",
            )


def validate_spec(spec: dict) -> dict:
    """The spec with defaults filled in; an :class:`ExperimentError` names the first problem."""
    _keys("spec", spec, SPEC_KEYS, {"name", "corpus", "variants"})
    _need(spec.get("probe") or spec.get("finetune"), "spec: no measure; give probe and/or finetune")
    name = _name("spec.name", spec["name"])
    protocol = {
        **PROTOCOL_DEFAULTS,
        **_keys("spec.protocol", spec.get("protocol") or {}, set(PROTOCOL_DEFAULTS)),
    }
    for key in ("min_seeds", "min_trials", "min_pretrain_seeds"):
        _need(_is_int(protocol[key]) and protocol[key] >= 1, f"spec.protocol.{key}: a whole number >= 1")
    out: dict[str, Any] = {
        "name": name,
        "corpus": str(spec["corpus"]),
        "runs_dir": str(spec.get("runs_dir", f"runs/experiments/{name}")),
        "results_dir": str(spec["results_dir"]) if spec.get("results_dir") else None,
        "threads_per_run": _positive_int("spec.threads_per_run", spec.get("threads_per_run", 1)),
        "pretrain": _pretrain_section(spec["pretrain"]) if spec.get("pretrain") is not None else None,
        "probe": _probe_section(spec["probe"]) if spec.get("probe") is not None else None,
        "finetune": _finetune_section(spec["finetune"]) if spec.get("finetune") is not None else None,
        "protocol": protocol,
        "slurm": _keys(
            "spec.slurm",
            spec.get("slurm") or {},
            {"partition", "gpus_per_node", "timeout_min", "mem_gb", "extra"},
        ),
    }
    variants = spec["variants"]
    _need(isinstance(variants, dict) and bool(variants), "spec.variants: a mapping of names to variants")
    _need(TOPLINE not in variants, f"spec.variants: {TOPLINE!r} is reserved for the finetune topline")
    out["variants"] = {_name("spec.variants", str(n)): _variant(str(n), v, out) for n, v in variants.items()}
    ft = out["finetune"]
    subsets = [s["subset"] for s in ft["sizes"]] if ft else []
    for name_, v in out["variants"].items():
        if v["source"] == "pretrain":
            v["checkpoints"] = [
                {"name": f"p{s}", "path": None, "sizes": subsets} for s in out["pretrain"]["seeds"]
            ]
        for c in v.get("checkpoints", []):
            c["sizes"] = subsets if c["sizes"] is None else c["sizes"]
            _need(
                isinstance(c["sizes"], list) and not set(c["sizes"]) - set(subsets),
                f"spec.variants.{name_}.checkpoints: sizes among {subsets} (got {c['sizes']!r})",
            )
            c["sizes"] = [s for s in subsets if s in c["sizes"]]
        if ft is not None:
            v["trials"] = v["finetune"]["trials"] or ft["trials"]
            _need(
                v["trials"] is not None,
                f"spec.variants.{name_}: no lr trials; give finetune.trials or the variant's finetune.trials",
            )
        _need(
            not (v["source"] == "scratch" and ft is None),
            f"spec.variants.{name_}: a scratch variant is measured by fine-tuning; the spec has no finetune",
        )
    if ft is not None and ft["topline"] is not None:
        like = ft["topline"]["like"]
        _need(like in out["variants"], f"spec.finetune.topline.like: {like!r} is not a variant")
        _need(out["variants"][like]["source"] == "scratch", "spec.finetune.topline.like: a scratch variant")
    ref = spec.get("reference")
    _need(ref is None or ref in out["variants"], f"spec.reference: {ref!r} is not a variant")
    out["reference"] = ref
    _fairness(out)
    return out


def lowered_protocol(protocol: dict) -> list[str]:
    """The protocol's minimums this spec lowers below the defaults, in words (for plan and report)."""
    out = []
    for key in ("min_seeds", "min_trials", "min_pretrain_seeds"):
        if protocol[key] < PROTOCOL_DEFAULTS[key]:
            out.append(f"{key} {protocol[key]} (default {PROTOCOL_DEFAULTS[key]})")
    if protocol["min_pretrain_seeds_at"] is not None:
        out.append(
            f"min_pretrain_seeds only at {', '.join(protocol['min_pretrain_seeds_at'])} (default: every size)"
        )
    return out
