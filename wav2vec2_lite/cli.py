"""Console entry points: ``w2v2-pretrain``, ``w2v2-finetune`` (Hydra) and ``w2v2-transcribe``.

    w2v2-pretrain data.manifest_dir=/data/ls960 trainer.update_freq=8
    w2v2-pretrain --config-name pretrain_tiny data.manifest_dir=/tmp/toy model.num_layers=2
    w2v2-finetune finetune.pretrained=outputs/pretrain/RUN data.manifest_dir=/data/ls10h recipe=base_10h
    w2v2-pretrain -m optim.lr=1e-3,5e-4 ...      # multirun: one run dir per job

Configs are read from the package's ``wav2vec2_lite/configs/`` (or ``$W2V2_CONFIG_DIR``).
Outputs go to Hydra's run directory (``outputs/<task>/<time>``; ``hydra.run.dir=DIR`` to
choose it, which is also how a killed run is resumed: the same dir continues from its
``checkpoints/last``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["pretrain", "finetune", "transcribe", "export_hf", "probe", "run_from_hydra", "CONFIG_DIR"]

CONFIG_DIR = Path(os.environ.get("W2V2_CONFIG_DIR") or str(resources.files("wav2vec2_lite") / "configs"))


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
        raise SystemExit(f"config folder {CONFIG_DIR} not found; set W2V2_CONFIG_DIR to a folder of configs")
    register_configs()
    hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)(run_from_hydra)()


def pretrain() -> None:
    """``w2v2-pretrain``: self-supervised pretraining (configs/pretrain.yaml)."""
    _main("pretrain")


def finetune() -> None:
    """``w2v2-finetune``: CTC fine-tuning (configs/finetune.yaml)."""
    _main("finetune")


# ---------------------------------------------------------------------------------------
def transcribe(argv: list[str] | None = None) -> None:
    """``w2v2-transcribe MODEL AUDIO...``: text (or JSON with word timings) for files or a manifest.

    MODEL is a run folder, a saved model folder, a model.safetensors path or a Hugging Face
    folder. Long files are transcribed in overlapping windows (bounded memory).
    """
    import argparse
    import json
    import sys

    from wav2vec2_lite.asr.transcribe import Transcriber

    p = argparse.ArgumentParser(prog="w2v2-transcribe", description=transcribe.__doc__)
    p.add_argument("model", help="run dir, model folder, model.safetensors or Hugging Face folder")
    p.add_argument("audio", nargs="*", help="audio files (wav/flac/ogg)")
    p.add_argument("--manifest", help="a fairseq TSV manifest to transcribe instead of files")
    p.add_argument("--limit", type=int, help="at most this many manifest rows")
    p.add_argument("--json", action="store_true", help="JSON lines with per-word timings")
    p.add_argument("--chunk-s", type=float, default=30.0, help="window length for long files (seconds)")
    p.add_argument("--overlap-s", type=float, default=4.0, help="overlap between windows (seconds)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if not args.audio and not args.manifest:
        p.error("give audio files or --manifest")
    tr = Transcriber.from_path(args.model, chunk_s=args.chunk_s, overlap_s=args.overlap_s, device=args.device)
    results = [tr.transcribe_file(a) for a in args.audio]
    if args.manifest:
        results += tr.transcribe_manifest(args.manifest, args.limit)
    for r in results:
        sys.stdout.write((json.dumps(r.to_dict()) if args.json else f"{r.path}\t{r.text}") + "\n")


def export_hf(argv: list[str] | None = None) -> None:
    """``w2v2-export-hf RUN OUT``: a fine-tuned run -> a Hugging Face folder that
    ``transformers.pipeline("automatic-speech-recognition", model=OUT)`` loads offline."""
    import argparse

    from wav2vec2_lite.interop.hf_export import export_ctc_to_hf
    from wav2vec2_lite.asr.transcribe import Transcriber

    p = argparse.ArgumentParser(prog="w2v2-export-hf", description=export_hf.__doc__)
    p.add_argument("model", help="fine-tuned run dir or model folder (with its dict.ltr.txt)")
    p.add_argument("out", help="output folder")
    args = p.parse_args(argv)
    tr = Transcriber.from_path(args.model)
    print(f"wrote {export_ctc_to_hf(tr.model, tr.tokenizer, args.out)}")


def probe(argv: list[str] | None = None) -> None:
    """``w2v2-probe MODEL --data DIR``: per-layer linear CTC probes (valid CER) of a model, its
    architecture at random init and the log-mel front end (``wav2vec2_lite.probes``, docs/probes.md)."""
    from wav2vec2_lite.probes.cli import main

    main(argv)
