"""The trainer's task contract and the typed statistics records (CPU, no data on disk)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.health import HealthConfig
from wav2vec2_lite.train.stats import UpdateStats, UpdateWindow
from wav2vec2_lite.train.task import Task
from wav2vec2_lite.train.tasks import CtcEvalSums, CtcTrainSums, FinetuneTask, PretrainSums, PretrainTask

TRAINER = Path(__file__).resolve().parent.parent / "wav2vec2_lite" / "train" / "trainer.py"


def _pretrain_task() -> PretrainTask:
    return PretrainTask(
        to_run_config(
            {"task": "pretrain", "model": {"preset": "tiny"}, "data": {"manifest_dir": "/nonexistent"}}
        )
    )


def _sums(loss: float, frames: float, hist: torch.Tensor | None = None) -> PretrainSums:
    t = torch.tensor
    return PretrainSums(
        sample_size=t(frames),
        loss_sum=t(loss),
        num_correct=t(1.0),
        batches=t(1.0),
        losses={"contrastive_loss": t(loss / 2)},
        metrics={"code_perplexity": t(3.0)},
        code_hist=hist,
    )


def test_both_tasks_follow_the_contract():
    assert isinstance(_pretrain_task(), Task)
    assert {"frozen_encoder", "save_extras", "summarize", "loss", "eval_batch"} <= set(dir(FinetuneTask))
    assert Task in FinetuneTask.__mro__  # declared, so a type checker holds it to the contract


def test_the_task_sets_up_the_health_monitor_for_its_objective():
    task = _pretrain_task()
    monitor = task.health_monitor(HealthConfig(grace_updates=10), warmup_updates=5)
    assert monitor.task == "pretrain" and monitor.start == 15
    assert (monitor.g, monitor.v) == (task.reference["code_groups"], task.reference["codes_per_group"])


def test_the_trainer_reads_no_fine_tuning_config_and_probes_no_task():
    source = TRAINER.read_text()
    assert "finetune" not in source and "hasattr(" not in source


def test_sums_add_up_as_the_trainer_totals_them():
    a, b = _sums(4.0, 2.0), _sums(6.0, 3.0, hist=torch.ones(2, 4))
    total = sum([a, b])  # 0 + a + b, as the trainer's running totals
    assert float(total.loss_sum) == 10.0 and float(total.sample_size) == 5.0
    assert float(total.losses["contrastive_loss"]) == 5.0 and float(total.batches) == 2.0
    assert torch.equal(total.code_hist, torch.ones(2, 4))  # collected on one side only: kept
    assert a.code_hist is None and (a + a).code_hist is None


def test_a_record_travels_as_one_flat_tensor_and_back():
    a = _sums(4.0, 2.0)
    numbers = a.numbers()
    assert len(numbers) == 6  # sample_size, loss_sum, num_correct, batches, one loss part, one metric
    back = a.with_numbers([float(v) * 2 for v in numbers])
    assert back.loss_sum == 8.0 and back.losses == {"contrastive_loss": 4.0} and back.code_hist is None
    assert a.map(float).metrics == {"code_perplexity": 3.0}


def test_pretraining_summary_divides_each_sum_by_its_own_count():
    task = _pretrain_task()
    summary = task.summarize(sum([_sums(4.0, 2.0), _sums(6.0, 3.0, hist=torch.ones(2, 4))]))
    assert summary["loss"] == pytest.approx(10.0 / 5.0) and summary["accuracy"] == pytest.approx(2.0 / 5.0)
    assert summary["contrastive_loss"] == pytest.approx(5.0 / 5.0)  # a loss part: per masked frame
    assert summary["code_perplexity"] == pytest.approx(3.0)  # a batch metric: per batch
    assert summary["target_loss"] == summary["contrastive_loss"] and summary["masked_frames"] == 5.0
    assert summary["code_perplexity_set"] == pytest.approx(2 * 4.0)  # uniform histogram: V per group
    assert "code_perplexity_set" not in task.summarize(_sums(4.0, 2.0))


def test_the_pretraining_task_reports_typed_records():
    task = _pretrain_task()
    torch.manual_seed(0)
    model = task.build_model()
    batch = {"waveform": torch.randn(2, 6000), "padding_mask": torch.zeros(2, 6000, dtype=torch.bool)}
    loss_sum, stats = task.loss(model.train(), batch, torch.Generator().manual_seed(0))
    evals = task.eval_batch(model.eval(), batch, torch.Generator().manual_seed(0))
    assert isinstance(stats, PretrainSums) and stats.code_hist is None and evals.code_hist is not None
    assert float(stats.loss_sum) == pytest.approx(float(loss_sum.detach())) and float(stats.batches) == 1.0
    summary = task.summarize(stats + evals)
    assert math.isclose(
        summary["loss"],
        float(stats.loss_sum + evals.loss_sum) / float(stats.sample_size + evals.sample_size),
        rel_tol=1e-6,
    )
    assert set(stats.losses) <= set(summary) and set(stats.metrics) <= set(summary)
    assert task.frozen_encoder(0) is False


def test_ctc_summaries_training_and_validation():
    t = torch.tensor
    counts = dict(sample_size=t(2.0), loss_sum=t(10.0), sentences=t(2.0), chars=t(20.0))
    train = FinetuneTask.summarize(CtcTrainSums(**counts, ctc_inf=t(1.0)))
    assert train == {"loss": 5.0, "loss_per_char": 0.5}
    assert CtcTrainSums(**counts, ctc_inf=t(1.0)).health_numbers() == {"ctc_inf": 1.0}
    evals = CtcEvalSums(
        **counts,
        wer_err=t(1.0),
        wer_ref=t(4.0),
        cer_err=t(2.0),
        cer_ref=t(20.0),
        blank_only=t(1.0),
        hyp_chars=t(10.0),
        ref_chars=t(20.0),
    )
    assert FinetuneTask.summarize(evals) == {
        "loss": 5.0,
        "loss_per_char": 0.5,
        "wer": 0.25,
        "cer": 0.1,
        "blank_only": 0.5,
        "output_length_ratio": 0.5,
    }


def test_a_log_window_sums_counts_and_keeps_the_last_state():
    task, window = _pretrain_task(), UpdateWindow()
    window.add(UpdateStats(_sums(4.0, 2.0).map(float), 16000.0, 1e-3, 2.0, {"gumbel_temp": 2.0}), 0.5)
    window.add(UpdateStats(_sums(6.0, 3.0).map(float), 16000.0, 2e-3, 3.0, {"gumbel_temp": 1.9}), 1.5)
    record = window.record(task.summarize, sample_rate=16000)
    assert record["loss"] == pytest.approx(2.0) and record["lr"] == 2e-3 and record["grad_norm"] == 3.0
    assert record["gumbel_temp"] == 1.9 and "loss_scale" not in record
    assert (
        record["step_time_s"] == 1.0 and record["audio_s_per_s"] == 1.0 and record["samples_per_s"] == 16000.0
    )
    assert window.updates == [] and window.seconds == 0.0
    fp16 = UpdateStats(_sums(1.0, 1.0), 1.0, 1e-3, 1.0, {}, loss_scale=128.0, fp16_overflows=2)
    assert fp16.state() == {"lr": 1e-3, "grad_norm": 1.0, "loss_scale": 128.0, "fp16_overflows": 2}
