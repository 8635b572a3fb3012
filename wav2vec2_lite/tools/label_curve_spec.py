"""The label curve's spec: its keys, defaults and the protocol's fairness rules (see
:mod:`wav2vec2_lite.tools.label_curve` and docs/results/label_curve.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LabelCurveError",
    "validate_spec",
    "load_mapping",
    "ARMS",
    "TOPLINE",
    "TOPLINE_SUBSET",
    "MANAGED_KEYS",
    "PROTOCOL_DEFAULTS",
    "SPEC_KEYS",
    "PLAN_FORMAT",
    "RUN_FORMAT",
]

PLAN_FORMAT = "wav2vec2_lite.label_curve.plan/1"
RUN_FORMAT = "wav2vec2_lite.label_curve.run/1"
ARMS = ("pretrained", "scratch")
TOPLINE = "topline"
# keys the plan sets for each run; an override of one of them in the spec would silently fight it
MANAGED_KEYS = (
    "optim.lr",
    "optim.lr_scale",
    "trainer.seed",
    "trainer.max_updates",
    "trainer.num_threads",
    "data.train_subset",
    "data.manifest_dir",
    "finetune.pretrained",
    "run_dir",
)
PROTOCOL_DEFAULTS = {
    "min_seeds": 3,
    "min_trials": 2,
    "min_pretrain_seeds": 2,
    "min_pretrain_seeds_at": ["train_10min"],
    "collapse_threshold": 0.9,
    "bootstrap_resamples": 10_000,
    "bootstrap_seed": 0,
}
SPEC_KEYS = {
    "name",
    "corpus",
    "runs_dir",
    "results_dir",
    "config_name",
    "common_overrides",
    "threads_per_run",
    "sizes",
    "seeds",
    "arms",
    "topline",
    "protocol",
}
TOPLINE_SUBSET = "unlabeled_text"


class LabelCurveError(Exception):
    """A user error: the CLI prints it on one line and exits with status 2."""


def load_mapping(path: Path) -> dict:
    if not path.is_file():
        raise LabelCurveError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as e:  # any parse error is the user's file
        raise LabelCurveError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({str(e).splitlines()[0]})"
        ) from e
    if not isinstance(data, dict):
        raise LabelCurveError(f"{path}: expected a mapping at the top level")
    return data


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _check_overrides(where: str, overrides: Any) -> list[str]:
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise LabelCurveError(f"{where}: a list of Hydra overrides KEY=VALUE (got {overrides!r})")
    for o in overrides:
        key = _override_key(o)
        if any(key == m or key.startswith(m + ".") for m in MANAGED_KEYS):
            raise LabelCurveError(
                f"{where}: {o!r} sets {key}, which the plan sets for each run "
                f"(sizes, trials, seeds, checkpoints, corpus, threads_per_run)"
            )
    return list(overrides)


def _trial(where: str, t: Any) -> dict:
    if not isinstance(t, dict) or set(t) - {"lr", "lr_scale"} or "lr" not in t:
        raise LabelCurveError(f"{where}: a trial is {{lr: X[, lr_scale: {{PREFIX: SCALE}}]}} (got {t!r})")
    lr, scale = t["lr"], t.get("lr_scale") or {}
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise LabelCurveError(f"{where}: lr must be a number > 0 (got {lr!r})")
    if not isinstance(scale, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in scale.values()
    ):
        raise LabelCurveError(f"{where}: lr_scale maps parameter prefixes to numbers > 0 (got {scale!r})")
    return {"lr": float(lr), "lr_scale": {str(k): float(v) for k, v in sorted(scale.items())}}


def _updates(where: str, updates: Any, subsets: list[str]) -> dict[str, int]:
    if not isinstance(updates, dict) or set(updates) != set(subsets):
        raise LabelCurveError(
            f"{where}: one budget per size, {{{', '.join(f'{s}: N' for s in subsets)}}} (got {updates!r})"
        )
    for s, n in updates.items():
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise LabelCurveError(f"{where}.{s}: a whole number of updates > 0 (got {n!r})")
    return {s: int(updates[s]) for s in subsets}


def _seeds(where: str, seeds: Any) -> list[int]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or len(set(seeds)) != len(seeds)
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise LabelCurveError(f"{where}: a list of distinct integer seeds (got {seeds!r})")
    return list(seeds)


def _name(where: str, name: str) -> None:
    """Subsets and checkpoint names become run ids, file names and --only patterns."""
    if not name or not re.fullmatch(r"[A-Za-z0-9_.]+", name) or "-" in name:
        raise LabelCurveError(
            f"{where}: {name!r}: names use letters, digits, '_' and '.' only (they become run ids)"
        )


def validate_spec(spec: dict) -> dict:
    """The spec with defaults filled in; a :class:`LabelCurveError` names the first problem."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise LabelCurveError(
            f"spec: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(SPEC_KEYS))}"
        )
    for key in ("name", "corpus", "sizes", "seeds", "arms"):
        if key not in spec:
            raise LabelCurveError(f"spec: '{key}' is required")
    protocol = {**PROTOCOL_DEFAULTS, **(spec.get("protocol") or {})}
    if set(protocol) - set(PROTOCOL_DEFAULTS):
        raise LabelCurveError(
            f"spec.protocol: unknown key(s) {', '.join(sorted(set(protocol) - set(PROTOCOL_DEFAULTS)))}"
        )
    sizes = spec["sizes"]
    if not isinstance(sizes, list) or not sizes:
        raise LabelCurveError("spec.sizes: a list of {subset: NAME, minutes: M}")
    for i, s in enumerate(sizes):
        if (
            not isinstance(s, dict)
            or set(s) != {"subset", "minutes"}
            or isinstance(s["minutes"], bool)
            or not isinstance(s["minutes"], (int, float))
            or not s["minutes"] > 0
        ):
            raise LabelCurveError(f"spec.sizes[{i}]: {{subset: NAME, minutes: M > 0}} (got {s!r})")
    subsets = [str(s["subset"]) for s in sizes]
    if len(set(subsets)) != len(subsets):
        raise LabelCurveError(f"spec.sizes: a subset appears twice ({subsets})")
    for s in subsets:
        _name("spec.sizes", s)
    seeds = _seeds("spec.seeds", spec["seeds"])
    if len(seeds) < protocol["min_seeds"]:
        raise LabelCurveError(
            f"spec.seeds: the protocol asks for >= {protocol['min_seeds']} fine-tuning seeds per "
            f"cell (got {len(seeds)})"
        )
    arms = spec["arms"]
    if not isinstance(arms, dict) or set(arms) != set(ARMS):
        raise LabelCurveError(
            f"spec.arms: exactly {' and '.join(ARMS)} "
            f"(got {sorted(arms) if isinstance(arms, dict) else arms!r})"
        )
    out_arms = {}
    for arm in ARMS:
        a, where = arms[arm], f"spec.arms.{arm}"
        allowed = {"overrides", "updates", "trials"} | ({"checkpoints"} if arm == "pretrained" else set())
        if not isinstance(a, dict) or set(a) - allowed or not {"updates", "trials"} <= set(a):
            raise LabelCurveError(
                f"{where}: keys {', '.join(sorted(allowed))} (updates and trials required; got "
                f"{sorted(a) if isinstance(a, dict) else a!r})"
            )
        trials = a["trials"]
        if not isinstance(trials, list) or not trials:
            raise LabelCurveError(f"{where}.trials: a non-empty list of {{lr: X[, lr_scale: {{...}}]}}")
        out_arms[arm] = {
            "overrides": _check_overrides(f"{where}.overrides", a.get("overrides", [])),
            "updates": _updates(f"{where}.updates", a["updates"], subsets),
            "trials": [_trial(f"{where}.trials[{i}]", t) for i, t in enumerate(trials)],
        }
    ckpts = arms["pretrained"].get("checkpoints")
    if not isinstance(ckpts, list) or not ckpts:
        raise LabelCurveError(
            "spec.arms.pretrained.checkpoints: a list of {name: NAME, path: DIR[, sizes: [SUBSET...]]}, "
            "one per pretraining seed"
        )
    out_ckpts = []
    for i, c in enumerate(ckpts):
        if not isinstance(c, dict) or not {"name", "path"} <= set(c) or set(c) - {"name", "path", "sizes"}:
            raise LabelCurveError(
                f"spec.arms.pretrained.checkpoints[{i}]: {{name, path[, sizes]}} (got {c!r})"
            )
        at = c.get("sizes", subsets)
        if not isinstance(at, list) or set(at) - set(subsets):
            raise LabelCurveError(
                f"spec.arms.pretrained.checkpoints[{i}].sizes: subsets among {subsets} (got {at!r})"
            )
        out_ckpts.append(
            {"name": str(c["name"]), "path": str(c["path"]), "sizes": [s for s in subsets if s in at]}
        )
    for c in out_ckpts:
        _name("spec.arms.pretrained.checkpoints", c["name"])
    if len({c["name"] for c in out_ckpts}) != len(out_ckpts):
        raise LabelCurveError("spec.arms.pretrained.checkpoints: names must be distinct")
    out_arms["pretrained"]["checkpoints"] = out_ckpts

    # the fairness rules: same budgets, same number of trials, the same head-lr multipliers offered
    p, s = out_arms["pretrained"], out_arms["scratch"]
    for subset in subsets:
        if p["updates"][subset] != s["updates"][subset]:
            raise LabelCurveError(
                f"unequal budgets between arms at {subset}: pretrained {p['updates'][subset]} updates, "
                f"scratch {s['updates'][subset]}; both arms get the same budget per size"
            )
    if len(p["trials"]) != len(s["trials"]):
        raise LabelCurveError(
            f"unequal number of lr trials: pretrained {len(p['trials'])}, scratch {len(s['trials'])}; "
            f"both arms get the same number of trials"
        )
    if len(p["trials"]) < protocol["min_trials"]:
        raise LabelCurveError(
            f"spec.arms: the protocol asks for >= {protocol['min_trials']} lr trials per arm "
            f"(got {len(p['trials'])})"
        )
    scales = [
        sorted(json.dumps(t["lr_scale"], sort_keys=True) for t in out_arms[arm]["trials"]) for arm in ARMS
    ]
    if scales[0] != scales[1]:
        raise LabelCurveError(
            f"per-part lr multipliers differ between arms (pretrained {scales[0]}, scratch "
            f"{scales[1]}): a multiplier counts as a trial and is offered to both arms"
        )
    for subset in protocol["min_pretrain_seeds_at"]:
        if subset not in subsets:
            raise LabelCurveError(
                f"spec.protocol.min_pretrain_seeds_at names {subset!r}, which is not among the sizes "
                f"{subsets}"
            )
        n = sum(subset in c["sizes"] for c in out_ckpts)
        if n < protocol["min_pretrain_seeds"]:
            raise LabelCurveError(
                f"spec.arms.pretrained.checkpoints: {n} pretrained checkpoint(s) at {subset}; the "
                f"protocol asks for >= {protocol['min_pretrain_seeds']} pretraining seeds there"
            )
    topline = spec.get("topline")
    if topline is not None:
        if (
            not isinstance(topline, dict)
            or set(topline) - {"updates", "minutes", "seeds", "overrides"}
            or not {"updates", "minutes"} <= set(topline)
        ):
            raise LabelCurveError(
                "spec.topline: {updates: N, minutes: M[, seeds: [...], overrides: [...]]}; it trains "
                "the scratch arm's recipe and trials on the unlabeled pool's synthesized transcripts"
            )
        if isinstance(topline["minutes"], bool) or not isinstance(topline["minutes"], (int, float)):
            raise LabelCurveError(f"spec.topline.minutes: a number (got {topline['minutes']!r})")
        topline = {
            "updates": _updates(
                "spec.topline.updates", {TOPLINE_SUBSET: topline["updates"]}, [TOPLINE_SUBSET]
            )[TOPLINE_SUBSET],
            "minutes": float(topline["minutes"]),
            "seeds": _seeds("spec.topline.seeds", topline.get("seeds", seeds)),
            "overrides": _check_overrides("spec.topline.overrides", topline.get("overrides", s["overrides"])),
        }
    threads = spec.get("threads_per_run", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LabelCurveError(f"spec.threads_per_run: an integer >= 1 (got {threads!r})")
    return {
        "name": str(spec["name"]),
        "corpus": str(spec["corpus"]),
        "runs_dir": str(spec.get("runs_dir", f"runs/label_curve/{spec['name']}")),
        "results_dir": str(spec.get("results_dir", "docs/results/label_curve")),
        "config_name": str(spec.get("config_name", "finetune_demo")),
        "common_overrides": _check_overrides("spec.common_overrides", spec.get("common_overrides", [])),
        "threads_per_run": threads,
        "sizes": [{"subset": str(x["subset"]), "minutes": float(x["minutes"])} for x in sizes],
        "seeds": seeds,
        "arms": out_arms,
        "topline": topline,
        "protocol": protocol,
    }
