"""The pretraining-objective seam: registry and config key, the three-step forward, the saved
format (version 1 folders still load), the training task per objective, a toy objective added
through the registry."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.config import ConfigError, upgrade_config_dict
from wav2vec2_lite.objectives import contrastive as contrastive_module
from wav2vec2_lite.objectives.base import ObjectiveInputs, ObjectiveOutput, PretrainingObjective, frame_counts
from wav2vec2_lite.objectives.configs import OBJECTIVE_CONFIGS
from wav2vec2_lite.objectives.contrastive import ContrastiveOutput
from wav2vec2_lite.objectives.registry import OBJECTIVES, build_objective
from wav2vec2_lite.serialization import (
    FORMAT_VERSION,
    CheckpointError,
    load_model,
    read_weights,
    save_model,
    upgrade_state_dict,
    write_checksums,
)
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.tasks import PretrainTask

from _helpers import deep_merge


def small(**kw) -> Wav2Vec2Config:
    return Wav2Vec2Config.tiny(
        **{
            "num_layers": 1,
            "hidden_size": 64,
            "num_heads": 2,
            "ffn_dim": 128,
            "conv_dim": (32,) * 7,
            "pos_conv_kernel": 16,
            "pos_conv_groups": 16,
            **deep_merge(
                {
                    "contrastive": {
                        "num_codes_per_group": 16,
                        "codevector_dim": 32,
                        "final_dim": 32,
                        "num_negatives": 10,
                    }
                },
                kw,
            ),
        }
    )


BRQ = {"objective": "best_rq", "best_rq": {"codebook_size": 1024, "codebook_dim": 16}}


# ----------------------------------------------------------------------------- registry, config key
def test_the_config_key_selects_a_registered_objective_and_names_the_valid_ones():
    assert set(OBJECTIVES) == {"contrastive", "best_rq"}
    assert Wav2Vec2Config.base().objective == "contrastive"
    assert type(build_objective(small())).__name__ == "ContrastiveObjective"
    assert type(build_objective(small(**BRQ))).__name__ == "BestRQObjective"
    with pytest.raises(
        ConfigError, match=r"Wav2Vec2Config\.objective: must be one of \['best_rq', 'contrastive'\]"
    ):
        small(objective="hubert")
    with pytest.raises(ConfigError, match=r"Wav2Vec2Config\.best_rq: unknown key\(s\) \['codebook_sise'\]"):
        small(best_rq={"codebook_sise": 4})
    assert Wav2Vec2Config.from_dict(small(**BRQ).to_dict()) == small(**BRQ)  # round trip through JSON types


def test_the_pretraining_forward_is_backbone_then_targets_then_prediction():
    """Running the backbone and the objective by hand gives the model's output exactly."""
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small(contrastive={"cross_sample_negatives": 3})).train()
    wave = torch.randn(2, 6000)
    pad = torch.zeros(2, 6000, dtype=torch.bool)
    pad[1, 5000:] = True
    torch.manual_seed(1)  # dropout draws from the global generator
    out = model(wave, pad, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(5)
    b = model.wav2vec2(wave, pad, sample_mask=True, generator=g)
    inputs = ObjectiveInputs(
        waveform=wave,
        sample_padding=pad,
        conv_features=b.conv_features,
        extract_features=b.extract_features,
        context=b.last_hidden_state,
        mask_indices=b.mask_indices,
        frame_padding=b.padding_mask,
        frame_lengths=b.frame_lengths,
    )
    res = model.objective(inputs, generator=g)
    assert isinstance(res, ObjectiveOutput)
    assert torch.equal(res.loss_sum, out.loss_sum) and torch.equal(res.logits, out.logits)
    assert isinstance(res, ContrastiveOutput) and isinstance(out.objective, ContrastiveOutput)  # its own type
    assert torch.equal(res.cross_negative_indices, out.objective.cross_negative_indices)
    assert res.cross_negative_indices.shape[-1] == 3
    # the loss parts, summed over masked frames, weighted as documented
    n = out.num_masked.float()
    assert torch.allclose(sum(res.weights[k] * v for k, v in res.losses.items()), out.loss_sum)
    assert torch.allclose(out.losses["diversity_loss"] / n, res.diversity_loss)
    assert torch.allclose(out.losses["feature_penalty"] / n, res.feature_penalty)
    assert torch.equal(out.losses["contrastive_loss"], res.contrastive_loss)
    assert out.metrics.keys() == {"code_perplexity", "prob_perplexity"}


def test_the_feature_penalty_is_computed_only_by_the_contrastive_objective(monkeypatch):
    calls = []
    real = contrastive_module.feature_penalty
    monkeypatch.setattr(contrastive_module, "feature_penalty", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    wave = torch.randn(1, 5000)
    Wav2Vec2ForCTC(small()).eval()(wave)
    Wav2Vec2ForPreTraining(small(**BRQ))(wave, generator=torch.Generator().manual_seed(0))
    assert calls == []  # neither CTC nor BEST-RQ pay for it
    pre = Wav2Vec2ForPreTraining(small()).eval()
    out = pre(wave, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1
    backbone = pre.wav2vec2(wave)  # the backbone computes no objective's loss, only its inputs
    assert not hasattr(backbone, "feature_penalty")
    assert torch.allclose(out.objective.feature_penalty, backbone.conv_features.pow(2).mean())


def test_a_zero_feature_penalty_weight_reports_the_penalty_but_keeps_it_out_of_the_graph():
    """LARGE's weight 0: the same penalty is logged, no backward runs through it, and the loss and
    gradients are those of the other terms alone."""
    torch.manual_seed(0)
    wave = torch.randn(2, 6000)
    runs = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(1)
        model = Wav2Vec2ForPreTraining(small(contrastive={"feature_penalty_weight": weight})).train()
        out = model(wave, generator=torch.Generator().manual_seed(0))
        runs[weight] = (model, out.objective)
    (m0, o0), (m10, o10) = runs[0.0], runs[10.0]
    assert torch.equal(o0.feature_penalty, o10.feature_penalty.detach())
    assert not o0.feature_penalty.requires_grad and o10.feature_penalty.requires_grad
    assert o0.weights["feature_penalty"] == 0.0 and "feature_penalty" in o0.losses
    without = o10.loss_sum - o10.num_masked.float() * 10.0 * o10.feature_penalty  # the other terms
    assert torch.allclose(o0.loss_sum, without)
    o0.loss_sum.backward()
    without.backward()
    for (name, p0), p10 in zip(m0.named_parameters(), m10.parameters()):
        assert (p0.grad is None) == (p10.grad is None), name
        if p0.grad is not None:
            assert torch.allclose(p0.grad, p10.grad, atol=1e-6), name


def test_no_masked_frame_is_an_error_for_every_objective():
    for cfg in (small(), small(**BRQ)):
        model = Wav2Vec2ForPreTraining(cfg)
        with pytest.raises(ValueError, match="no frame was masked"):
            model(torch.randn(1, 5000), mask_indices=torch.zeros(1, 15, dtype=torch.bool))


# ----------------------------------------------------------------------------- a new objective
class MeanFeatureObjective(PretrainingObjective):
    """Regress each masked frame's mean conv activation (a toy objective for the seam's test)."""

    name = "mean_feature"
    main_loss = "mse"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.head = nn.Linear(config.hidden_size, 1)

    @classmethod
    def health_reference(cls, config) -> dict[str, float]:
        return {
            "chance_loss": 1.0,
            "chance_accuracy": 0.0,
            "code_groups": 1.0,
            "codes_per_group": 1.0,
            "codebook_frozen": 1.0,
        }

    def targets(self, inputs, *, generator=None, negative_indices=None):
        return inputs.conv_features.mean(1).detach()  # (B, T)

    def predict(self, inputs, targets):
        mask = inputs.mask_indices
        err = (self.head(inputs.context[mask])[:, 0] - targets[mask]).pow(2).sum()
        return ObjectiveOutput(
            loss_sum=err,
            num_masked=frame_counts(mask),
            num_correct=torch.zeros((), dtype=torch.long),
            logits=self.head(inputs.context[mask]),
            losses={"mse": err},
            weights={"mse": 1.0},
        )


def test_a_new_objective_needs_its_class_and_its_two_registry_entries(monkeypatch, tmp_path):
    monkeypatch.setitem(OBJECTIVES, "mean_feature", MeanFeatureObjective)
    monkeypatch.setitem(OBJECTIVE_CONFIGS, "mean_feature", None)  # it has no settings
    cfg = small(objective="mean_feature")
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(cfg)
    out = model(torch.randn(2, 5000), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert model.objective.head.weight.grad is not None and out.losses.keys() == {"mse"}
    assert type(out.objective) is ObjectiveOutput and out.code_perplexity is None
    save_model(model, tmp_path / "m")
    assert set(load_model(tmp_path / "m").state_dict()) == set(model.state_dict())


# ----------------------------------------------------------------------------- saved format
def _as_version(folder, version: int) -> None:
    """Rewrite a folder saved today as the library wrote it at ``version``: 2 had each objective's
    settings flat (BEST-RQ's in ``objective_options``), 1 also lacked the objective seam."""
    info = json.loads((folder / "config.json").read_text())
    cfg = info["config"]
    cfg.update(cfg.pop("contrastive"), objective_options=cfg.pop("best_rq"))
    info["format_version"] = version
    if version == 1:
        weights = folder / "model.safetensors"
        old = {k.removeprefix("objective."): v for k, v in load_file(str(weights)).items()}
        save_file(old, str(weights), metadata={"format": "pt"})
        del cfg["objective"], cfg["objective_options"], info["weights_sha256"]  # not in version 1
    (folder / "config.json").write_text(json.dumps(info))
    (folder / "checksums.json").unlink()  # came with version 4


def test_version_2_folders_load_with_each_objective_s_settings_moved_into_its_config(tmp_path):
    assert FORMAT_VERSION == 4
    for cfg in (
        small(contrastive={"num_negatives": 7, "gumbel_temperature": (2.0, 0.5, 0.99)}),
        small(objective="best_rq", best_rq={"codebook_size": 64, "normalization": "utterance"}),
    ):
        torch.manual_seed(0)
        model = Wav2Vec2ForPreTraining(cfg)
        save_model(model, tmp_path / cfg.objective)
        _as_version(tmp_path / cfg.objective, 2)
        assert "num_negatives" in json.loads((tmp_path / cfg.objective / "config.json").read_text())["config"]
        back = load_model(tmp_path / cfg.objective)
        assert back.config == cfg and back.state_dict().keys() == model.state_dict().keys()
    assert upgrade_config_dict(small().to_dict()) == small().to_dict()  # today's layout is left as it is


def test_version_1_folders_load_through_the_key_rename(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small())
    save_model(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["format_version"] == FORMAT_VERSION
    _as_version(tmp_path / "m", 1)
    assert "quantizer.codebook" in load_file(str(tmp_path / "m" / "model.safetensors"))
    back = load_model(tmp_path / "m")
    assert back.config == model.config
    assert read_weights(tmp_path / "m").keys() == model.state_dict().keys()  # for training checkpoints
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    # a CTC model started from the old folder gets its backbone
    ctc = Wav2Vec2ForCTC.from_pretraining(tmp_path / "m", vocab_size=7)
    assert torch.equal(ctc.wav2vec2.mask_emb, model.wav2vec2.mask_emb)
    # only the pretraining model's target-side prefixes move; a backbone key keeps its name
    renamed = upgrade_state_dict(
        {"quantizer.codebook": 1, "project_q.weight": 2, "final_proj.bias": 3, "wav2vec2.mask_emb": 4},
        "Wav2Vec2ForPreTraining",
        1,
    )
    assert renamed == {
        "objective.quantizer.codebook": 1,
        "objective.project_q.weight": 2,
        "objective.final_proj.bias": 3,
        "wav2vec2.mask_emb": 4,
    }
    assert upgrade_state_dict({"lm_head.weight": 1}, "Wav2Vec2ForCTC", 1) == {"lm_head.weight": 1}


def test_a_folder_from_a_newer_format_is_refused_by_name(tmp_path):
    save_model(Wav2Vec2ForCTC(small()), tmp_path / "m")
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    info["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(info))
    write_checksums(tmp_path / "m")  # as the newer library would have
    with pytest.raises(CheckpointError, match=rf"config\.json.*format_version {FORMAT_VERSION + 1}"):
        load_model(tmp_path / "m")


def test_best_rq_models_are_not_exported_as_transformers_pretraining_models():
    pytest.importorskip("transformers")
    from wav2vec2_lite.interop import to_hf

    model = Wav2Vec2ForPreTraining(small(**BRQ))
    with pytest.raises(ConfigError, match="only the contrastive objective"):
        to_hf(model)
    assert type(to_hf(model.wav2vec2)).__name__ == "Wav2Vec2Model"  # its backbone is


# ----------------------------------------------------------------------------- training task
def _task(**model) -> PretrainTask:
    m = {"preset": "tiny", **small().to_dict(), **model}  # a given sub-config: only the keys it names
    return PretrainTask(
        to_run_config({"task": "pretrain", "model": m, "data": {"manifest_dir": "/nonexistent"}})
    )


@pytest.mark.parametrize("objective", ["contrastive", "best_rq"])
def test_the_task_logs_each_objective_with_its_own_chance(objective):
    task = _task(**(BRQ if objective == "best_rq" else {}))
    torch.manual_seed(0)
    model = task.build_model().train()
    extra = task.before_update(model, 1000)
    if objective == "contrastive":
        assert extra == {"gumbel_temp": model.objective.temperature_at(1000)}
        assert model.quantizer.temperature == extra["gumbel_temp"]
    else:
        assert extra == {} and not hasattr(model.objective, "temperature_at")
    batch = {"waveform": torch.randn(2, 6000), "padding_mask": torch.zeros(2, 6000, dtype=torch.bool)}
    loss_sum, stats = task.loss(model, batch, torch.Generator().manual_seed(0))
    evals = task.eval_batch(model.eval(), batch, torch.Generator().manual_seed(0))
    summary = task.summarize(stats + evals)
    n = float(stats.sample_size + evals.sample_size)
    main = "contrastive_loss" if objective == "contrastive" else "cross_entropy_loss"
    assert summary["target_loss"] == summary[main]
    assert math.isclose(summary["loss"], float(stats.loss_sum + evals.loss_sum) / n, rel_tol=1e-6)
    if objective == "contrastive":
        assert summary["chance_loss"] == math.log(11) and summary["code_perplexity_max"] == 2 * 16
        assert {"diversity_loss", "feature_penalty", "prob_perplexity"} <= set(summary)
        assert summary["codebook_frozen"] == 0.0
    else:
        assert summary["chance_loss"] == math.log(1024) and summary["code_perplexity_max"] == 1024
        assert "diversity_loss" not in summary and summary["codebook_frozen"] == 1.0
    assert evals.code_hist.sum() == evals.sample_size * (2 if objective == "contrastive" else 1)
    assert 1.0 <= summary["code_perplexity_set"] <= summary["code_perplexity_max"]
