"""``w2v2-pretrain`` / ``w2v2-finetune``: Hydra around the trainer, with the project's one-line errors,
its own ``--help`` and one shared run folder under torchrun."""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap
from pathlib import Path

from wav2vec2_lite.cli.common import (
    _OVERRIDE_HINTS,
    CONFIG_DIR,
    _fail,
    _loading_model,
    _reported,
    console_script,
    debug_wanted,
)
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.tools.output_dir import check_training_run_dir


# --------------------------------------------------------------------------------- training
def run_from_hydra(cfg) -> dict:
    """Typed config from Hydra's composed one, run dir from Hydra, then train."""
    # start-up: hydra, omegaconf and the trainer (~0.2 s) stay out of every w2v2-* that imports this module
    from hydra.core.hydra_config import HydraConfig

    from wav2vec2_lite.train.config import to_run_config
    from wav2vec2_lite.train.trainer import train

    run_cfg = to_run_config(cfg)
    run_dir = run_cfg.run_dir or (HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None)
    pretrained = getattr(getattr(run_cfg, "finetune", None), "pretrained", None)
    if not pretrained or not Path(pretrained).is_file():
        return train(run_cfg, run_dir)
    with _loading_model(pretrained, "finetune.pretrained names the pretrained model"):
        return train(run_cfg, run_dir)


def _check_run_dir_overrides(argv: list[str]) -> None:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` must name a folder: RunDirError before Hydra tries
    to create it. A run folder (``hydra.run.dir``, ``run_dir``) is new, empty or an earlier run's
    (resumed), never a corpus or another tool's output (``wav2vec2_lite.tools.output_dir``)."""
    from wav2vec2_lite.train.run_dir import RunDir  # start-up: omegaconf (~0.1 s), not in the other w2v2-*

    for arg in argv:
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        if key in ("hydra.run.dir", "hydra.sweep.dir", "run_dir") and value and value != "null":
            RunDir(value).check_folder(key)
            if key != "hydra.sweep.dir":
                check_training_run_dir(value, key)


# Hydra's options that take a value (``--config-name NAME``): that value is not an override
_VALUE_OPTIONS = {
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--info",
    "-i",
    "--experimental-rerun",
}


def _check_override_words(argv: list[str]) -> None:
    """Every word that is not an option is ``KEY=VALUE`` (or ``GROUP=OPTION``): a bare word is most
    often the rest of a value with a space that the shell split (``data.manifest_dir=/my data``)."""
    for i, arg in enumerate(argv):
        if arg.startswith(("-", "~")) or "=" in arg or (i and argv[i - 1] in _VALUE_OPTIONS):  # ~KEY: delete
            continue
        before = argv[i - 1] if i else ""
        joined = f"'{before} {arg}'" if "=" in before else None
        raise ValueError(
            f"{arg!r}: not KEY=VALUE"
            + (
                f"; it looks like the rest of the value before it, split at a space by the shell: "
                f"quote the whole override, {joined}"
                if joined
                else "; every override is KEY=VALUE (a value with a space must be quoted)"
            )
        )


def _shared_run_dir(argv: list[str], task: str) -> list[str]:
    """Under torchrun every rank must write to one run folder: without ``hydra.run.dir``, name it
    after the rendezvous run id (the same on every rank and node) instead of each rank's clock."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "-m" in argv or "--multirun" in argv:
        return argv
    if any(a.partition("=")[0].lstrip("+") == "hydra.run.dir" for a in argv):
        return argv
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if not run_id or run_id == "none":
        raise ValueError(
            f"{world} processes without hydra.run.dir and without a torchrun run id: give "
            f"hydra.run.dir=DIR (on storage every node sees) so that all ranks share one run folder"
        )
    kind = "pretrain" if task.startswith("pretrain") else "finetune"
    return [*argv, f"hydra.run.dir=outputs/{kind}/torchrun_{run_id}"]


def _hydra_task(prog: str, debug: bool):
    """``run_from_hydra`` with user errors reported as one message (inside the job, before Hydra's
    own report)."""

    def task(cfg) -> dict:
        with _reported(prog, debug, _OVERRIDE_HINTS):
            return run_from_hydra(cfg)

    return task


_MAIN_KEYS = {
    "pretrain": [
        "data.manifest_dir",
        "data.max_tokens",
        "data.max_sample_size",
        "model.preset",
        "model.objective",
        "optim.lr",
        "schedule.warmup_updates",
        "trainer.max_updates",
        "trainer.update_freq",
        "trainer.precision",
        "trainer.seed",
        "trainer.num_threads",
    ],
    "finetune": [
        "data.manifest_dir",
        "data.max_tokens",
        "finetune.pretrained",
        "finetune.freeze_finetune_updates",
        "ctc.mask_time_prob",
        "optim.lr",
        "trainer.max_updates",
        "trainer.update_freq",
        "trainer.precision",
        "trainer.seed",
        "trainer.num_threads",
    ],
}


def _first_comment(path: Path, width: int = 90) -> str:
    """The first sentence of a config file's opening comment (what it is for), at most ``width``
    characters."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    return _clip(" ".join(words).split(". ")[0].split(": ")[0].rstrip("."), width)


def _clip(text: str, width: int) -> str:
    """``text``, cut at a word boundary with an ellipsis when longer than ``width``."""
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


def _key_doc(kind: str, key: str) -> str:
    """The first sentence of a run-config key's docstring (``group.name``), from the dataclass source."""
    # start-up: omegaconf (~0.1 s) loads for the training --help only, not for the other w2v2-*
    from wav2vec2_lite.train.config import _SCHEMAS, _groups
    from wav2vec2_lite.train.schedules import SCHEDULES

    group, _, name = key.partition(".")
    if name == "preset":
        return "model size: tiny | base | large (a config group: model=tiny)"
    # model: the schema node is built with make_dataclass (no source); its keys are Wav2Vec2Config's
    classes = {"ctc": [Wav2Vec2Config], "model": [Wav2Vec2Config], "schedule": list(SCHEDULES.values())}.get(
        group
    ) or [_groups(_SCHEMAS[kind])[group]]
    for cls in classes:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and getattr(node.target, "id", None) == name
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
            ):
                return " ".join(str(after.value.value).split()).split(". ")[0].rstrip(".")
    raise KeyError(f"{key}: no such documented key of a {kind} run")


def _training_help(kind: str, prog: str) -> str:
    """``--help`` of the training commands: the named configs, config groups and main keys."""
    names = sorted(p.stem for p in CONFIG_DIR.glob(f"{kind}*.yaml"))
    groups = {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(CONFIG_DIR.iterdir())
        if d.is_dir() and any(d.glob("*.yaml"))
    }
    lines = [
        f"usage: {prog} [--config-name NAME] [GROUP=OPTION ...] [KEY=VALUE ...] [-m] [--debug]",
        "",
        f"{'Self-supervised pretraining' if kind == 'pretrain' else 'CTC fine-tuning'}"
        f" with Hydra configs from {CONFIG_DIR}.",
        "",
        "named configs (--config-name NAME; default: " + kind + "):",
    ]
    width = max(len(n) for n in names)
    lines += [f"  {n:<{width}}  {_first_comment(CONFIG_DIR / (n + '.yaml'))}" for n in names]
    lines += ["", "config groups (GROUP=OPTION):"] + [
        f"  {g}: {' | '.join(opts)}" for g, opts in groups.items()
    ]
    lines += ["", "main keys (KEY=VALUE):"]
    width = max(len(k) for k in _MAIN_KEYS[kind])
    lines += [f"  {k:<{width}}  {_clip(_key_doc(kind, k), 90)}" for k in _MAIN_KEYS[kind]]
    lines += [
        "",
        "other options:",
        "  hydra.run.dir=DIR   the run folder; running again with the same DIR resumes "
        "from its last checkpoint",
        "  -m                  multirun: comma-separated values sweep, one run folder per job",
        "  --cfg job           print the composed config and exit",
        "  --debug             show the traceback of an error",
        "",
        "Every key with its default and meaning: docs/config.md.",
    ]
    return "\n".join(lines)


def _main(config_name: str, prog: str) -> None:
    """Run Hydra with ``--debug`` taken out; Hydra's own usage errors (bad key, bad override)
    become one message."""
    # start-up: hydra and omegaconf (~0.2 s) stay out of every w2v2-* that imports this module
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from wav2vec2_lite.train.config import register_configs

    argv, debug = debug_wanted(sys.argv[1:])
    if not CONFIG_DIR.is_dir():
        _fail(prog, f"config folder {CONFIG_DIR} not found; set W2V2_CONFIG_DIR to a folder of configs")
    if "-h" in argv or "--help" in argv:
        print(_training_help(config_name, prog))
        return
    with _reported(prog, debug, _OVERRIDE_HINTS):
        _check_override_words(argv)
        _check_run_dir_overrides(argv)
        argv = _shared_run_dir(argv, config_name)
    register_configs()
    sys.argv[1:] = argv
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its own report; we report
    try:
        hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(
            _hydra_task(prog, debug)
        )()
    except (HydraException, OmegaConfBaseException) as e:
        if debug:
            raise
        _fail(prog, _hydra_message(e, kind=config_name))
    except OSError as e:  # Hydra's own writes (the run folder, .hydra/*.yaml), before or after the task
        e.add_note("Set hydra.run.dir to a folder you can write to (and with free space).")
        raise
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def _hydra_message(e: BaseException, kind: str) -> str:
    """A Hydra/OmegaConf error in one line. A key the schema lacks gets the project's unknown-key line
    (closest valid key); otherwise Hydra's first line, its cause's, then the rest, without OmegaConf's
    indented details."""
    # start-up: omegaconf and train.config stay out of every w2v2-* that imports this module
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from wav2vec2_lite.train.config import unknown_key_error

    head = str(e).split("'")
    if (
        isinstance(e.__cause__, (ConfigKeyError, ConfigAttributeError))
        and head[0] == "Could not override "
        and len(head) > 2
    ):
        return str(unknown_key_error(head[1].lstrip("+~"), kind))
    own = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(" ")]
    cause = str(e.__cause__).splitlines()[:1] if isinstance(e.__cause__, Exception) else []
    lines = dict.fromkeys(own[:1] + [ln.strip() for ln in cause] + own[1:])
    return " ".join(ln if ln[-1] in ".:;!?" else f"{ln}." for ln in lines)


@console_script("w2v2-pretrain")
def pretrain() -> None:
    """``w2v2-pretrain``: self-supervised pretraining (configs/pretrain.yaml)."""
    _main("pretrain", "w2v2-pretrain")


@console_script("w2v2-finetune")
def finetune() -> None:
    """``w2v2-finetune``: CTC fine-tuning (configs/finetune.yaml)."""
    _main("finetune", "w2v2-finetune")
