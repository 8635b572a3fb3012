"""Health monitor: each detector fires on a constructed failure and stays quiet when healthy."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.asr.decode import greedy_decode
from wav2vec2_lite.train.health import HealthConfig, HealthMonitor, count_impossible_ctc

CFG = HealthConfig(grace_updates=10, window=5, repeat_every=100)


def small(**kw):
    return Wav2Vec2Config.tiny(
        num_layers=1, **kw, contrastive=dict(num_codes_per_group=16, codevector_dim=32, final_dim=32)
    )


def feed(mon: HealthMonitor, stats: dict, updates=range(0, 30)):
    found = []
    for u in updates:
        found += mon.check_train(u, stats)
    return {w.symptom for w in found}, found


def test_codebook_collapse_from_a_quantizer_forced_to_one_code():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small()).eval()
    with torch.no_grad():  # every frame picks entry 3 of each group
        model.quantizer.weight_proj.weight.zero_()
        model.quantizer.weight_proj.bias.zero_()
        model.quantizer.weight_proj.bias.view(2, 16)[:, 3] = 10.0
    out = model(torch.randn(2, 8000), generator=torch.Generator().manual_seed(0))
    assert out.code_perplexity.item() == 2.0  # one code per group
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=16, num_code_groups=2)
    symptoms, found = feed(
        mon,
        {
            "code_perplexity": out.code_perplexity.item(),
            "contrastive_loss": 2.0,
            "accuracy": 0.5,
            "grad_norm": 1.0,
        },
    )
    assert symptoms == {"codebook_collapse"}
    assert "diversity_loss_weight" in found[0].message and found[0].numbers["code_perplexity"] == 2.0
    assert found[0].update == 10  # not during the grace period


def test_stuck_at_chance_and_low_accuracy(caplog):
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=320)
    with caplog.at_level(logging.WARNING, logger="wav2vec2_lite.train.health"):
        symptoms, found = feed(
            mon,
            {
                "contrastive_loss": math.log(101) - 0.01,
                "accuracy": 0.01,
                "code_perplexity": 500.0,
                "grad_norm": 1.0,
            },
        )
    assert symptoms == {"stuck_at_chance", "low_accuracy"}
    assert "6.658 bits" in caplog.text and "4.615" in caplog.text
    assert len(found) == 2  # warned once each, not every update


def test_a_loss_near_chance_with_accuracy_well_above_chance_is_not_stuck():
    """The demo's tiny model: loss 0.986 ln(K+1) at update 600 while accuracy is 7x chance and rising."""
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=320)
    symptoms, _ = feed(
        mon, {"contrastive_loss": 4.55, "accuracy": 0.07, "code_perplexity": 500.0, "grad_norm": 1.0}
    )
    assert symptoms == set()
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=320)
    symptoms, _ = feed(
        mon, {"contrastive_loss": 4.55, "accuracy": 0.015, "code_perplexity": 500.0, "grad_norm": 1.0}
    )
    assert symptoms == {"stuck_at_chance"}  # 1.5x chance: above low_accuracy's 1.25x, but not learning


def test_ctc_blank_plateau_from_a_model_whose_logits_favour_blank():
    model = Wav2Vec2ForCTC(small(vocab_size=8)).eval()
    with torch.no_grad():
        model.lm_head.bias[0] = 100.0
        logits = model(torch.randn(3, 8000)).logits
    hyps = greedy_decode(logits, None, ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C"])
    blank = sum(not h for h in hyps) / len(hyps)
    mon = HealthMonitor(CFG, task="finetune")
    found = mon.check_valid(50, {"blank_only": blank, "output_length_ratio": 0.0})
    assert [w.symptom for w in found] == ["blank_only_outputs"]
    assert mon.check_valid(5, {"blank_only": 1.0}) == []  # grace period


def test_infinite_ctc_from_a_too_short_utterance():
    model = Wav2Vec2ForCTC(small(vocab_size=8, ctc_zero_infinity=False)).eval()
    labels = torch.tensor([[5, 5, 6, 7, -100], [5, 6, 7, 5, 6]])
    wave = torch.randn(2, 1600)  # 4 frames each
    out = model(wave, labels=labels)
    per_utt = F.ctc_loss(
        F.log_softmax(out.logits, -1).transpose(0, 1),
        labels.clamp(min=0),
        out.output_lengths,
        (labels >= 0).sum(-1),
        reduction="none",
    )
    assert torch.isinf(per_utt).tolist() == [True, True]  # 4 frames: "5 5 6 7" needs 5, the other 5 labels
    assert count_impossible_ctc(out.output_lengths, labels) == 2
    assert count_impossible_ctc(out.output_lengths, torch.tensor([[5, 6, 7, -100]] * 2)) == 0
    symptoms, _ = feed(HealthMonitor(CFG, task="finetune"), {"ctc_inf": 2.0, "grad_norm": 1.0}, [0])
    assert symptoms == {"ctc_infinite_loss"}  # no grace period for this one


def test_gradient_and_loss_scale_and_nonfinite_detectors():
    mon = HealthMonitor(CFG, task="finetune")
    assert feed(mon, {"grad_norm": float("inf")}, [0])[0] == {"gradient_explosion"}
    # a large finite norm in the first updates (CTC's usual start) is not flagged; later it is
    early = HealthMonitor(CFG, task="finetune")
    assert feed(early, {"grad_norm": 2e3}, range(0, 10))[0] == set()
    assert feed(early, {"grad_norm": 2e3}, [10])[0] == {"gradient_explosion"}
    assert feed(mon, {"grad_norm": 1.0, "loss_scale": 1e-4}, [1])[0] == {"loss_scale_collapse"}
    symptoms, _ = feed(HealthMonitor(CFG, task="finetune"), {"grad_norm": 1.0, "nonfinite": 1.0}, range(5))
    assert "nonfinite_steps" in symptoms
    symptoms, _ = feed(HealthMonitor(CFG, task="finetune"), {"grad_norm": 1e-9})
    assert symptoms == {"vanishing_gradients"}


def test_healthy_numbers_raise_nothing():
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=320)
    symptoms, _ = feed(
        mon,
        {
            "contrastive_loss": 2.5,
            "accuracy": 0.4,
            "code_perplexity": 300.0,
            "grad_norm": 0.8,
            "loss_scale": 1024.0,
            "nonfinite": 0.0,
        },
        range(0, 500),
    )
    assert symptoms == set()
    assert (
        HealthMonitor(CFG, task="finetune").check_valid(100, {"blank_only": 0.0, "output_length_ratio": 0.9})
        == []
    )


# ---------------------------------------------------------------- per objective (summaries from the task)
def _best_rq_summary(**kw) -> dict:
    """What PretrainTask.summarize reports under the best_rq objective (V = 1024)."""
    return {
        "cross_entropy_loss": 6.9,
        "target_loss": 6.9,
        "chance_loss": math.log(1024),
        "accuracy": 0.0005,
        "code_perplexity": 30.0,
        "code_perplexity_max": 1024.0,
        "codebook_frozen": 1.0,
        "grad_norm": 1.0,
        **kw,
    }


def test_best_rq_is_judged_against_ln_v_not_ln_k_plus_1(caplog):
    # the trainer builds the monitor from the contrastive fields (K = 100, G x V = 2 x 320); the summary wins
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=320)
    with caplog.at_level(logging.WARNING, logger="wav2vec2_lite.train.health"):
        symptoms, found = feed(mon, _best_rq_summary())
    assert symptoms == {"stuck_at_chance", "low_accuracy"}
    assert "target loss 6.900 nats/frame vs chance 6.931" in caplog.text
    assert found[0].numbers == {"target_loss": 6.9, "chance": math.log(1024)}
    # 4.6 nats is ln(101), the contrastive chance, but far below ln(1024): learning, not stuck;
    # accuracy 20x chance (1/1024) is not low. A small per-batch code perplexity is no collapse
    # for a frozen codebook (judged on the validation set instead).
    mon = HealthMonitor(CFG, task="pretrain", num_negatives=100, num_codes_per_group=320)
    symptoms, _ = feed(mon, _best_rq_summary(cross_entropy_loss=4.6, target_loss=4.6, accuracy=0.02))
    assert symptoms == set()


def test_frozen_codebook_targets_using_few_codes_are_flagged_on_validation():
    mon = HealthMonitor(CFG, task="pretrain")
    few = mon.check_valid(50, _best_rq_summary(code_perplexity_set=5.0))  # < 1 % of V = 1024
    assert [w.symptom for w in few] == ["few_target_codes"] and "codebook_dim" in few[0].message
    assert "diversity_loss_weight" not in few[0].message  # no learned codebook to diversify
    # speech uses ~9 % of a frozen 1024-code book (docs/objectives.md): not flagged
    assert (
        HealthMonitor(CFG, task="pretrain").check_valid(50, _best_rq_summary(code_perplexity_set=90.0)) == []
    )
    # a learned codebook's valid perplexity is not judged this way (its training rule is codebook_collapse)
    assert (
        HealthMonitor(CFG, task="pretrain").check_valid(
            50, _best_rq_summary(code_perplexity_set=4.0, codebook_frozen=0.0)
        )
        == []
    )
