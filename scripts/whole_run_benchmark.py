#!/usr/bin/env python
"""Whole training runs against what a user would run instead: transformers (issue 39, CPU).

Fine-tuning: ``w2v2-finetune``'s trainer with its defaults (``max_tokens`` batches of similar
lengths) against transformers' ``Trainer`` over ``Wav2Vec2ForCTC`` (``group_by_length``, the
usual CTC padding collator, the fixed batch size that holds the same mean audio per update).
Pretraining: ``w2v2-pretrain``'s trainer against a minimal loop over ``Wav2Vec2ForPreTraining``
with transformers' own ``_compute_mask_indices`` / ``_sample_negative_indices`` (what its
no-trainer pretraining example does). Both arms start from the same weights (ours through
``interop.to_hf``), with the same schedule (linear warm-up, linear decay), optimizer settings,
updates, precision (float32), threads and data-loader workers.

Each arm runs in a fresh process; the arms alternate ours, HF, HF, ours, ... (one pair per
seed, the order reversed every other seed) so that drift in the machine's load cancels.
Measured per arm: audio seconds per wall second of the run, the padding fraction (padded
samples / batch samples), wall time inside the model's forward, inside ``Tensor.backward`` and
inside the data loader's ``next()``, the rest (optimizer, schedule, logging, Python), and for
fine-tuning the valid CER at the end (each model greedy-decoded one utterance at a time, the
same code for both).

    python scripts/whole_run_benchmark.py --data data/demo --out docs/benchmarks/DATE_whole_run.json
    python scripts/whole_run_benchmark.py --data data/demo --tasks finetune --finetune-updates 100 --seeds 1

The ratio printed is ours' audio seconds per wall second over transformers' (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
IMPLS = ("ours", "hf")
TASKS = ("finetune", "pretrain")


# ----------------------------------------------------------------------------- counting
def padding_fraction(batches: list[tuple[int, int, int]]) -> float:
    """Padded samples over all batch samples, for ``(batch_size, padded_length, real_samples)``."""
    total = sum(b * s for b, s, _ in batches)
    return 1.0 - sum(r for _, _, r in batches) / total if total else 0.0


def ours_batches(
    sizes: np.ndarray, max_tokens: int, crop_to_shortest: bool, seed: int = 0
) -> list[tuple[int, int, int]]:
    """Our sampler's batches of one epoch as ``(batch_size, padded_length, real_samples)``: padded to
    the longest (fine-tuning) or cropped to the shortest (pretraining, no padding)."""
    from wav2vec2_lite.data.sampler import BucketBatchSampler

    out = []
    for idx in BucketBatchSampler(sizes, max_tokens=max_tokens, seed=seed).all_batches(0):
        s = sizes[idx]
        length = int(s.min() if crop_to_shortest else s.max())
        out.append((len(idx), length, len(idx) * length if crop_to_shortest else int(s.sum())))
    return out


def matched_batch_size(
    sizes: np.ndarray, max_tokens: int, crop_to_shortest: bool, seed: int = 0
) -> tuple[int, float, float]:
    """transformers' fixed batch size whose mean audio per update is nearest ours', and both means
    (samples): ours over one epoch of our sampler, transformers' as batch size x mean utterance."""
    ours = ours_batches(sizes, max_tokens, crop_to_shortest, seed)
    ours_mean = sum(r for *_, r in ours) / len(ours)
    per_item = float(np.mean(sizes))
    b = max(1, round(ours_mean / per_item))
    return b, ours_mean, b * per_item


def hf_linear_lrs(lr: float, warmup: int, total: int) -> list[float]:
    """The learning rate of each update under transformers' ``linear`` schedule."""
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=lr)
    sched = get_linear_schedule_with_warmup(opt, warmup, total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


# ----------------------------------------------------------------------------- where the time goes
class Clock:
    """Wall seconds inside ``model``'s forward, ``Tensor.backward`` and ``DataLoader`` ``next()``
    while :meth:`attached`; ``on_batch`` sees every batch the loader returns."""

    def __init__(self) -> None:
        self.forward = self.backward = self.data = 0.0
        self.forwards = self.backwards = self.nexts = 0

    @contextlib.contextmanager
    def attached(self, model: torch.nn.Module, on_batch: Callable[[Any], None] | None = None) -> Iterator:
        from torch.utils.data import dataloader

        starts: list[float] = []
        pre = model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))

        def post(*_: Any) -> None:
            self.forward += time.perf_counter() - starts.pop()
            self.forwards += 1

        hook = model.register_forward_hook(post)
        backward, next_ = torch.Tensor.backward, dataloader._BaseDataLoaderIter.__next__

        def timed_backward(tensor, *a, **kw):
            t = time.perf_counter()
            try:
                return backward(tensor, *a, **kw)
            finally:
                self.backward += time.perf_counter() - t
                self.backwards += 1

        def timed_next(it):
            t = time.perf_counter()
            batch = next_(it)  # StopIteration passes through
            self.data += time.perf_counter() - t
            self.nexts += 1
            if on_batch is not None:
                on_batch(batch)
            return batch

        torch.Tensor.backward, dataloader._BaseDataLoaderIter.__next__ = timed_backward, timed_next
        try:
            yield self
        finally:
            torch.Tensor.backward, dataloader._BaseDataLoaderIter.__next__ = backward, next_
            pre.remove()
            hook.remove()


def _seed_all(seed: int) -> None:
    """The trainer's seeding (``trainer._seed_everything``), so both arms build the same weights."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _checksum(model: torch.nn.Module) -> float:
    """Sum of every weight (a cheap fingerprint: both arms' starting weights must agree)."""
    return float(sum(p.detach().double().sum() for p in model.parameters()))


# ----------------------------------------------------------------------------- configs
def run_config(spec: dict[str, Any]):
    """Our typed run config for ``spec`` (the demo configs with the plain schedule)."""
    from wav2vec2_lite.experiments.plan import compose_config

    n = spec["updates"]
    common = [
        f"data.manifest_dir={spec['data']}",
        f"data.train_subset={spec['train_subset']}",
        "data.valid_subset=null",  # both arms are scored after the run, by the same code
        "schedule=polynomial",  # linear warm-up, linear decay to 0 (fine-tuning's recipe: tri-stage)
        f"schedule.warmup_updates={warmup_updates(spec)}",
        f"trainer.max_updates={n}",
        f"trainer.seed={spec['seed']}",
        f"trainer.num_threads={spec['threads']}",
        "trainer.progress=false",
        "trainer.precision=32",
        *spec.get("overrides", []),
    ]
    if spec["task"] == "finetune":
        overrides = [
            f"finetune.pretrained={spec['pretrained']}",
            "finetune.freeze_finetune_updates=0",
            *common,
            # the tiny recipe sets tri-stage's fields on top of the schedule group: take them out
            "schedule.name=polynomial",
            "~schedule.phase_ratio",
            "~schedule.final_lr_scale",
        ]
        return compose_config(spec.get("config", "finetune_demo"), overrides, "finetune")
    return compose_config(spec.get("config", "pretrain_demo"), common, "pretrain")


def warmup_updates(spec: dict[str, Any]) -> int:
    return max(1, round(spec["warmup_fraction"] * spec["updates"]))


def initial_model(cfg) -> torch.nn.Module:
    """The model our trainer starts from (same seeding, same task code)."""
    from wav2vec2_lite.train.tasks import build_task

    _seed_all(cfg.trainer.seed)
    return build_task(cfg).build_model()


# ----------------------------------------------------------------------------- valid CER
@torch.no_grad()
def valid_cer(logits_of: Callable[[torch.Tensor], torch.Tensor], data: Path, subset: str, vocab) -> float:
    """Greedy CER over ``subset``, one utterance at a time (no padding: both libraries see the same)."""
    from wav2vec2_lite.asr.ctc_decode import greedy_decode
    from wav2vec2_lite.asr.metrics import cer
    from wav2vec2_lite.data.manifest import ltr_to_text, read_labels, read_manifest

    m = read_manifest(data / f"{subset}.tsv")
    refs = [ltr_to_text(line) for line in read_labels(data / f"{subset}.ltr")]
    hyps = []
    for path in m.paths:
        wave, _ = sf.read(m.root / path, dtype="float32")
        logits = logits_of(torch.from_numpy(wave)[None])  # (1, T, V)
        hyps += greedy_decode(logits.float(), torch.tensor([logits.shape[1]]), vocab)
    return cer(refs, hyps)


# ----------------------------------------------------------------------------- our arm
def run_ours(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from wav2vec2_lite.train.trainer import Trainer

    cfg = run_config(spec)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, work / "run")
    setup = time.perf_counter() - t0
    start = _checksum(trainer.model)
    batches: list[tuple[int, int, int]] = []
    cropped = [0]  # samples the crop to the shortest left out

    def on_batch(batch: dict) -> None:
        if "waveform" in batch:
            b, s = batch["waveform"].shape
            batches.append((b, s, int(batch["lengths"].sum())))
            if trainer.data.collate.crop_to_shortest:
                cropped[0] += int(trainer.train_set.sizes[batch["ids"].numpy()].sum()) - b * s

    save = trainer.save
    saving = [0.0]

    def timed_save(*a, **kw):
        t = time.perf_counter()
        try:
            return save(*a, **kw)
        finally:
            saving[0] += time.perf_counter() - t

    trainer.save = timed_save
    clock = Clock()
    with clock.attached(trainer.model, on_batch):
        t0 = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - t0
    out = _summary(spec, setup, wall, clock, batches, trainer.update, start)
    out.update(checkpoint_save_s=saving[0], cropped_fraction=cropped[0] / max(1, cropped[0] + _real(batches)))
    out["last_train_record"] = _last_train_record(work / "run")
    if spec["task"] == "finetune":
        model = trainer.model.eval()
        out["valid_cer"] = valid_cer(
            lambda w: model(w).logits, Path(spec["data"]), spec["valid_subset"], trainer.task.tokenizer.vocab
        )
    return out


def _real(batches: list[tuple[int, int, int]]) -> int:
    return sum(r for *_, r in batches)


def _last_train_record(run: Path) -> dict[str, Any] | None:
    path = run / "metrics.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    train = [r for r in records if r.get("kind") == "train"]
    return train[-1] if train else None


def _summary(spec, setup, wall, clock, batches, updates, checksum) -> dict[str, Any]:
    real = _real(batches[:updates])
    return {
        "impl": spec["impl"],
        "task": spec["task"],
        "seed": spec["seed"],
        "updates": updates,
        "setup_s": setup,
        "wall_s": wall,
        "audio_s": real / SR,
        "audio_s_per_wall_s": real / SR / wall,
        "audio_s_per_wall_s_with_setup": real / SR / (wall + setup),
        "mean_audio_s_per_update": real / SR / max(updates, 1),
        "mean_batch_size": statistics.mean(b for b, *_ in batches[:updates]) if batches else 0.0,
        "padding_fraction": padding_fraction(batches[:updates]),
        "forward_s": clock.forward,
        "backward_s": clock.backward,
        "data_s": clock.data,
        "outside_forward_backward_s": wall - clock.forward - clock.backward,
        "other_s": wall - clock.forward - clock.backward - clock.data,
        "counts": {"forward": clock.forwards, "backward": clock.backwards, "next": clock.nexts},
        "initial_weights_checksum": checksum,
    }


# ----------------------------------------------------------------------------- transformers' arms
class Utterances(torch.utils.data.Dataset):
    """The rows our trainer uses, decoded once up front (what ``datasets.map`` gives transformers'
    examples), truncated to ``max_samples`` from the start as their feature extractor does."""

    def __init__(self, data: Path, subset: str, *, tokenizer=None, max_samples=None, min_samples=0) -> None:
        from wav2vec2_lite.data.manifest import read_labels, read_manifest

        m = read_manifest(data / f"{subset}.tsv")
        labels = read_labels(data / f"{subset}.ltr") if tokenizer is not None else [None] * len(m.paths)
        self.items = []
        for path, size, ltr in zip(m.paths, m.sizes, labels):
            if size < min_samples:
                continue
            wave, _ = sf.read(m.root / path, dtype="float32")
            item = {"input_values": wave[:max_samples] if max_samples else wave}
            if tokenizer is not None:
                item["labels"] = tokenizer.encode_ltr(ltr)
            self.items.append(item)
        self.lengths = [len(it["input_values"]) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class CtcCollator:
    """The usual CTC padding collator: the feature extractor pads the waves (an attention mask only
    for layer-norm models, as the exported processor says), labels are padded with -100. Keeps
    ``(batch, padded length, real samples)`` of each batch it makes."""

    def __init__(self, extractor) -> None:
        self.extractor, self.made = extractor, []

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.extractor.pad(
            [{"input_values": it["input_values"]} for it in items], padding="longest", return_tensors="pt"
        )
        lengths = [len(it["input_values"]) for it in items]
        self.made.append((len(items), int(batch["input_values"].shape[1]), sum(lengths)))
        if "labels" in items[0]:
            n = max(len(it["labels"]) for it in items)
            batch["labels"] = torch.tensor([it["labels"] + [-100] * (n - len(it["labels"])) for it in items])
        return dict(batch)


def _extractor(model_cfg):
    from transformers import Wav2Vec2FeatureExtractor

    layer = model_cfg.feat_extract_norm == "layer"  # as interop.hf_export writes the processor
    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=layer, return_attention_mask=layer
    )


def run_hf_finetune(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from wav2vec2_lite.interop import to_hf
    from wav2vec2_lite.train.tasks import build_task

    cfg = run_config(spec)
    ours = initial_model(cfg)
    start = _checksum(ours)
    hf = to_hf(ours)
    hf.freeze_feature_encoder()
    tokenizer = build_task(cfg).tokenizer
    b, clip = spec["hf_batch_size"], cfg.optim.clip_norm
    t0 = time.perf_counter()
    train = Utterances(Path(spec["data"]), spec["train_subset"], tokenizer=tokenizer)
    collator = CtcCollator(_extractor(ours.config))

    class GroupedTrainer(Trainer):
        # group_by_length with the lengths a `datasets` length column would give it (otherwise
        # LengthGroupedSampler reads every item once to measure it)
        def _get_train_sampler(self, train_dataset=None):
            return LengthGroupedSampler(b, lengths=train.lengths)

    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=b,
        max_steps=spec["updates"],
        learning_rate=cfg.optim.lr,
        lr_scheduler_type="linear",
        warmup_steps=warmup_updates(spec),
        adam_beta1=cfg.optim.betas[0],
        adam_beta2=cfg.optim.betas[1],
        adam_epsilon=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        # the loss is a sum over the batch (ours: / sentences): clipping at the same per-sentence norm
        max_grad_norm=clip * b if clip > 0 else 0.0,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=cfg.data.num_workers,
        dataloader_pin_memory=False,
        use_cpu=True,
        seed=spec["seed"],
        logging_steps=cfg.trainer.log_interval,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    trainer = GroupedTrainer(model=hf, args=args, train_dataset=train, data_collator=collator)
    setup = time.perf_counter() - t0
    clock = Clock()
    with clock.attached(hf):
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    out = _summary(spec, setup, wall, clock, collator.made, trainer.state.global_step, start)
    out["hf_batch_size"] = b
    out["last_log"] = next((r for r in reversed(trainer.state.log_history) if "loss" in r), None)
    model = hf.eval()
    out["valid_cer"] = valid_cer(
        lambda w: model(w).logits, Path(spec["data"]), spec["valid_subset"], tokenizer.vocab
    )
    return out


def run_hf_pretrain(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """A minimal loop in the manner of transformers' no-trainer pretraining example: masks and
    distractors drawn in the collator with its own functions, loss over masked frames, Gumbel
    temperature per update, the same optimizer settings and schedule as ours."""
    from transformers import get_linear_schedule_with_warmup
    from transformers.models.wav2vec2.modeling_wav2vec2 import (
        _compute_mask_indices,
        _sample_negative_indices,
    )

    from wav2vec2_lite.interop import to_hf

    cfg = run_config(spec)
    ours = initial_model(cfg)
    start = _checksum(ours)
    hf = to_hf(ours).train()
    mc, d = ours.config, cfg.data
    b, n = spec["hf_batch_size"], spec["updates"]
    t0 = time.perf_counter()
    train = Utterances(
        Path(spec["data"]), spec["train_subset"], max_samples=d.max_sample_size, min_samples=d.min_sample_size
    )
    pad = CtcCollator(_extractor(mc))

    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad(items)
        frames = int(hf._get_feat_extract_output_lengths(batch["input_values"].shape[1]))
        sub_mask = None
        if "attention_mask" in batch:
            sub_mask = hf._get_feature_vector_attention_mask(frames, batch["attention_mask"])
        mask = _compute_mask_indices(
            (len(items), frames), mc.mask_time_prob, mc.mask_time_length, sub_mask, mc.mask_time_min_masks
        )
        neg = _sample_negative_indices((len(items), frames), mc.contrastive.num_negatives, mask)
        batch["mask_time_indices"] = torch.tensor(mask, dtype=torch.bool)
        batch["sampled_negative_indices"] = torch.tensor(neg, dtype=torch.long)
        return batch

    g = torch.Generator().manual_seed(spec["seed"])
    loader = torch.utils.data.DataLoader(
        train, batch_size=b, shuffle=True, collate_fn=collate, num_workers=d.num_workers, generator=g
    )
    o = cfg.optim
    opt = torch.optim.AdamW(
        hf.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )
    sched = get_linear_schedule_with_warmup(opt, warmup_updates(spec), n)
    t_max, t_min, decay = mc.contrastive.gumbel_temperature
    setup = time.perf_counter() - t0
    clock, step, losses = Clock(), 0, []
    with clock.attached(hf):
        t0 = time.perf_counter()
        while step < n:
            for batch in loader:
                num_masked = batch["mask_time_indices"].sum()
                out = hf(**batch)
                out.loss.backward()
                for p in hf.parameters():  # the mean over masked frames
                    if p.grad is not None:
                        p.grad.div_(num_masked)
                if o.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(hf.parameters(), o.clip_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                step += 1
                hf.set_gumbel_temperature(max(t_max * decay**step, t_min))
                if step % cfg.trainer.log_interval == 0 or step == n:
                    losses.append({"update": step, "loss": float(out.loss.detach()) / float(num_masked)})
                if step == n:
                    break
        wall = time.perf_counter() - t0
    out = _summary(spec, setup, wall, clock, pad.made, step, start)
    out.update(hf_batch_size=b, last_log=losses[-1] if losses else None)
    return out


def run_arm(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(spec["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        if spec["impl"] == "ours":
            return run_ours(spec, Path(tmp))
        return (run_hf_finetune if spec["task"] == "finetune" else run_hf_pretrain)(spec, Path(tmp))


# ----------------------------------------------------------------------------- the whole benchmark
def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One spec per arm run, in the order they run: per task and seed a pair of ours and HF, the
    order reversed every other seed (ours, HF, HF, ours, ...)."""
    from wav2vec2_lite.data.manifest import read_manifest

    specs = []
    for task in args.tasks:
        cfg = run_config(_base_spec(args, task, args.seeds[0], "ours"))
        sizes = np.asarray(read_manifest(Path(args.data) / f"{_subset(args, task)}.tsv").sizes)
        d = cfg.data
        if d.max_sample_size:
            sizes = np.minimum(sizes[sizes >= d.min_sample_size], d.max_sample_size)
        b, ours_mean, hf_mean = matched_batch_size(sizes, d.max_tokens, task == "pretrain")
        for k, seed in enumerate(args.seeds):
            order = IMPLS if k % 2 == 0 else IMPLS[::-1]
            for impl in order:
                spec = _base_spec(args, task, seed, impl)
                spec.update(
                    hf_batch_size=b, ours_mean_audio_s_epoch=ours_mean / SR, hf_mean_audio_s=hf_mean / SR
                )
                specs.append(spec)
    return specs


def _subset(args: argparse.Namespace, task: str) -> str:
    return args.finetune_subset if task == "finetune" else args.pretrain_subset


def _base_spec(args: argparse.Namespace, task: str, seed: int, impl: str) -> dict[str, Any]:
    return {
        "task": task,
        "impl": impl,
        "seed": seed,
        "data": str(Path(args.data).resolve()),
        "train_subset": _subset(args, task),
        "valid_subset": args.valid_subset,
        "pretrained": args.pretrained,
        "updates": args.finetune_updates if task == "finetune" else args.pretrain_updates,
        "warmup_fraction": args.warmup_fraction,
        "threads": args.threads,
        "overrides": args.override,
    }


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``spec``'s arm in a fresh Python process (threads fixed by the environment too)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(spec["threads"]),
        "MKL_NUM_THREADS": str(spec["threads"]),
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--result", result.name]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{spec['task']}/{spec['impl']} seed {spec['seed']} failed:\n{proc.stderr[-3000:]}"
            )
        return json.loads(Path(result.name).read_text())


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: each arm's means over seeds, and ours / HF of audio seconds per wall second."""
    out = {}
    for task in TASKS:
        rows = [r for r in runs if r["task"] == task]
        if not rows:
            continue
        arms = {}
        for impl in IMPLS:
            mine = [r for r in rows if r["impl"] == impl]
            keys = [k for k, v in mine[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
            arms[impl] = {k: statistics.mean(r[k] for r in mine) for k in keys if k not in ("seed",)}
            if "valid_cer" in mine[0]:
                arms[impl]["valid_cer_per_seed"] = [r["valid_cer"] for r in mine]
        pairs = [
            o["audio_s_per_wall_s"] / h["audio_s_per_wall_s"]
            for o in rows
            if o["impl"] == "ours"
            for h in rows
            if h["impl"] == "hf" and h["seed"] == o["seed"]
        ]
        out[task] = {
            "arms": arms,
            "ratio_audio_per_wall": arms["ours"]["audio_s_per_wall_s"] / arms["hf"]["audio_s_per_wall_s"],
            "ratio_audio_per_wall_with_setup": arms["ours"]["audio_s_per_wall_s_with_setup"]
            / arms["hf"]["audio_s_per_wall_s_with_setup"],
            "ratio_per_seed": pairs,
            "ratio_updates_per_wall": arms["hf"]["wall_s"] / arms["ours"]["wall_s"],
        }
    return out


def render(report: dict[str, Any]) -> str:
    lines = [
        f"# Whole runs against transformers ({report['date']})",
        "",
        f"Machine: {report['machine']['cpu']}, {report['threads']} thread(s) per arm, "
        f"load during the run: {report['machine']['load']}. torch {report['torch']}, transformers "
        f"{report['transformers']}, accelerate {report['accelerate']}.",
        "",
        "| task | arm | audio s / wall s | updates | mean audio / update (s) | batch | padding "
        "| forward s | backward s | data s | other s | outside fwd/bwd | setup s | valid CER |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, s in report["summary"].items():
        for impl, a in s["arms"].items():
            cer = a.get("valid_cer")
            lines.append(
                f"| {task} | {impl} | {a['audio_s_per_wall_s']:.2f} | {a['updates']:.0f} "
                f"| {a['mean_audio_s_per_update']:.2f} | {a['mean_batch_size']:.2f} "
                f"| {a['padding_fraction']:.1%} | {a['forward_s']:.1f} | {a['backward_s']:.1f} "
                f"| {a['data_s']:.1f} | {a['other_s']:.1f} "
                f"| {a['outside_forward_backward_s'] / a['wall_s']:.1%} | {a['setup_s']:.1f} "
                f"| {'' if cer is None else f'{cer:.3f}'} |"
            )
    lines.append("")
    for task, s in report["summary"].items():
        per_seed = ", ".join(f"{r:.2f}" for r in s["ratio_per_seed"])
        lines.append(
            f"- {task}: ours / HF audio s per wall s **{s['ratio_audio_per_wall']:.2f}x** "
            f"(per seed {per_seed}); "
            f"with setup {s['ratio_audio_per_wall_with_setup']:.2f}x; updates per wall s "
            f"{s['ratio_updates_per_wall']:.2f}x"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": os.getloadavg(),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default=str(ROOT / "data/demo"), help="the demo corpus (scripts/synth_corpus.py)"
    )
    p.add_argument("--tasks", default="finetune,pretrain", type=lambda s: [t for t in s.split(",") if t])
    p.add_argument("--pretrained", default="tiny-espeak-10h", help="fine-tuning's start (both arms)")
    p.add_argument("--finetune-subset", default="train_10min")
    p.add_argument("--pretrain-subset", default="unlabeled")
    p.add_argument("--valid-subset", default="valid")
    p.add_argument("--finetune-updates", type=int, default=300)
    p.add_argument("--pretrain-updates", type=int, default=100)
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--override", action="append", default=[], help="one more override for our config (both arms)"
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per arm")
    p.add_argument("--load", default="", help="words on the machine's load, recorded in the report")
    p.add_argument("--out", default="", help="write the JSON report here (and the markdown beside it)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    if args.child:
        Path(args.result).write_text(json.dumps(run_arm(json.loads(args.child))))
        return None
    import accelerate
    import transformers

    bad = [t for t in args.tasks if t not in TASKS]
    if bad:
        raise SystemExit(f"--tasks: {bad} not in {TASKS}")
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "threads": args.threads,
        "machine": {**machine(), "load": args.load or "not recorded"},
        "argv": sys.argv[1:] if argv is None else argv,
        "runs": [],
    }
    for spec in plan(args):
        print(
            f"[whole-run] {spec['task']} {spec['impl']} seed {spec['seed']} ...", file=sys.stderr, flush=True
        )
        res = run_child(spec, args.timeout)
        res["spec"] = spec
        report["runs"].append(res)
        print(
            f"[whole-run]   {res['audio_s_per_wall_s']:.2f} audio s / s, {res['wall_s']:.0f} s"
            + (f", valid CER {res['valid_cer']:.3f}" if "valid_cer" in res else ""),
            file=sys.stderr,
            flush=True,
        )
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = summarize(report["runs"])
    md = render(report)
    print(md)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        Path(args.out).with_suffix(".md").write_text(md)
    return report


if __name__ == "__main__":
    main()
