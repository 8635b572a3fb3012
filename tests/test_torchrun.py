"""The real training CLIs under ``torchrun --standalone --nproc_per_node 2`` on CPU (gloo): the same
weights as one process with the same global batch, one shared run folder without
``hydra.run.dir``, and a resume under torchrun that continues the same run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wav2vec2_lite.serialization import read_weights
from wav2vec2_lite.train.toy_data import make_toy_corpus

from _helpers import CLI_MICRO_MODEL

REPO = Path(__file__).resolve().parents[1]
TINY = [
    *CLI_MICRO_MODEL,
    "model.dropout=0.1",
    "model.layerdrop=0.0",
    "data.max_sample_size=8000",
    "data.max_tokens=16000",
    "trainer.progress=false",
    "trainer.num_threads=1",
    "trainer.valid_interval=0",
]

pytestmark = pytest.mark.slow


def _launch(script: str, *args: str, cwd: Path, nproc: int = 0) -> subprocess.CompletedProcess:
    """``python scripts/SCRIPT ARGS`` (nproc 0) or the same under ``torchrun --standalone``."""
    prefix = (
        [sys.executable]
        if not nproc
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    )
    proc = subprocess.run(
        [*prefix, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _worst(a: Path, b: Path) -> float:
    wa, wb = read_weights(a / "checkpoints" / "last"), read_weights(b / "checkpoints" / "last")
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def test_torchrun_matches_one_process_shares_one_folder_and_resumes(tmp_path):
    corpus = make_toy_corpus(tmp_path / "toy", train=8, valid=2, seed=3)
    # the same learning-rate schedule whether a run stops at 2 or 4 updates
    common = [
        "--config-name",
        "pretrain_tiny",
        f"data.manifest_dir={corpus}",
        *TINY,
        "schedule.total_updates=4",
        "trainer.save_interval=2",
    ]
    _launch(
        "pretrain.py",
        *common,
        "trainer.max_updates=4",
        "trainer.update_freq=2",
        f"hydra.run.dir={tmp_path / 'one'}",
        cwd=tmp_path,
    )
    _launch("pretrain.py", *common, "trainer.max_updates=2", cwd=tmp_path, nproc=2)  # no hydra.run.dir
    shared = list((tmp_path / "outputs" / "pretrain").iterdir())
    assert len(shared) == 1 and shared[0].name.startswith("torchrun_"), shared  # every rank wrote here
    again = _launch(
        "pretrain.py", *common, "trainer.max_updates=4", f"hydra.run.dir={shared[0]}", cwd=tmp_path, nproc=2
    )
    assert "resuming from update 2" in again.stdout + again.stderr
    assert (
        _worst(tmp_path / "one", shared[0]) < 1e-4
    )  # 2 ranks x 1 micro-batch == 1 process x 2, resumed or not

    ft = [
        "--config-name",
        "finetune_tiny",
        f"data.manifest_dir={corpus}",
        f"finetune.pretrained={tmp_path / 'one'}",
        "trainer.max_updates=3",
        "trainer.progress=false",
        "trainer.num_threads=1",
        "trainer.valid_interval=0",
        "data.max_tokens=40000",
        "finetune.freeze_finetune_updates=0",
        "ctc.mask_time_prob=0.0",
    ]
    _launch("finetune.py", *ft, "trainer.update_freq=2", f"hydra.run.dir={tmp_path / 'ft_one'}", cwd=tmp_path)
    _launch(
        "finetune.py",
        *ft,
        "trainer.update_freq=1",
        f"hydra.run.dir={tmp_path / 'ft_two'}",
        cwd=tmp_path,
        nproc=2,
    )
    assert _worst(tmp_path / "ft_one", tmp_path / "ft_two") < 1e-4
