"""Re-measure a shipped checkpoint: its valid accuracy on a freshly synthesized valid set.

``fresh_valid_set`` synthesizes the first minutes of the corpus's ``valid`` split (same seed:
the same held-out speakers and sentences, none in pretraining), and ``pretext_accuracy``
scores the model's own task on it with fixed masks and distractors. ``make_bundle`` records
both the number and the spread over mask seeds; ``tests/test_pretrained.py`` re-measures it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from wav2vec2_lite.corpus import build_corpus
from wav2vec2_lite.data.audio import load_audio, normalize
from wav2vec2_lite.data.manifest import read_manifest
from wav2vec2_lite.train.config import migrate_override
from wav2vec2_lite.train.logging import read_metrics

__all__ = ["fresh_valid_set", "pretext_accuracy", "reproduce_losses", "FRESH_VALID"]

# how the shipped checkpoints' check set is made: build_corpus arguments (other splits minimal)
FRESH_VALID = {"valid_minutes": 2.0, "tiny_minutes": 0.05}


def fresh_valid_set(
    out_dir: str | Path, seed: int, valid_minutes: float = FRESH_VALID["valid_minutes"]
) -> Path:
    """Synthesize ``valid_minutes`` of the seed's held-out ``valid`` speakers into ``out_dir``."""
    t = FRESH_VALID["tiny_minutes"]
    build_corpus(
        out_dir,
        unlabeled_minutes=t,
        train_1min_minutes=t,
        train_10min_minutes=t,
        train_1h_minutes=t,
        valid_minutes=valid_minutes,
        test_minutes=t,
        seed=seed,
        workers=1,
    )
    return Path(out_dir)


@torch.no_grad()
def pretext_accuracy(
    model: nn.Module,
    manifest_dir: str | Path,
    split: str = "valid",
    *,
    seed: int = 0,
    normalize_waves: bool = False,
    max_samples: int = 250_000,
) -> dict[str, float]:
    """Accuracy and loss per masked frame of ``model``'s pretraining task (eval mode, one
    utterance at a time, masks and distractors drawn from ``seed``) over ``DIR/SPLIT.tsv``."""
    manifest = read_manifest(Path(manifest_dir) / f"{split}.tsv")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    correct = masked = loss = 0.0
    for i in range(len(manifest)):
        wave = torch.from_numpy(load_audio(manifest.full_path(i))[:max_samples]).float()
        if normalize_waves:
            wave = normalize(wave)
        out = model(wave[None], generator=gen)
        correct += float(out.num_correct)
        masked += float(out.num_masked)
        loss += float(out.loss_sum)
    model.train(was_training)
    return {
        "accuracy": correct / max(masked, 1.0),
        "loss": loss / max(masked, 1.0),
        "masked_frames": masked,
        "utterances": len(manifest),
    }


def reproduce_losses(
    provenance: dict,
    run_dir: str | Path,
    *,
    updates: int = 200,
    corpus: str | Path | None = None,
    rtol: float = 1e-4,
) -> list[dict]:
    """Rerun the provenance command for ``updates`` updates (in ``run_dir``, on ``corpus`` if
    given) and compare its logged training losses with the recorded ones.

    Returns one row per compared update (recorded, rerun, relative difference); raises
    ``AssertionError`` naming the first update whose loss differs by more than ``rtol``.
    Bit-for-bit equality is expected on the CPU kind (and thread count) that made the run.
    """
    argv = shlex.split(provenance["command"])[1:]  # drop "python"
    keep = [
        migrate_override(a)
        for a in argv  # recorded by an earlier version: today's keys
        if not a.startswith(("trainer.max_updates=", "hydra.run.dir=", "data.manifest_dir="))
    ]
    manifest_dir = corpus or provenance["corpus"]["path"]
    argv = keep + [
        f"trainer.max_updates={updates}",
        f"hydra.run.dir={run_dir}",
        f"data.manifest_dir={manifest_dir}",
    ]
    if not any(a.startswith("schedule.total_updates=") for a in keep):  # keep the lr schedule of the full run
        cfg = provenance["config"]
        argv.append(
            f"schedule.total_updates={cfg['schedule'].get('total_updates') or cfg['trainer']['max_updates']}"
        )
    repo = Path(__file__).resolve().parents[2]
    script = Path(argv[0]) if Path(argv[0]).is_absolute() else repo / argv[0]
    done = subprocess.run([sys.executable, str(script), *argv[1:]], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the provenance command failed (exit {done.returncode}): {done.stderr[-2000:]}")
    rerun = {r["update"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl", "train")}
    rows = []
    for rec in provenance["train_loss_log"]:
        if rec["update"] > updates:
            break
        got = rerun.get(rec["update"])
        if got is None:
            raise AssertionError(f"the rerun logged no training loss at update {rec['update']}")
        rel = abs(got - rec["loss"]) / max(abs(rec["loss"]), 1e-12)
        rows.append({"update": rec["update"], "recorded": rec["loss"], "rerun": got, "rel_diff": rel})
        if rel > rtol:
            raise AssertionError(
                f"update {rec['update']}: rerun loss {got:.6f} vs recorded {rec['loss']:.6f} "
                f"(relative difference {rel:.2e} > {rtol:g})"
            )
    if not rows:
        raise AssertionError(f"no recorded training loss at or before update {updates}")
    return rows
