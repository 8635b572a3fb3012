"""Unit tests of the training building blocks: schedules, precision, checkpoints, logging."""

from __future__ import annotations

import io
import math
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wav2vec2_lite.data.collate import derive_seed
from wav2vec2_lite.train.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    atomic_torch_save,
    atomic_write_bytes,
    capture_rng_state,
    load_checkpoint,
    load_training_state,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from wav2vec2_lite.train.logging import (
    MetricsLogger,
    code_version,
    peak_memory_mb,
    read_metrics,
    write_run_info,
)
from wav2vec2_lite.train.optim import param_groups
from wav2vec2_lite.train.precision import Precision, parse_precision
from wav2vec2_lite.train.schedules import (
    SCHEDULES,
    Constant,
    Polynomial,
    TriStage,
    build_schedule,
    make_schedule,
)


# ----------------------------------------------------------------------------- schedules
def test_polynomial_decay_matches_fairseq_formula():
    def f(u, **kw):
        return Polynomial(warmup_updates=100, **kw).lr_at(u, lr=5e-4, total=1000)

    assert f(0) == pytest.approx(5e-6)  # first update: lr / warmup
    assert f(49) == pytest.approx(2.5e-4)
    assert f(100) == pytest.approx(5e-4)  # peak right after warmup
    assert f(550) == pytest.approx(2.5e-4)  # linear decay, halfway
    assert f(1000) == 0.0
    assert f(550, power=2.0) == pytest.approx(5e-4 * 0.25)
    assert (
        Polynomial(warmup_updates=100).warmup(1000) == 100 and Polynomial(warmup_updates=100).warmup(50) == 50
    )


def test_tri_stage_phases():
    lr, total = 5e-5, 1000
    schedule = TriStage(phase_ratio=[0.1, 0.4, 0.5], init_lr_scale=0.01, final_lr_scale=0.05)

    def f(u):
        return schedule.lr_at(u, lr=lr, total=total)

    assert f(0) == pytest.approx(lr * 0.01 + lr * 0.99 / 100)
    assert f(99) == pytest.approx(lr)
    assert all(f(u) == pytest.approx(lr) for u in (100, 300, 499))
    assert f(500 + 250) == pytest.approx(lr * math.sqrt(0.05))  # exponential: geometric midpoint
    assert f(1000) == pytest.approx(lr * 0.05)
    assert f(5000) == pytest.approx(lr * 0.05)
    lrs = [f(u) for u in range(500, 1000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert schedule.warmup(total) == 100


def test_constant_warms_up_then_holds():
    schedule = Constant(warmup_updates=4)
    assert [schedule.lr_at(u, lr=1.0, total=10) for u in (0, 3, 4, 9, 20)] == [0.25, 1.0, 1.0, 1.0, 1.0]
    assert schedule.warmup(10) == 4 and Constant().warmup(10) == 0


def test_schedules_are_a_registry_chosen_by_name_with_checked_fields():
    assert set(SCHEDULES) == {"polynomial", "tri_stage", "constant"}
    assert make_schedule({"name": "tri_stage", "final_lr_scale": 0.1}) == TriStage(final_lr_scale=0.1)
    with pytest.raises(ValueError, match="schedule.name: one of polynomial, tri_stage, constant"):
        make_schedule({"name": "cosine"})
    with pytest.raises(ValueError, match=r"schedule.warmup_updates: not a field of the 'tri_stage' schedule"):
        make_schedule({"name": "tri_stage", "warmup_updates": 10})
    with pytest.raises(ValueError, match="schedule.phase_ratio"):
        make_schedule({"name": "tri_stage", "phase_ratio": [0.5, 0.5, 0.5]})
    with pytest.raises(ValueError, match="schedule.warmup_updates: must be >= 0"):
        make_schedule({"name": "polynomial", "warmup_updates": -1})
    with pytest.raises(Exception, match="schedule.power"):  # types are checked too, the key named
        make_schedule({"name": "polynomial", "power": "steep"})


def test_schedule_sets_optimizer_lr():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1.0)
    s = build_schedule(Polynomial(warmup_updates=2), lr=1e-3, max_updates=10)
    assert s.total_updates == 10 and s.warmup_updates == 2
    assert s.step(opt, 0) == pytest.approx(5e-4) and opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert build_schedule(Polynomial(total_updates=4), lr=1e-3, max_updates=10).total_updates == 4


# ----------------------------------------------------------------------------- optimizer groups
def test_no_weight_decay_on_biases_and_norms():
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = param_groups(m, 0.01, decay_bias_and_norm=False)
    decay_ids = {id(p) for p in groups[0]["params"]}
    assert decay_ids == {id(m[0].weight)} and groups[1]["weight_decay"] == 0.0
    assert len(param_groups(m, 0.01, decay_bias_and_norm=True)) == 1


def test_lr_scale_groups_take_the_longest_prefix_and_the_schedule_applies_them():
    m = nn.ModuleDict(
        {"body": nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)}), "head": nn.Linear(4, 2)}
    )
    # nested keys (as Hydra builds them from +optim.lr_scale.body.a=...) are joined with dots
    groups = param_groups(m, 0.01, decay_bias_and_norm=False, lr_scale={"body": {"a": 0.25}, "head": 4})
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale_of[id(m["body"]["a"].weight)] == 0.25 and scale_of[id(m["body"]["a"].bias)] == 0.25
    assert scale_of[id(m["head"].weight)] == 4.0 and len(scale_of) == 6
    assert scale_of[id(m["body"]["b"].weight)] == 1.0  # no prefix matches body.b: the base lr
    groups = param_groups(m, 0.01, decay_bias_and_norm=False, lr_scale={"body": 0.5, "body.a": 0.25})
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale_of[id(m["body"]["b"].weight)] == 0.5 and scale_of[id(m["body"]["a"].weight)] == 0.25
    # biases stay out of weight decay within each scale
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim == 1 for p in g["params"]))
    opt = torch.optim.AdamW(groups, lr=1.0)
    build_schedule(Constant(), lr=1e-3, max_updates=10).step(opt, 0)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(m["body"]["a"].weight)] == pytest.approx(2.5e-4)
    assert lr_of[id(m["body"]["b"].bias)] == pytest.approx(5e-4) and lr_of[
        id(m["head"].bias)
    ] == pytest.approx(1e-3)


def test_lr_scale_rejects_a_prefix_that_names_nothing_or_only_frozen_parameters():
    m = nn.ModuleDict({"encoder": nn.Linear(4, 4), "head": nn.Linear(4, 2)})
    with pytest.raises(
        ValueError, match=r"'hed' names no parameter of this model; its parts include encoder.bias"
    ):
        param_groups(m, 0.0, False, {"hed": 2.0})
    with pytest.raises(ValueError, match="names no parameter"):
        param_groups(m, 0.0, False, {"head.weigh": 2.0})  # a prefix ends at a dot, not mid-name
    m["encoder"].requires_grad_(False)
    with pytest.raises(ValueError, match="'encoder' names only frozen parameters"):
        param_groups(m, 0.0, False, {"encoder": 0.1})


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, u, s) for u in range(50) for s in range(4)}) == 200
    assert 0 <= derive_seed(123, 4) < 2**63


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("mode", ["32", "bf16", "fp16"])
def test_precision_step_runs_on_cpu(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    prec = Precision(mode, "cpu")
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    losses = []
    for _ in range(20):
        with prec.autocast():
            out = model(x)
            assert out.dtype == prec.dtype
            loss = ((out.float() - y) ** 2).mean()
        prec.scale(loss).backward()
        prec.unscale_(opt)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        prec.step(opt)
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    if mode == "fp16":
        assert prec.loss_scale is not None and prec.loss_scale > 0
        state = prec.state_dict()
        other = Precision("fp16", "cpu")
        other.load_state_dict(state)
        assert other.loss_scale == prec.loss_scale


def test_fp16_skip_backs_off_scale_and_mode_mismatch_is_an_error():
    prec = Precision("16-mixed", "cpu", init_scale=1024.0)
    assert prec.mode == "fp16"
    prec.skip()
    assert prec.loss_scale == 512.0
    with pytest.raises(ValueError, match="precision"):
        Precision("32", "cpu").load_state_dict(prec.state_dict())
    with pytest.raises(ValueError, match="trainer.precision"):
        parse_precision("fp8")


# ----------------------------------------------------------------------------- atomic files
def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, boom)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]  # temp file removed


def _fake_weights(model, directory):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(directory) / WEIGHTS_FILE))


def test_checkpoint_roundtrip_and_integrity(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    root = save_checkpoint(
        tmp_path, "last", model, {"update": 7, "x": torch.arange(3)}, save_weights=_fake_weights
    )
    assert root == tmp_path / "last"
    other = nn.Linear(3, 2)
    state = load_checkpoint(root, other)
    assert state["update"] == 7 and torch.equal(other.weight, model.weight)
    # overwrite: the new one replaces the old one, no leftovers
    save_checkpoint(tmp_path, "last", model, {"update": 8}, save_weights=_fake_weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_training_state(root / STATE_FILE)["update"] == 8
    # weights swapped behind its back -> hash mismatch names the file
    (root / WEIGHTS_FILE).write_bytes((root / WEIGHTS_FILE).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match=str(root / WEIGHTS_FILE)):
        load_checkpoint(root, other)


def test_half_written_checkpoint_is_never_taken_as_latest(tmp_path):
    model = nn.Linear(3, 2)
    save_checkpoint(tmp_path, "last", model, {"update": 5}, save_weights=_fake_weights)

    def crash(model, directory):  # dies half-way through writing the next checkpoint
        (Path(directory) / WEIGHTS_FILE).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, "last", model, {"update": 6}, save_weights=crash)
    assert load_checkpoint(resolve_checkpoint(tmp_path, "last"))["update"] == 5
    # a leftover temp folder from a SIGKILL is ignored
    junk = tmp_path / ".last.tmp-999-abcd"
    junk.mkdir()
    (junk / STATE_FILE).write_bytes(b"garbage")
    assert resolve_checkpoint(tmp_path, "last") == tmp_path / "last"
    # killed between the two renames: only .last.old exists -> recovered
    os.rename(tmp_path / "last", tmp_path / ".last.old")
    assert resolve_checkpoint(tmp_path, "last") == tmp_path / "last"
    assert load_checkpoint(tmp_path / "last")["update"] == 5
    assert resolve_checkpoint(tmp_path / "nothing", "last") is None


def test_corrupt_state_file_error_names_it(tmp_path):
    p = tmp_path / STATE_FILE
    atomic_torch_save({"update": 1}, p)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match=f"{p}.*corrupt or truncated"):
        load_training_state(p)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    p = tmp_path / STATE_FILE
    buf = io.BytesIO()
    torch.save({"update": 1, "payload": _Evil()}, buf)
    p.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="refused to load"):
        load_training_state(p)
    p.write_bytes(pickle.dumps({"update": 1, "payload": _Evil()}))
    with pytest.raises(CheckpointError, match=str(p)):
        load_training_state(p)


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    atomic_torch_save({"update": 0, "rng": capture_rng_state(gen)}, tmp_path / STATE_FILE)
    expect = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    torch.rand(5), np.random.rand(5), random.random(), torch.rand(7, generator=gen)
    restore_rng_state(load_training_state(tmp_path / STATE_FILE)["rng"], gen)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(expect[0], again[0]) and np.array_equal(expect[1], again[1])
    assert expect[2] == again[2] and torch.equal(expect[3], again[3])


# ----------------------------------------------------------------------------- logging
def test_metrics_logger_jsonl_and_resume_truncation(tmp_path):
    log = MetricsLogger(tmp_path, progress=False)
    for u in (1, 2, 3):
        log.log("train", u, {"loss": torch.tensor(1.0 / u), "bad": float("nan")}, epoch=0)
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl", kind="train")
    assert [r["update"] for r in rows] == [1, 2, 3] and rows[0]["bad"] == "nan"
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "upd')  # a line cut by a kill
    MetricsLogger(tmp_path, progress=False, resume_update=2).close()
    assert [r["update"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert MetricsLogger(tmp_path / "other", enabled=False).enabled is False
    assert not (tmp_path / "other").exists()  # non-zero ranks write nothing


def test_run_info_keeps_earlier_processes_and_survives_a_foreign_run_json(tmp_path):
    import json

    write_run_info(tmp_path, seed=1, config_yaml="a: 1\n", device="cpu")
    write_run_info(tmp_path, seed=1, config_yaml="a: 1\n", device="cpu", extra={"resumed_from_update": 2})
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["resumed_from_update"] == 2 and len(info["earlier_processes"]) == 1
    assert "earlier_processes" not in info["earlier_processes"][0]  # a flat list, oldest first
    for foreign in ("[1, 2]", '"text"', '{"earlier_processes": 3, "seed": 9}', "{not json"):
        (tmp_path / "run.json").write_text(foreign)
        write_run_info(tmp_path, seed=2, config_yaml="a: 2\n", device="cpu")
        info = json.loads((tmp_path / "run.json").read_text())
        assert info["seed"] == 2 and (tmp_path / "config.yaml").read_text() == "a: 2\n"
        kept = info.get("earlier_processes", [])
        assert kept == ([{"seed": 9}] if foreign.startswith('{"earlier') else [])


def test_code_version_and_memory():
    import subprocess

    import wav2vec2_lite

    described = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--tags"],
        capture_output=True,
        text=True,
        cwd=Path(wav2vec2_lite.__file__).parent,
    )
    if described.returncode == 0:  # a git checkout: the commit (and dirtiness) is recorded
        assert code_version() == f"{wav2vec2_lite.__version__}+git.{described.stdout.strip()}"
    else:
        assert code_version() == wav2vec2_lite.__version__
    before = peak_memory_mb("cpu")["peak_rss_mb"]
    block = torch.ones(64 * 2**20)  # 256 MiB, written
    assert peak_memory_mb("cpu")["peak_rss_mb"] >= max(before, block.numel() * 4 / 2**20)
