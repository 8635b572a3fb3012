"""scripts/whole_run_benchmark.py: its counts (padding, the batch size matched to our mean audio per
update), the schedules both arms run, the time split, and a tiny end-to-end of all four arms."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wr():
    spec = importlib.util.spec_from_file_location(
        "whole_run_benchmark", ROOT / "scripts" / "whole_run_benchmark.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_padding_fraction_counts_padded_samples_over_batch_samples(wr):
    # 2 x 10 with 15 real, 3 x 4 with 12 real: 32 samples, 5 of them padding
    assert wr.padding_fraction([(2, 10, 15), (3, 4, 12)]) == pytest.approx(5 / 32)
    assert wr.padding_fraction([(4, 8, 32)]) == 0.0
    assert wr.padding_fraction([]) == 0.0


def test_our_batches_pad_to_the_longest_or_crop_to_the_shortest(wr):
    sizes = np.array([100, 100, 100, 100, 200, 200, 150])
    padded = wr.ours_batches(sizes, max_tokens=400, crop_to_shortest=False)
    assert sorted(padded) == sorted([(4, 100, 400), (2, 200, 350), (1, 200, 200)])
    cropped = wr.ours_batches(sizes, max_tokens=400, crop_to_shortest=True)
    assert sorted(cropped) == sorted([(4, 100, 400), (2, 150, 300), (1, 200, 200)])
    assert wr.padding_fraction(cropped) == 0.0


def test_the_hf_batch_size_gives_the_same_mean_audio_per_update(wr):
    sizes = np.array([100, 100, 100, 100, 200, 200])  # ours: [4 x 100], [2 x 200] -> 400 a batch
    b, ours_mean, hf_mean = wr.matched_batch_size(sizes, max_tokens=400, crop_to_shortest=False)
    assert ours_mean == 400.0
    assert b == 3 and hf_mean == pytest.approx(3 * sizes.mean()) == 400.0
    rng = np.random.default_rng(0)
    sizes = rng.integers(16000, 88000, 300)  # demo-like: 1-5.5 s
    b, ours_mean, hf_mean = wr.matched_batch_size(sizes, max_tokens=128000, crop_to_shortest=False)
    assert abs(hf_mean - ours_mean) <= sizes.mean() / 2  # the nearest whole batch size


def test_both_arms_run_the_same_plain_schedule(wr, tmp_path):
    pytest.importorskip("transformers")
    from wav2vec2_lite.train.schedules import build_schedule
    from wav2vec2_lite.train.toy_data import make_toy_corpus

    data = make_toy_corpus(tmp_path / "toy", train=2, valid=1)
    spec = {"data": str(data), "train_subset": "train", "updates": 50, "warmup_fraction": 0.1, "seed": 1}
    spec.update(threads=1, task="finetune", pretrained="tiny-espeak-10h")
    cfg = wr.run_config(spec)
    assert cfg.schedule.name == "polynomial" and cfg.schedule.warmup_updates == 5
    assert cfg.finetune.freeze_finetune_updates == 0 and cfg.trainer.precision == "32"
    ours = build_schedule(cfg.schedule, cfg.optim.lr, cfg.trainer.max_updates)
    lr = cfg.optim.lr
    hf = wr.hf_linear_lrs(lr, 5, 50)
    diff = [ours.lr_at(u) - hf[u] for u in range(50)]
    # transformers' first update runs at lr 0, ours at lr / warmup: one update apart in the warm-up,
    # the same decay afterwards
    assert diff[:5] == pytest.approx([lr / 5] * 5)
    assert diff[5:] == pytest.approx([0.0] * 45, abs=1e-12)
    pre = wr.run_config({**spec, "task": "pretrain"})
    assert pre.schedule.name == "polynomial" and pre.schedule.warmup_updates == 5


def test_the_clock_times_forward_backward_and_data_and_restores_torch(wr):
    from torch.utils.data import DataLoader, dataloader

    model = torch.nn.Linear(3, 1)
    loader = DataLoader(torch.randn(6, 3), batch_size=2)
    backward, next_ = torch.Tensor.backward, dataloader._BaseDataLoaderIter.__next__
    seen = []
    with wr.Clock().attached(model, seen.append) as clock:
        for x in loader:
            model(x).sum().backward()
    assert (clock.forwards, clock.backwards, clock.nexts) == (3, 3, 3) and len(seen) == 3
    assert clock.forward > 0 and clock.backward > 0 and clock.data > 0
    assert torch.Tensor.backward is backward and dataloader._BaseDataLoaderIter.__next__ is next_
    model(torch.randn(1, 3)).sum().backward()
    assert clock.forwards == 3  # hooks removed


def test_the_ctc_collator_pads_waves_with_zeros_and_labels_with_minus_100(wr):
    pytest.importorskip("transformers")
    from wav2vec2_lite import Wav2Vec2Config

    collate = wr.CtcCollator(wr._extractor(Wav2Vec2Config.tiny()))
    items = [
        {"input_values": np.ones(5, np.float32), "labels": [4, 5]},
        {"input_values": np.ones(3, np.float32), "labels": [6]},
    ]
    batch = collate(items)
    assert set(batch) == {"input_values", "labels"}  # group norm: no attention mask (exported processor)
    assert batch["input_values"].tolist() == [[1.0] * 5, [1.0, 1.0, 1.0, 0.0, 0.0]]
    assert batch["labels"].tolist() == [[4, 5], [6, -100]]
    assert collate.made == [(2, 5, 8)]


def test_every_arm_runs_end_to_end_from_the_same_weights(wr, tmp_path):
    """Two updates of each arm on a toy corpus (in this process)."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    from wav2vec2_lite.train.toy_data import make_toy_corpus

    data = make_toy_corpus(tmp_path / "toy", train=8, valid=2, max_words=2)
    threads = torch.get_num_threads()
    base = {"data": str(data), "train_subset": "train", "valid_subset": "valid", "updates": 2}
    base.update(warmup_fraction=0.5, seed=3, threads=1, pretrained="tiny-espeak-10h", hf_batch_size=2)
    base["overrides"] = ["data.max_tokens=64000"]
    try:
        res = {
            (task, impl): wr.run_arm({**base, "task": task, "impl": impl})
            for task in ("finetune", "pretrain")
            for impl in ("ours", "hf")
        }
    finally:
        torch.set_num_threads(threads)
    for task in ("finetune", "pretrain"):
        ours, hf = res[task, "ours"], res[task, "hf"]
        assert ours["initial_weights_checksum"] == hf["initial_weights_checksum"]
        for r in (ours, hf):
            assert r["updates"] == 2 and r["counts"]["forward"] == 2 and r["counts"]["backward"] == 2
            assert 0 < r["forward_s"] + r["backward_s"] < r["wall_s"]
            assert r["audio_s"] > 0 and 0.0 <= r["padding_fraction"] < 1.0
        if task == "finetune":
            assert 0.0 <= ours["valid_cer"] <= 1.5 and 0.0 <= hf["valid_cer"] <= 1.5
    assert res["pretrain", "ours"]["padding_fraction"] == 0.0  # cropped to the shortest
    summary = wr.summarize([{**r, "seed": 3} for r in res.values()])
    s = summary["finetune"]
    assert s["ratio_audio_per_wall"] == pytest.approx(
        res["finetune", "ours"]["audio_s_per_wall_s"] / res["finetune", "hf"]["audio_s_per_wall_s"]
    )
