"""Crashes, kills and disk faults never cost a run more than the updates since its last checkpoint.

* A training process is SIGKILLed at a random (seeded) update strictly between two
  checkpoints, and another one in the middle of a checkpoint swap; the same command resumes
  each, and the final parameters and optimizer state are ``torch.equal`` to an uninterrupted
  run's (masking, dropout and layerdrop on, CPU, one thread).
* A crash at any point of a checkpoint save (every rename / replace / delete / fsync) leaves
  a folder that resolves to a complete, verified checkpoint: the old one or the new one.
* A full disk during a save fails cleanly with the previous checkpoint intact and loadable.
* An unwritable or too-full run directory is an error before training starts.
The kill test runs its processes side by side.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import wav2vec2_lite.serialization as serialization
import wav2vec2_lite.train.checkpoint as checkpoint
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.models import Wav2Vec2ForPreTraining
from wav2vec2_lite.train.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    load_training_state,
    remove_stale_temps,
    resolve_checkpoint,
    save_checkpoint,
)
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.run_dir import RunDirError
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import Trainer

MICRO = dict(
    preset="tiny",
    num_layers=2,
    hidden_size=32,
    ffn_dim=64,
    num_heads=2,
    conv_dim=[16] * 7,
    pos_conv_kernel=8,
    pos_conv_groups=8,
    mask_time_length=3,
    mask_time_prob=0.5,
    contrastive=dict(codevector_dim=16, final_dim=16, num_codes_per_group=8, num_negatives=5),
)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def cfg_dict(corpus: Path, **over) -> dict:
    base = {
        "task": "pretrain",
        # masking, dropout and layerdrop all on: every random draw must be replayed on resume
        "model": {
            **MICRO,
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.1,
            "dropout_input": 0.1,
            "layerdrop": 0.3,
            "contrastive": {**MICRO["contrastive"], "dropout_features": 0.1},
        },
        "data": {
            "manifest_dir": str(corpus),
            "max_sample_size": 6000,
            "min_sample_size": 4000,
            "max_tokens": 18000,
        },
        "optim": {"lr": 1e-3, "clip_norm": 5.0},
        "schedule": {"name": "polynomial", "warmup_updates": 2},
        "trainer": {
            "max_updates": 4,
            "log_interval": 1,
            "save_interval": 1000,
            "progress": False,
            "seed": 7,
            "num_threads": 1,
        },
    }
    return _merge(base, over)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(
        tmp_path_factory.mktemp("toy"), train=16, valid=4, seed=1, min_words=2, max_words=3
    )


# --------------------------------------------------------------------------- SIGKILL + resume
DRIVER = r"""
import json, os, sys, time
from pathlib import Path

from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.trainer import Trainer

cfg_path, run_dir = sys.argv[1], Path(sys.argv[2])
trainer = Trainer(to_run_config(json.loads(Path(cfg_path).read_text())), run_dir)

# Test hook, armed only until it has fired once (so the resume is the very same command):
# HOLD=update:K stops inside update K, after the backward of its first micro-batch;
# HOLD=save:K stops inside the save at update K, between its two renames (only .last.old on disk).
# Stopping = write run_dir/held and sleep: the test SIGKILLs the process there.
hold, marker = os.environ.get("HOLD"), run_dir / "held"
if hold and not marker.exists():
    where, k = hold.split(":")
    k = int(k)

    def stop():
        marker.write_text(str(trainer.update))
        time.sleep(600)

    if where == "update":
        real_loss, calls = trainer.task.loss, []

        def loss(model, batch, generator):
            out = real_loss(model, batch, generator)
            if trainer.update == k - 1:
                calls.append(1)
                if len(calls) == 2:
                    stop()
            return out

        trainer.task.loss = loss
    else:
        real_rename = os.rename

        def rename(src, dst):
            real_rename(src, dst)
            if Path(dst).name == ".last.old" and trainer.update == k:
                stop()

        os.rename = rename
trainer.fit()
print("finished at update", trainer.update)
"""


def _start(driver: Path, cfg_path: Path, run: Path, hold: str | None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("HOLD", None)
    if hold:
        env["HOLD"] = hold
    return subprocess.Popen(
        [sys.executable, str(driver), str(cfg_path), str(run)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before the kill point:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"kill point {marker} not reached in {timeout} s")
        time.sleep(0.02)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out


def _tensors(run: Path) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    weights = load_file(str(run / "checkpoints" / "last" / WEIGHTS_FILE))
    opt = load_training_state(run / "checkpoints" / "last" / STATE_FILE)["optimizer"]["state"]
    return weights, [t for k in sorted(opt) for _, t in sorted(opt[k].items()) if isinstance(t, torch.Tensor)]


def test_sigkill_mid_update_and_mid_save_then_resume_equals_uninterrupted_run(corpus, tmp_path):
    """12 updates, checkpoints at 4, 8, 12. Process B is killed inside a random update in 6..8
    (last checkpoint 4, the next one never written); process C is killed inside the save at
    update 8, between its renames. The same command resumes both; both end bit-identical to
    run A, which trained without interruption (in the test process, also on one thread)."""
    k = random.Random(20240611).randint(6, 8)
    print(f"SIGKILL inside update {k} (checkpoints at 4 and 8)")
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(
        json.dumps(
            cfg_dict(
                corpus,
                schedule={"total_updates": 12},
                trainer={"max_updates": 12, "save_interval": 4, "update_freq": 2},
            )
        )
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    runs = {name: tmp_path / name for name in "ABC"}
    holds = {"B": f"update:{k}", "C": "save:8"}
    procs = {name: _start(driver, cfg_path, runs[name], holds[name]) for name in "BC"}
    threads = torch.get_num_threads()
    try:  # the uninterrupted reference, in this process while the others start (same code, one thread)
        Trainer(to_run_config(json.loads(cfg_path.read_text())), runs["A"]).fit()
    finally:
        torch.set_num_threads(threads)
    for name in "BC":
        _wait_for(runs[name] / "held", procs[name])
        os.kill(procs[name].pid, signal.SIGKILL)
        procs[name].wait(timeout=60)
        assert procs[name].returncode == -signal.SIGKILL

    # what the kills left behind
    ckb = runs["B"] / "checkpoints"
    assert load_training_state(ckb / "last" / STATE_FILE)["update"] == 4
    assert [r["update"] for r in read_metrics(runs["B"] / "metrics.jsonl", kind="train")] == list(range(1, k))
    ckc = runs["C"] / "checkpoints"
    assert not (ckc / "last").exists() and (ckc / ".last.old").is_dir()  # killed between the renames
    assert load_training_state(ckc / ".last.old" / STATE_FILE)["update"] == 4
    assert any(p.name.startswith(".last.tmp-") for p in ckc.iterdir())  # the unfinished update-8 folder

    procs = {name: _start(driver, cfg_path, runs[name], holds[name]) for name in "BC"}  # the same command
    for name in "BC":
        _finish(procs[name])

    ref_w, ref_opt = _tensors(runs["A"])
    for name in "BC":
        w, opt = _tensors(runs[name])
        assert w.keys() == ref_w.keys()
        assert all(torch.equal(w[key], ref_w[key]) for key in ref_w), name
        assert len(opt) == len(ref_opt) and all(torch.equal(a, b) for a, b in zip(opt, ref_opt)), name
        assert [r["update"] for r in read_metrics(runs[name] / "metrics.jsonl", kind="train")] == list(
            range(1, 13)
        )
        assert sorted(p.name for p in (runs[name] / "checkpoints").iterdir()) == [
            "best",
            "last",
        ]  # no leftovers


# --------------------------------------------------------------------------- crash at every point of a save
def _micro_model(seed: int) -> Wav2Vec2ForPreTraining:
    torch.manual_seed(seed)
    fields = {k: v for k, v in MICRO.items() if k != "preset"}
    return Wav2Vec2ForPreTraining(Wav2Vec2Config.preset("tiny", **fields))


def test_a_crash_at_any_point_of_a_save_leaves_old_or_new_checkpoint(tmp_path, monkeypatch):
    """Snapshot the folder before and after every rename, replace, delete and fsync of a save
    (what a SIGKILL at that moment leaves), with temporary files also cut in half: each
    snapshot resolves to a complete checkpoint whose hash verifies, the old one or the new one."""
    old_model, new_model = _micro_model(0), _micro_model(1)
    root = tmp_path / "ckpt"
    save_checkpoint(root, "last", old_model, {"update": 1})
    snapshots: list[tuple[str, Path]] = []

    def snap(label: str) -> None:
        dst = tmp_path / f"snap{len(snapshots):03d}"
        shutil.copytree(root, dst)
        for p in dst.rglob("*"):  # temporary files may be half-written when the kill lands
            if p.is_file() and any(".tmp-" in part for part in p.relative_to(dst).parts):
                p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        snapshots.append((label, dst))

    def around(name: str, fn):
        def wrapped(*args, **kwargs):
            snap(f"before {name}{args[:2]}")
            out = fn(*args, **kwargs)
            snap(f"after {name}{args[:2]}")
            return out

        return wrapped

    for mod, attr in ((os, "rename"), (os, "replace"), (os, "fsync"), (shutil, "rmtree")):
        monkeypatch.setattr(mod, attr, around(attr, getattr(mod, attr)))
    save_checkpoint(root, "last", new_model, {"update": 2})
    monkeypatch.undo()

    seen = []
    check = _micro_model(2)
    for label, snapshot in snapshots:
        folder = resolve_checkpoint(snapshot, "last")
        assert folder is not None, label
        state = load_checkpoint(folder, check)  # sha256 of the weights verified
        expect = old_model if state["update"] == 1 else new_model
        assert all(
            torch.equal(a, b) for a, b in zip(check.state_dict().values(), expect.state_dict().values())
        ), label
        seen.append(state["update"])
    print(len(snapshots), "crash points:", seen)
    assert len(snapshots) >= 15 and seen[0] == 1 and seen[-1] == 2
    assert seen == sorted(seen)  # never back to the old one once the new one is in place


def test_stale_temp_folders_of_killed_saves_are_removed_on_start(corpus, tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ck / f".last.tmp-{dead.pid}-abcdef12").mkdir()
    (ck / f".last.tmp-{dead.pid}-abcdef12" / WEIGHTS_FILE).write_bytes(b"half")
    live = ck / f".best.tmp-{os.getppid()}-00000000"  # a live process's save is left alone
    live.mkdir()
    Trainer(to_run_config(cfg_dict(corpus, data={"validate": False})), tmp_path / "run")
    assert sorted(p.name for p in ck.iterdir()) == [live.name]
    assert remove_stale_temps(tmp_path / "nowhere") == []


# --------------------------------------------------------------------------- disk full / I/O errors
def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["weights", "state", "swap"])
def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, where):
    old_model, new_model = _micro_model(0), _micro_model(1)
    root = tmp_path / "ckpt"
    save_checkpoint(root, "last", old_model, {"update": 1})
    if where == "weights":  # the safetensors writer dies half-way

        def save_file(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\0" * 1000)
            _enospc()

        monkeypatch.setattr(serialization, "save_file", save_file)
    elif where == "state":

        def torch_save(obj, f, *a, **k):
            f.write(b"PK\3\4 partial")
            _enospc()

        monkeypatch.setattr(torch, "save", torch_save)
    else:  # the rename of the new folder into place fails after the old one moved aside
        real = os.rename

        def rename(src, dst):
            if ".tmp-" in str(src):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real(src, dst)

        monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(root, "last", new_model, {"update": 2})
    monkeypatch.undo()
    msg = str(e.value)
    assert str(root / "last") in msg and "previous" in msg and "intact" in msg
    if where != "swap":
        assert "ENOSPC" in msg and "No space left on device" in msg and "free some disk space" in msg
    assert sorted(p.name for p in root.iterdir()) == ["last"]  # no temp leftovers, old one back in place
    check = _micro_model(2)
    assert load_checkpoint(root / "last", check)["update"] == 1
    assert all(
        torch.equal(a, b) for a, b in zip(check.state_dict().values(), old_model.state_dict().values())
    )


def test_trainer_stops_cleanly_when_a_save_hits_a_full_disk_and_resumes(corpus, tmp_path, monkeypatch):
    cfg = to_run_config(cfg_dict(corpus, trainer={"max_updates": 4, "save_interval": 2}))
    trainer = Trainer(cfg, tmp_path / "run")
    real = serialization.save_file

    def save_file(tensors, filename, metadata=None):
        if trainer.update == 4:
            _enospc()
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(serialization, "save_file", save_file)
    with pytest.raises(
        CheckpointError, match=r"No space left on device.*Training stopped at update 4.*rerun"
    ):
        trainer.fit()
    monkeypatch.undo()
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["last"]
    assert load_checkpoint(ck / "last", trainer.model)["update"] == 2  # intact and loadable
    resumed = Trainer(cfg, tmp_path / "run")
    assert resumed.update == 2
    assert resumed.fit()["update"] == 4


def test_corrupt_last_checkpoint_is_named_on_resume(corpus, tmp_path):
    cfg = to_run_config(cfg_dict(corpus, data={"valid_subset": None}, trainer={"max_updates": 1}))
    Trainer(cfg, tmp_path / "run").fit()
    w = tmp_path / "run" / "checkpoints" / "last" / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(
        CheckpointError, match=rf"{w}: corrupted: \d+ bytes where checksums.json recorded \d+"
    ):
        Trainer(cfg, tmp_path / "run")


# --------------------------------------------------------------------------- output folder checks
def test_unwritable_run_dir_is_an_error_before_training(corpus, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = to_run_config(cfg_dict(corpus))
    with pytest.raises(RunDirError, match=rf"run directory {blocker / 'run'} is not writable"):
        Trainer(cfg, blocker / "run")  # parent is a file: cannot even be created

    import wav2vec2_lite.train.run_dir as run_dir_mod

    real_open = open

    def no_permission(path, *args, **kwargs):  # what a read-only / foreign-owned folder answers
        if Path(path).name.startswith(".write-probe"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(run_dir_mod, "open", no_permission, raising=False)
    with pytest.raises(RunDirError, match=r"is not writable \(\[Errno 13\] Permission denied"):
        Trainer(cfg, tmp_path / "ro")
    assert not (tmp_path / "ro" / "metrics.jsonl").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_run_dir_is_an_error_before_training(corpus, tmp_path):
    ro = tmp_path / "ro"
    (ro / "checkpoints").mkdir(parents=True)
    ro.chmod(0o555)
    (ro / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="is not writable"):
            Trainer(to_run_config(cfg_dict(corpus)), ro)
    finally:
        (ro / "checkpoints").chmod(0o755)
        ro.chmod(0o755)


def test_too_little_free_space_is_an_error_before_training(corpus, tmp_path, monkeypatch):
    import wav2vec2_lite.train.run_dir as run_dir_mod

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        run_dir_mod.shutil, "disk_usage", lambda p: usage(10 * 2**20, 10 * 2**20 - 4096, 4096)
    )
    with pytest.raises(RunDirError, match=r"only 0\.0 MiB free; a checkpoint of this model takes about"):
        Trainer(to_run_config(cfg_dict(corpus)), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- one implementation
def test_checkpoint_and_serialization_share_one_atomic_writer(tmp_path, monkeypatch):
    assert checkpoint.atomic_write_bytes is serialization.atomic_write_bytes
    assert checkpoint.atomic_write_text is serialization.atomic_write_text
    assert checkpoint.CheckpointError is serialization.CheckpointError
    # save_model goes through it too: a failing weights write leaves the previous file intact
    model = _micro_model(0)
    serialization.save_model(model, tmp_path / "m")
    before = (tmp_path / "m" / WEIGHTS_FILE).read_bytes()
    monkeypatch.setattr(serialization, "save_file", lambda *a, **k: _enospc())
    with pytest.raises(OSError, match="No space left"):
        serialization.save_model(_micro_model(1), tmp_path / "m")
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "checksums.json",
        "config.json",
        WEIGHTS_FILE,
    ]
