"""An experiment's plan: every run a spec implies, with its full config, composed and checked.

The plan is written next to the spec (``plan.json``) and committed before the first run: it is
the record of what was decided before any result was seen. Run ids:

* ``VARIANT-pSEED`` — pretraining of a ``pretrain`` variant (its probe, if any, in the same job);
* ``VARIANT-CKPT-probe`` — probes of an existing checkpoint; ``baseline`` — the random-init and
  log-mel probes;
* ``VARIANT-SUBSET-CKPT-sSEED-tTRIAL`` — one fine-tuning run (``CKPT`` is ``none`` from scratch).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from wav2vec2_lite.cli import CONFIG_DIR
from wav2vec2_lite.experiments.spec import TOPLINE, ExperimentError, load_mapping, validate_spec
from wav2vec2_lite.serialization import atomic_write_text
from wav2vec2_lite.train.config import build_model_config, register_configs, to_run_config

__all__ = ["make_plan", "write_plan", "load_spec_and_plan", "compose_config", "check_committed", "BASELINE"]

PLAN_FORMAT = "wav2vec2_lite.experiment.plan/1"
BASELINE = "baseline"


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON, written all at once."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(obj, indent=1) + "\n")


def compose_config(config_name: str, overrides: list[str], kind: str):
    """The typed run config (``kind``: finetune or pretrain) Hydra composes from the package's
    configs and ``overrides``."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name=config_name, overrides=overrides)
    return to_run_config(cfg, kind)


def results_dir(spec: dict, spec_path: Path) -> Path:
    """Where summaries, seals, test scores and the report go: the spec's ``results_dir``, or the
    spec's own folder."""
    return Path(spec["results_dir"]) if spec["results_dir"] else Path(spec_path).parent


def plan_path(spec: dict, spec_path: Path) -> Path:
    return results_dir(spec, spec_path) / "plan.json"


def _pretrain_run(spec: dict, variant: str, seed: int) -> dict:
    pre = spec["pretrain"]
    run_id = f"{variant}-p{seed}"
    return {
        "id": run_id,
        "kind": "pretrain",
        "variant": variant,
        "checkpoint": f"p{seed}",
        "seed": seed,
        "updates": pre["updates"],
        "probe": spec["probe"] is not None,
        "config_name": pre["config"],
        "overrides": [
            *pre["overrides"],
            *spec["variants"][variant]["pretrain"],
            f"data.manifest_dir={spec['corpus']}",
            f"trainer.max_updates={pre['updates']}",
            f"schedule.total_updates={pre['updates']}",
            f"trainer.seed={seed}",
            f"trainer.num_threads={spec['threads_per_run']}",
        ],
        "run_dir": str(Path(spec["runs_dir"]) / run_id),
    }


def _checkpoint_path(spec: dict, variant: str, ckpt: dict) -> str:
    if ckpt["path"] is not None:
        return ckpt["path"]  # an existing checkpoint; else the engine's pretraining run's last one
    return str(Path(spec["runs_dir"]) / f"{variant}-{ckpt['name']}" / "checkpoints" / "last")


def _finetune_run(
    spec: dict, variant: str, like: str, size: dict, ckpt: dict | None, seed: int, index: int, trial: dict
) -> dict:
    ft, v = spec["finetune"], spec["variants"][like]
    run_id = f"{variant}-{size['subset']}-{ckpt['name'] if ckpt else 'none'}-s{seed}-t{index}"
    path = _checkpoint_path(spec, variant, ckpt) if ckpt else None
    overrides = [
        *ft["overrides"],
        *v["finetune"]["overrides"],
        f"data.manifest_dir={spec['corpus']}",
        f"data.train_subset={size['subset']}",
        f"optim.lr={trial['lr']:g}",
        *(f"+optim.lr_scale.{k}={s:g}" for k, s in trial["lr_scale"].items()),
        f"trainer.seed={seed}",
        f"trainer.max_updates={size['updates']}",
        f"trainer.num_threads={spec['threads_per_run']}",
    ]
    if path:
        overrides.append(f"finetune.pretrained={path}")
    return {
        "id": run_id,
        "kind": "finetune",
        "variant": variant,
        "checkpoint": ckpt["name"] if ckpt else None,
        "checkpoint_path": path,
        "after": f"{variant}-{ckpt['name']}" if ckpt and ckpt["path"] is None else None,
        "subset": size["subset"],
        "minutes": size["minutes"],
        "seed": seed,
        "trial": index,
        "lr": trial["lr"],
        "lr_scale": trial["lr_scale"],
        "updates": size["updates"],
        "config_name": ft["config"],
        "overrides": overrides,
        "run_dir": str(Path(spec["runs_dir"]) / run_id),
    }


def _runs(spec: dict) -> list[dict]:
    runs = []
    variants = spec["variants"]
    if spec["probe"] and any(v["source"] != "scratch" for v in variants.values()):
        runs.append({"id": BASELINE, "kind": "baseline", "variant": next(iter(variants))})
    for name, v in variants.items():
        if v["source"] == "pretrain":
            runs += [_pretrain_run(spec, name, seed) for seed in spec["pretrain"]["seeds"]]
        elif v["source"] == "checkpoint" and spec["probe"]:
            for c in v["checkpoints"]:
                probe = {"id": f"{name}-{c['name']}-probe", "kind": "probe", "variant": name}
                runs.append(probe | {"checkpoint": c["name"], "checkpoint_path": c["path"]})
    ft = spec["finetune"]
    if ft is None:
        return runs
    for size in ft["sizes"]:
        for name, v in variants.items():
            at_size = [c for c in v.get("checkpoints", []) if size["subset"] in c["sizes"]]
            for ckpt in [None] if v["source"] == "scratch" else at_size:
                for seed in ft["seeds"]:
                    for i, trial in enumerate(v["trials"]):
                        runs.append(_finetune_run(spec, name, name, size, ckpt, seed, i, trial))
    top = ft["topline"]
    if top:
        size = {"subset": top["subset"], "minutes": top["minutes"], "updates": top["updates"]}
        for seed in top["seeds"]:
            for i, trial in enumerate(variants[top["like"]]["trials"]):
                runs.append(_finetune_run(spec, TOPLINE, top["like"], size, None, seed, i, trial))
    return runs


def _check_configs(runs: list[dict]) -> None:
    """Compose every run's config now, so that a typo fails before the first run, not hours in."""
    for run in runs:
        if run["kind"] not in ("pretrain", "finetune"):
            continue
        try:
            cfg = compose_config(run["config_name"], run["overrides"], run["kind"])
            build_model_config(cfg.model) if run["kind"] == "pretrain" else None
        except Exception as e:  # Hydra's and the schema's errors: the spec's config name or overrides
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ExperimentError(f"run {run['id']}: its config does not compose: {first}") from None
        if run["kind"] == "finetune":
            if cfg.trainer.best_metric != "cer":
                raise ExperimentError(
                    f"run {run['id']}: trainer.best_metric is {cfg.trainer.best_metric!r}; trials and "
                    f"checkpoints are chosen by valid CER (add trainer.best_metric=cer to finetune.overrides)"
                )
            if not cfg.data.valid_subset or cfg.data.valid_subset == "test":
                raise ExperimentError(f"run {run['id']}: data.valid_subset must name a valid split")
        run["valid_subset"] = cfg.data.valid_subset
        if run["kind"] == "pretrain":
            run["train_subset"] = cfg.data.train_subset


def make_plan(raw_spec: dict, check_configs: bool = True) -> dict:
    """Every run of the experiment; with ``check_configs`` each run's config is composed and
    checked (and its valid/train splits recorded)."""
    spec = validate_spec(raw_spec)
    runs = _runs(spec)
    ids = [r["id"] for r in runs]
    if dup := sorted({i for i in ids if ids.count(i) > 1}):
        raise ExperimentError(f"two runs would share the id {dup[0]}; rename a variant or checkpoint")
    if check_configs:
        _check_configs(runs)
    body = {"format": PLAN_FORMAT, "spec": spec, "runs": runs}
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return body


def write_plan(plan: dict, out: Path, force: bool = False) -> Path:
    """Write the plan; an existing different plan is replaced only with ``force`` (its runs that
    were already summarized stay valid where their config did not change)."""
    out = Path(out)
    if out.exists() and not force:
        old = load_mapping(out)
        if old.get("sha256") != plan["sha256"]:
            raise ExperimentError(
                f"{out} holds another plan; a committed plan is the protocol's record (pass --force to "
                f"amend it, and say why in the spec)"
            )
        return out
    write_json(out, plan)
    return out


def load_spec_and_plan(spec_path: Path) -> tuple[dict, Path]:
    """The committed plan of the spec at ``spec_path``; a spec edited since is refused."""
    spec_path = Path(spec_path)
    spec = validate_spec(load_mapping(spec_path))
    path = plan_path(spec, spec_path)
    if not path.is_file():
        raise ExperimentError(f"{path}: no plan yet; run `w2v2-experiment plan {spec_path}` and commit it")
    plan = load_mapping(path)
    if plan.get("format") != PLAN_FORMAT:
        raise ExperimentError(f"{path}: not an experiment plan (format {plan.get('format')!r})")
    fresh = make_plan(load_mapping(spec_path), check_configs=False)
    if fresh["spec"] != plan["spec"] or [r["id"] for r in fresh["runs"]] != [r["id"] for r in plan["runs"]]:
        raise ExperimentError(
            f"{spec_path} changed since {path} was written; run `w2v2-experiment plan --force` to amend "
            f"the plan (summaries of unchanged runs stay valid)"
        )
    plan["path"] = str(path)
    plan["results_dir"] = str(results_dir(spec, spec_path))
    return plan, path


def check_committed(path: Path) -> str | None:
    """None when ``path`` is committed as it is, or is outside a git work tree; otherwise why not."""
    path = Path(path).resolve()
    try:
        git = ["git", "-C", str(path.parent), "status", "--porcelain", "--ignored", "--", path.name]
        status = subprocess.run(git, capture_output=True, text=True)
    except FileNotFoundError:  # no git here: nothing to check
        return None
    state = status.stdout[:2] if status.returncode == 0 else ""
    return f"{path} is not committed (git status: {state.strip()})" if state.strip() else None
