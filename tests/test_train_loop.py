"""End-to-end tests of the training loop on a synthetic phone corpus (CPU, micro models)."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch

from wav2vec2_lite.train.checkpoint import CheckpointError, load_checkpoint
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import NonFiniteError, Trainer

from _helpers import MICRO_MODEL, deep_merge

REPO = Path(__file__).resolve().parent.parent

MICRO = MICRO_MODEL


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(
        tmp_path_factory.mktemp("toy"), train=80, valid=16, seed=0, min_words=2, max_words=3
    )


def make_cfg(task: str, corpus: Path, **over):
    base = {
        "task": task,
        "data": {
            "manifest_dir": str(corpus),
            "max_sample_size": 12000 if task == "pretrain" else None,
            "min_sample_size": 4000 if task == "pretrain" else 0,
            "max_tokens": 48000,
        },
        "optim": {"lr": 2e-3, "clip_norm": 5.0},
        "schedule": {"name": "polynomial", "warmup_updates": 2}
        if task == "pretrain"
        else {"name": "tri_stage"},
        "trainer": {
            "max_updates": 4,
            "log_interval": 1,
            "save_interval": 1000,
            "progress": False,
            "valid_interval": 0,
            "seed": 3,
        },
    }
    if task == "pretrain":
        base["model"] = dict(MICRO)
    else:
        base["model"] = dict(MICRO)
        base["ctc"] = {"mask_time_prob": 0.2, "mask_time_length": 3, "mask_channel_prob": 0.0}
    return to_run_config(deep_merge(base, over))


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- pretraining learns
def test_pretraining_beats_chance_without_codebook_collapse(corpus, tmp_path):
    """Contrastive loss clearly below ln(K+1), held-out accuracy >= 4/(K+1), hard perplexity >= 0.2 G V.

    (Seeds 1-3 of this run end at held-out accuracy 0.26-0.35, i.e. 5.4-7.4x chance; 4x leaves room
    for the rounding of another optimizer kernel or CPU, which moves a 500-update run's end point.)

    Short-run settings: the feature encoder gets the full gradient (feature_grad_mult 1, no L2
    penalty) and the Gumbel temperature anneals within hundreds of updates; with BASE's 0.1 /
    10 / 0.999995 a run this short stays on the chance plateau (as fairseq's do for thousands
    of updates).
    """
    K, G, V = 20, 2, 32
    cfg = make_cfg(
        "pretrain",
        corpus,
        model={
            "hidden_size": 128,
            "ffn_dim": 256,
            "conv_dim": [64] * 7,
            "feature_grad_mult": 1.0,
            "contrastive": {
                "codevector_dim": 64,
                "final_dim": 64,
                "num_code_groups": G,
                "num_codes_per_group": V,
                "num_negatives": K,
                "feature_penalty_weight": 0.0,
                "gumbel_temperature": [2.0, 0.5, 0.995],
            },
        },
        schedule={"warmup_updates": 30},
        trainer={"max_updates": 500, "log_interval": 50},
        health={"grace_updates": 250, "window": 10},
    )
    result = Trainer(cfg, tmp_path).fit()
    valid = result["valid"]  # held-out utterances, masks from a fixed validation generator, eval mode
    train = read_metrics(tmp_path / "metrics.jsonl", kind="train")
    print(
        {k: round(v, 3) for k, v in valid.items()},
        [round(r["contrastive_loss"], 3) for r in train],
        "step_time_s",
        train[-1]["step_time_s"],
        "peak_rss_mb",
        train[-1]["peak_rss_mb"],
    )
    chance = math.log(K + 1)
    assert valid["contrastive_loss"] < chance - 0.3, (valid["contrastive_loss"], chance)
    assert valid["accuracy"] >= 4 / (K + 1)
    assert valid["code_perplexity"] >= 0.2 * G * V
    assert train[-1]["step_time_s"] > 0 and train[-1]["peak_rss_mb"] > 0
    # this run sits on the chance plateau for ~200 updates (normal early on, as in fairseq) and then
    # learns; from the end of the grace period (update 280) to 500 the monitor must stay quiet
    assert read_metrics(tmp_path / "metrics.jsonl", kind="health") == []


def test_health_monitor_flags_a_run_stuck_at_chance(corpus, tmp_path):
    """lr ~ 0: the contrastive loss cannot leave ln(K+1); the monitor says so once, with remedies."""
    cfg = make_cfg(
        "pretrain",
        corpus,
        optim={"lr": 1e-12},
        trainer={"max_updates": 40},
        health={"grace_updates": 10, "window": 5},
    )
    Trainer(cfg, tmp_path).fit()
    health = read_metrics(tmp_path / "metrics.jsonl", kind="health")
    stuck = [h for h in health if h["symptom"] == "stuck_at_chance"]
    assert len(stuck) == 1 and stuck[0]["update"] >= 12  # warmup 2 + grace 10
    assert "lower the learning rate" in stuck[0]["message"]
    assert stuck[0]["numbers"]["chance"] == pytest.approx(math.log(11))


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_resume_is_bit_exact_with_masking_dropout_layerdrop(corpus, tmp_path, precision):
    """6 updates straight == 3 updates, a new process-like Trainer resuming from `last`, 3 more
    (in bf16 too, whose Linear weights live in one flat buffer cast once per forward)."""
    over = dict(
        model={
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "layerdrop": 0.3,
            "contrastive": {"dropout_features": 0.1},
        },
        schedule={"total_updates": 6},
        trainer={"save_interval": 3, "update_freq": 2, "precision": precision},
    )
    straight = Trainer(
        make_cfg("pretrain", corpus, **deep_merge(over, {"trainer": {"max_updates": 6}})), tmp_path / "a"
    )
    straight.fit()
    assert (straight.precision.speedup is not None) == (precision == "bf16")
    first = Trainer(
        make_cfg("pretrain", corpus, **deep_merge(over, {"trainer": {"max_updates": 3}})), tmp_path / "b"
    )
    first.fit()
    resumed = Trainer(
        make_cfg("pretrain", corpus, **deep_merge(over, {"trainer": {"max_updates": 6}})), tmp_path / "b"
    )
    assert resumed.update == 3 and resumed.consumed == first.consumed
    resumed.fit()
    a, b = params(straight.model), params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the checkpoint on disk holds the same weights, and metrics.jsonl has each update once
    load_checkpoint(tmp_path / "b" / "checkpoints" / "last", first.model)
    assert all(torch.equal(v, a[k]) for k, v in params(first.model).items())
    updates = [r["update"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl", kind="train")]
    assert updates == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_with_finite_decreasing_loss(corpus, tmp_path, precision):
    cfg = make_cfg(
        "pretrain", corpus, trainer={"precision": precision, "max_updates": 8}, schedule={"warmup_updates": 1}
    )
    result = Trainer(cfg, tmp_path).fit()
    rows = read_metrics(tmp_path / "metrics.jsonl", kind="train")
    losses = [r["loss"] for r in rows]
    assert len(losses) == 8 and all(isinstance(v, float) and math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) < sum(losses[:2])
    assert result["nonfinite_total"] == 0  # fp16 overflows back off the scale but are not failures
    if precision == "fp16":
        assert all(r["loss_scale"] > 0 for r in rows)


def _loss_at_update_1(cfg, run_dir, rounding=None) -> float:
    """The first update's training loss; ``rounding`` (a ``rounded_bf16`` mode) wraps its forward."""
    trainer = Trainer(cfg, run_dir)
    if rounding is not None:
        real_loss = trainer.task.loss

        def rounded_loss(*args):
            with rounding:
                return real_loss(*args)

        trainer.task.loss = rounded_loss
    trainer.fit()
    return read_metrics(run_dir / "metrics.jsonl", kind="train")[0]["loss"]


def test_bf16_pretraining_follows_the_float32_loss_curve(corpus, tmp_path):
    """Same seed, batches, masks and distractors: a bf16-autocast run's per-update loss stays
    within 2 % of the float32 run's from update 2 on. Update 1 is the forward at the shared
    initial weights, so its difference is bf16 rounding alone: its bound is measured here, as
    4x the RMS change of that loss over draws of stochastically bf16-rounded operands
    (tests/_bf16.py). On AMX CPUs oneDNN's bf16 convs broke it (4 %) until convs ran float32."""
    from _bf16 import rounded_bf16

    curves = {}
    for precision in ("32", "bf16"):
        cfg = make_cfg(
            "pretrain",
            corpus,
            trainer={"precision": precision, "max_updates": 20},
            schedule={"warmup_updates": 5},
        )
        Trainer(cfg, tmp_path / precision).fit()
        curves[precision] = [
            r["loss"] for r in read_metrics(tmp_path / precision / "metrics.jsonl", kind="train")
        ]
    fp32, bf16 = curves["32"], curves["bf16"]
    assert len(fp32) == len(bf16) == 20
    assert sum(fp32[-5:]) < sum(fp32[:5])  # the curve it follows does go down
    rel = [abs(b - f) / abs(f) for f, b in zip(fp32, bf16)]

    one = make_cfg(
        "pretrain", corpus, trainer={"precision": "bf16", "max_updates": 1}, schedule={"warmup_updates": 5}
    )
    draws = [
        _loss_at_update_1(one, tmp_path / f"draw{i}", rounded_bf16(torch.Generator().manual_seed(i)))
        for i in range(8)
    ]
    sensitivity = math.sqrt(sum(((d - fp32[0]) / fp32[0]) ** 2 for d in draws) / len(draws))
    print(
        "bf16 vs float32, relative loss difference per update:",
        [f"{r:.1e}" for r in rel],
        f"update-1 rounding sensitivity (RMS) {sensitivity:.2e}",
    )
    assert 0 < sensitivity < 0.005  # the emulation did round, and the loss is not ill-conditioned
    assert rel[0] <= 4 * sensitivity
    assert max(rel[1:]) < 0.02


# ----------------------------------------------------------------------------- non-finite
def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(corpus, tmp_path, monkeypatch):
    cfg = make_cfg(
        "pretrain", corpus, trainer={"max_updates": 6, "save_interval": 2, "max_consecutive_nonfinite": 3}
    )
    trainer = Trainer(cfg, tmp_path)
    real_loss = trainer.task.loss
    calls = {"n": 0}

    def flaky(model, batch, generator):
        loss_sum, stats = real_loss(model, batch, generator)
        calls["n"] += 1
        if calls["n"] == 2 or calls["n"] >= 5:  # one bad batch, later every batch bad
            loss_sum = loss_sum * float("nan")
        return loss_sum, stats

    monkeypatch.setattr(trainer.task, "loss", flaky)
    with pytest.raises(NonFiniteError, match="3 updates in a row"):
        trainer.fit()
    assert trainer.update == 3 and trainer.nonfinite_total == 4
    events = read_metrics(tmp_path / "metrics.jsonl", kind="event")
    assert [e["nonfinite_in_row"] for e in events] == [1, 1, 2, 3]
    state = load_checkpoint(tmp_path / "checkpoints" / "last")  # last good checkpoint intact
    assert state["update"] == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ----------------------------------------------------------------------------- fine-tuning
def test_finetune_from_pretraining_run_freezes_then_trains(corpus, tmp_path):
    Trainer(make_cfg("pretrain", corpus, trainer={"max_updates": 2}), tmp_path / "pt").fit()
    cfg = make_cfg(
        "finetune",
        corpus,
        model=None,
        finetune={"pretrained": str(tmp_path / "pt"), "freeze_finetune_updates": 2},
        trainer={"max_updates": 4},
        optim={"lr": 1e-3},
    )
    trainer = Trainer(cfg, tmp_path / "ft")
    pre_conv = trainer.model.wav2vec2.feature_encoder.conv_layers[0].conv.weight.detach().clone()
    pre_layer = trainer.model.wav2vec2.context.layers[0].feed_forward.fc1.weight.detach().clone()
    trainer.fit()
    rows = read_metrics(tmp_path / "ft" / "metrics.jsonl", kind="train")
    assert [r["encoder_frozen"] for r in rows] == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(trainer.model.wav2vec2.feature_encoder.conv_layers[0].conv.weight, pre_conv)
    assert not torch.equal(
        trainer.model.wav2vec2.context.layers[0].feed_forward.fc1.weight, pre_layer
    )  # unfrozen
    valid = read_metrics(tmp_path / "ft" / "metrics.jsonl", kind="valid")[-1]
    assert {"wer", "cer", "blank_only", "loss"} <= set(valid)
    assert (tmp_path / "ft" / "checkpoints" / "best" / "dict.ltr.txt").is_file()


def test_per_part_lr_scales_each_part_s_first_step(corpus, tmp_path):
    """optim.lr_scale: same data and gradients, so the first AdamW step (~ lr * sign(grad)) of
    the scaled head is 4x the plain run's, the context network's 0.5x, the rest unchanged."""

    def first_step(lr_scale, name):
        cfg = make_cfg(
            "finetune", corpus, optim={"lr_scale": lr_scale, "weight_decay": 0.0}, trainer={"max_updates": 1}
        )
        t = Trainer(cfg, tmp_path / name)
        before = {k: v.detach().clone() for k, v in t.model.named_parameters() if v.requires_grad}
        t.fit()
        return {k: (v.detach() - before[k]) for k, v in t.model.named_parameters() if k in before}

    plain = first_step({}, "plain")
    scaled = first_step({"lm_head": 4.0, "wav2vec2": {"context": 0.5}}, "scaled")
    moved = {k for k, d in plain.items() if d.abs().max() > 0}
    assert {"lm_head.weight", "wav2vec2.context.layers.0.attention.qkv.weight"} <= moved
    for k in moved:
        ratio = 4.0 if k.startswith("lm_head.") else 0.5 if k.startswith("wav2vec2.context.") else 1.0
        # the steps are read back as differences of float32 parameters: a few ulps of the
        # parameter (1e-7 near 1.0), well below the smallest step compared (0.5 x 2e-3 x ~1)
        torch.testing.assert_close(
            scaled[k], ratio * plain[k], rtol=1e-3, atol=3e-7, msg=lambda m, k=k: f"{k}: {m}"
        )
    assert any(k.startswith("wav2vec2.feature_projection.") for k in moved)
    # resuming a run with other per-part lrs would load the wrong optimizer groups: refused, named
    with pytest.raises(CheckpointError, match=r"optim.lr_scale=\{'lm_head': 4.0, 'wav2vec2.context': 0.5\}"):
        Trainer(make_cfg("finetune", corpus, trainer={"max_updates": 2}), tmp_path / "scaled").fit()


def test_finetune_learns_and_leaves_blank_plateau(corpus, tmp_path):
    """CTC from scratch on the toy corpus: loss falls and outputs are no longer all blank."""
    cfg = make_cfg(
        "finetune",
        corpus,
        trainer={"max_updates": 300, "log_interval": 25, "valid_interval": 0},
        optim={"lr": 3e-3},
        finetune={"freeze_finetune_updates": 0, "freeze_feature_encoder": False},
        ctc={"mask_time_prob": 0.0, "feature_grad_mult": 1.0},
        schedule={"name": "tri_stage", "phase_ratio": [0.1, 0.6, 0.3]},
        health={"grace_updates": 50, "window": 10},
    )
    Trainer(cfg, tmp_path).fit()
    train = read_metrics(tmp_path / "metrics.jsonl", kind="train")
    valid = read_metrics(tmp_path / "metrics.jsonl", kind="valid")[-1]
    print("ctc train loss", [round(r["loss"], 2) for r in train], "valid", valid)
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert valid["blank_only"] < 0.2 and valid["cer"] < 0.5
    assert read_metrics(tmp_path / "metrics.jsonl", kind="health") == []  # healthy past the grace period


# ----------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, run_dir: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from wav2vec2_lite.train import distributed

    trainer = Trainer(to_run_config(cfg_dict), run_dir)
    trainer.fit()
    if rank == 0:
        torch.save(params(trainer.model), out)
    distributed.destroy()


def test_ddp_gloo_two_processes_match_one_process(corpus, tmp_path):
    """2 ranks x 1 micro-batch == 1 process x 2 micro-batches (same global batch, same draws)."""
    import torch.multiprocessing as mp

    over = dict(model={"dropout": 0.1, "layerdrop": 0.0}, trainer={"max_updates": 3, "valid_interval": 0})
    single = Trainer(
        make_cfg("pretrain", corpus, **deep_merge(over, {"trainer": {"update_freq": 2}})), tmp_path / "one"
    )
    single.fit()
    cfg = make_cfg("pretrain", corpus, **over)
    from omegaconf import OmegaConf

    cfg_dict = OmegaConf.to_container(OmegaConf.structured(cfg))
    out = tmp_path / "ddp.pt"
    mp.spawn(
        _ddp_worker, args=(2, _free_port(), cfg_dict, str(tmp_path / "two"), str(out)), nprocs=2, join=True
    )
    two = torch.load(out, weights_only=True)
    one = params(single.model)
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-4, worst
    assert any(
        not torch.equal(
            one[k], params(Trainer(make_cfg("pretrain", corpus, **over), tmp_path / "x").model)[k]
        )
        for k in one
    )  # training moved the weights


def test_health_grace_period_follows_the_schedule(corpus, tmp_path):
    """The grace period starts after the lr warmup of the configured schedule (tri-stage: its first phase)."""
    ft = Trainer(
        make_cfg("finetune", corpus, trainer={"max_updates": 1000}, health={"grace_updates": 50}),
        tmp_path / "f",
    )
    assert ft.health.start == 100 + 50  # 10 % of 1000 updates, then the grace period
    pt = Trainer(
        make_cfg("pretrain", corpus, trainer={"max_updates": 1000}, health={"grace_updates": 50}),
        tmp_path / "p",
    )
    assert pt.health.start == 2 + 50


def test_a_validation_limit_reads_the_same_first_batches_every_time(corpus, tmp_path):
    """trainer.max_valid_batches stops a pass early; the next pass starts again from the first
    batch (it continued where the last stopped, and ran out: 'no usable batch')."""
    cfg = make_cfg(
        "pretrain", corpus, trainer={"max_updates": 3, "valid_interval": 1, "max_valid_batches": 1}
    )
    Trainer(cfg, tmp_path / "run").fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    frames = [r["masked_frames"] for r in rows if r.get("kind") == "valid"]
    assert len(frames) >= 3 and len(set(frames)) == 1, frames  # one batch, the same one, each time
