"""Console entry points: ``w2v2-pretrain`` and ``w2v2-finetune`` (Hydra command lines).

    w2v2-pretrain data.manifest_dir=/data/ls960 trainer.update_freq=8
    w2v2-pretrain --config-name pretrain_tiny data.manifest_dir=/tmp/toy model.num_layers=2
    w2v2-finetune finetune.pretrained=outputs/pretrain/RUN data.manifest_dir=/data/ls10h recipe=base_10h
    w2v2-pretrain -m optim.lr=1e-3,5e-4 ...      # multirun: one run dir per job

Configs are read from the repository's ``configs/`` folder (or ``$W2V2_CONFIG_DIR``).
Outputs go to Hydra's run directory (``outputs/<task>/<time>``; ``hydra.run.dir=DIR`` to
choose it, which is also how a killed run is resumed: the same dir continues from its
``checkpoints/last``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["pretrain", "finetune", "run_from_hydra", "CONFIG_DIR"]

CONFIG_DIR = Path(os.environ.get("W2V2_CONFIG_DIR", Path(__file__).resolve().parent.parent / "configs"))


def run_from_hydra(cfg) -> dict:
    """Typed config from Hydra's composed one, run dir from Hydra, then train."""
    from hydra.core.hydra_config import HydraConfig

    from wav2vec2_lite.train.config import to_run_config
    from wav2vec2_lite.train.trainer import train

    run_cfg = to_run_config(cfg)
    run_dir = run_cfg.run_dir or (HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None)
    return train(run_cfg, run_dir)


def _main(config_name: str) -> None:
    import hydra

    from wav2vec2_lite.train.config import register_configs

    if not CONFIG_DIR.is_dir():
        raise SystemExit(f"config folder {CONFIG_DIR} not found; set W2V2_CONFIG_DIR to the repository's configs/")
    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(run_from_hydra)()


def pretrain() -> None:
    """``w2v2-pretrain``: self-supervised pretraining (configs/pretrain.yaml)."""
    _main("pretrain")


def finetune() -> None:
    """``w2v2-finetune``: CTC fine-tuning (configs/finetune.yaml)."""
    _main("finetune")


# ---------------------------------------------------------------------------------------
# Inference entry point (``w2v2-transcribe``) goes below; owned by the model/interop side.
