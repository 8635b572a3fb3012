"""wav2vec 2.0's Table 5 settings: continuous or quantized inputs and targets, a shared quantizer.

``contrastive.quantize_targets`` / ``quantize_input`` / ``same_quantizer`` (fairseq's names):
shapes and gradients of every combination, the loss against a hand computation from the
model's own tensors, the input quantizer acting before masking, the diversity loss's source
(fairseq's), saving tied weights, fine-tuning keeping the input quantizer, fairseq-style
checkpoints, Hugging Face export refusals, the health monitor, unit extraction and Hydra.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model
from wav2vec2_lite.config import ConfigError
from wav2vec2_lite.extract import Extractor
from wav2vec2_lite.modules.input_quantizer import QuantizedFeatureProjection
from wav2vec2_lite.objectives.masking import sample_negatives
from wav2vec2_lite.serialization import load_model, read_weights, state_dict_equal
from wav2vec2_lite.train.health import HealthConfig, HealthMonitor

from _helpers import MICRO_MODEL, deep_merge

FP = "feature_projection"
CONFIGS = Path(__file__).resolve().parent.parent / "wav2vec2_lite" / "configs"

# (quantize_targets, quantize_input, same_quantizer): Table 5's four cells and the shared quantizer
COMBOS = [
    (True, False, False),
    (False, False, False),
    (False, True, False),
    (True, True, False),
    (True, True, True),
]
IDS = ["baseline", "continuous", "input-only", "both", "shared"]


def config(qt: bool, qi: bool, same: bool = False, **kw) -> Wav2Vec2Config:
    base = {k: v for k, v in MICRO_MODEL.items() if k != "preset"}
    switches = dict(quantize_targets=qt, quantize_input=qi, same_quantizer=same)
    return Wav2Vec2Config.tiny(**deep_merge(base, deep_merge({"contrastive": switches}, kw)))


def model(qt: bool, qi: bool, same: bool = False, seed: int = 0, **kw) -> Wav2Vec2ForPreTraining:
    torch.manual_seed(seed)
    return Wav2Vec2ForPreTraining(config(qt, qi, same, **kw))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 8000) waves, the second padded after 6000 samples (24 and 18 frames)."""
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(3))
    padding = torch.zeros(2, 8000, dtype=torch.bool)
    padding[1, 6000:] = True
    wave[1, 6000:] = 0.0
    return wave, padding


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize("qt,qi,same", COMBOS, ids=IDS)
def test_each_combination_has_its_modules_shapes_and_gradients(qt, qi, same):
    m = model(qt, qi, same).train()
    c = m.config.contrastive
    wave, padding = batch()
    out = m(wave, padding, generator=torch.Generator().manual_seed(0))
    out.loss.backward()

    names = dict(m.named_parameters())
    assert ("wav2vec2.feature_projection.project_inp.weight" in names) is qi
    assert ("wav2vec2.feature_projection.projection.weight" in names) is not qi  # replaced, as fairseq
    assert ("objective.quantizer.codebook" in names) is (qt and not same)  # shared: one name per parameter
    assert (m.quantizer is not None) is qt and (m.wav2vec2.input_quantizer is not None) is qi
    if same:
        assert m.quantizer is m.wav2vec2.input_quantizer
        assert "objective.quantizer.codebook" in m.state_dict()  # saved under both names, like fairseq
    assert m.objective.project_q.in_features == (c.codevector_dim if qt else m.config.conv_dim[-1])
    if qi:  # fairseq's width rule: final_dim when shared, else latent_dim or the transformer width
        assert m.wav2vec2.feature_projection.project_inp.in_features == (c.final_dim if same else 64)

    assert out.logits.shape == (int(out.num_masked), 1 + c.num_negatives) and torch.isfinite(out.loss)
    assert out.codes.shape == (2, 24, c.num_code_groups if qt or qi else 0)
    assert ("diversity_loss" in out.losses) is (qt or qi)
    assert set(out.metrics) == (
        set()
        if not (qt or qi)
        else {"code_perplexity", "prob_perplexity"}
        | ({"input_code_perplexity", "input_prob_perplexity"} if qt and qi else set())
    )
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without a gradient: {missing}"


def test_the_default_is_the_paper_s_model():
    c = Wav2Vec2Config().contrastive
    assert (c.quantize_targets, c.quantize_input, c.same_quantizer, c.input_codevector_dim) == (
        True,
        False,
        False,
        0,
    )
    assert type(Wav2Vec2Model(Wav2Vec2Config.tiny()).feature_projection).__name__ == "FeatureProjection"


@pytest.mark.parametrize(
    "changes,key",
    [
        (dict(same_quantizer=True), "same_quantizer"),
        (dict(same_quantizer=True, quantize_input=True, quantize_targets=False), "same_quantizer"),
        (dict(same_quantizer=True, quantize_input=True, final_dim=16), "codevector_dim"),
        (dict(same_quantizer=True, quantize_input=True, input_codevector_dim=32), "input_codevector_dim"),
        (dict(quantize_input=True, input_codevector_dim=33), "input_codevector_dim"),
        (dict(quantize_targets=1), "quantize_targets"),
    ],
)
def test_bad_combinations_are_refused_by_name(changes, key):
    with pytest.raises(ConfigError, match=rf"contrastive\.{key}:"):
        Wav2Vec2Config.tiny(contrastive=changes)


def test_the_input_quantizer_belongs_to_the_contrastive_objective():
    with pytest.raises(ConfigError, match=r"Wav2Vec2Config\.objective:.*quantize_input"):
        Wav2Vec2Config.tiny(objective="best_rq", contrastive=dict(quantize_input=True))


def test_a_saved_config_without_the_settings_loads_with_the_paper_s_values():
    data = Wav2Vec2Config.tiny().to_dict()
    for key in ("quantize_targets", "quantize_input", "same_quantizer", "input_codevector_dim"):
        del data["contrastive"][key]  # a folder saved before these settings existed
    assert Wav2Vec2Config.from_dict(data) == Wav2Vec2Config.tiny()


# ----------------------------------------------------------------------------- the loss by hand
def _quantize_by_hand(q, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode Gumbel quantizer from its tensors: (codevectors (n, G·d), soft probs (n, G, V))."""
    g, v = q.codebook.shape[:2]
    logits = (x @ q.weight_proj.weight.T + q.weight_proj.bias).view(-1, g, v)
    codes = logits.argmax(-1)
    picks = torch.cat([q.codebook[k][codes[:, k]] for k in range(g)], dim=-1)
    return picks, logits.softmax(-1)


def _perplexity_by_hand(probs: torch.Tensor) -> torch.Tensor:
    mean = probs.mean(0)  # (G, V)
    return sum(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()) for p in mean)


def _mask_and_negatives(lengths: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[0, 2:10] = mask[0, 15:19] = True
    mask[1, 1:7] = True
    negatives = sample_negatives(mask, k, generator=torch.Generator().manual_seed(5))
    negatives[0, 3, 0] = 3  # a distractor identical to its positive: masked out (fairseq's neg_is_pos)
    return mask, negatives


@pytest.mark.parametrize("qt,qi,same", COMBOS, ids=IDS)
def test_loss_equals_a_hand_computation_from_the_model_s_tensors(qt, qi, same):
    m = model(qt, qi, same, seed=1).eval()
    obj, c = m.objective, m.config.contrastive
    wave, padding = batch()
    mask, negatives = _mask_and_negatives([24, 18], c.num_negatives)
    seen = {}
    m.wav2vec2.context.register_forward_pre_hook(lambda mod, args: seen.setdefault("input", args[0].clone()))
    with torch.no_grad():
        out = m(wave, padding, mask_indices=mask, negative_indices=negatives)
        conv = m.wav2vec2.feature_encoder(wave, (~padding).sum(-1))  # (B, C, T)
        lengths = [24, 18]
        valid = torch.arange(24)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
        ln = m.wav2vec2.feature_projection.layer_norm
        feats = F.layer_norm(conv.transpose(1, 2), ln.normalized_shape, ln.weight, ln.bias, ln.eps)

        # the transformer input: quantized (then project_inp) before the mask embedding replaces frames
        if qi:
            picks, in_probs = _quantize_by_hand(m.wav2vec2.input_quantizer, feats.flatten(0, 1))
            inp = m.wav2vec2.feature_projection.project_inp(picks).view(2, 24, -1)
            expected = torch.where(mask[..., None], m.wav2vec2.mask_emb, inp)
            assert torch.allclose(seen["input"][valid], expected[valid], atol=1e-5)

        # the targets: quantized codevectors or the continuous features, then project_q
        if qt:
            tq, tg_probs = _quantize_by_hand(m.quantizer, feats.flatten(0, 1))
            targets = obj.project_q(tq).view(2, 24, -1)
        else:
            targets = obj.project_q(feats)
        total = torch.zeros(())
        for b, t in mask.nonzero().tolist():
            pred = obj.final_proj(out.last_hidden_state[b, t])
            scores = []
            for k, frame in enumerate([t] + negatives[b, t].tolist()):
                same_target = k > 0 and torch.equal(targets[b, frame], targets[b, t])
                cos = F.cosine_similarity(pred, targets[b, frame], dim=0)
                scores.append(torch.tensor(float("-inf")) if same_target else cos / c.logit_temperature)
            total = total - torch.stack(scores).log_softmax(0)[0]
        n = int(mask.sum())
        assert abs(out.objective.contrastive_loss.item() - total.item()) <= 1e-4 * total.item()

        # diversity from fairseq's source: the target quantizer on masked frames, else the input
        # quantizer on valid frames, else none
        v_total = c.num_code_groups * c.num_codes_per_group
        if qt:
            ppl = _perplexity_by_hand(tg_probs.view(2, 24, *tg_probs.shape[1:])[mask])
        elif qi:
            ppl = _perplexity_by_hand(in_probs.view(2, 24, *in_probs.shape[1:])[valid])
        diversity = (v_total - ppl) / v_total if qt or qi else torch.zeros(())
        if qt or qi:
            assert abs(out.metrics["prob_perplexity"].item() - ppl.item()) <= 1e-4 * ppl.item()
        if qt and qi:  # fairseq: the target quantizer's perplexity wins; the input's is only logged
            in_ppl = _perplexity_by_hand(in_probs.view(2, 24, *in_probs.shape[1:])[valid])
            assert abs(out.metrics["input_prob_perplexity"].item() - in_ppl.item()) <= 1e-4 * in_ppl.item()
        penalty = (conv.pow(2) * valid[:, None, :]).sum() / (valid.sum() * conv.shape[1])
        by_hand = (total + n * (c.diversity_loss_weight * diversity + c.feature_penalty_weight * penalty)) / n
    assert abs(out.loss.item() - by_hand.item()) <= 1e-4 * by_hand.item()


def test_the_temperature_schedule_reaches_both_quantizers():
    m = model(True, True)
    temps = m.objective.before_update(1000)
    assert m.quantizer.temperature == m.wav2vec2.input_quantizer.temperature == temps["gumbel_temp"] < 2.0
    m.objective.set_temperature(0.7)
    assert m.wav2vec2.input_quantizer.temperature == 0.7


# ----------------------------------------------------------------------------- saving, fine-tuning
@pytest.mark.parametrize("qt,qi,same", COMBOS, ids=IDS)
def test_save_and_load_round_trip(tmp_path, qt, qi, same):
    m = model(qt, qi, same).eval()
    m.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m").eval()
    assert state_dict_equal(m.state_dict(), back.state_dict())
    assert read_weights(tmp_path / "m").keys() == m.state_dict().keys()  # training checkpoints read this
    wave, padding = batch()
    mask, negatives = _mask_and_negatives([24, 18], 10)
    with torch.no_grad():
        a = m(wave, padding, mask_indices=mask, negative_indices=negatives)
        b = back(wave, padding, mask_indices=mask, negative_indices=negatives)
    assert torch.equal(a.loss, b.loss)
    stored = load_file(tmp_path / "m" / "model.safetensors")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        tied = json.loads(f.metadata().get("tied", "{}"))
    if same:  # the shared quantizer is stored once, its second name listed as tied, and tied again on load
        shared = ("codebook", "weight_proj.bias", "weight_proj.weight")
        assert tied == {f"objective.quantizer.{k}": f"wav2vec2.{FP}.quantizer.{k}" for k in shared}
        assert not set(tied) & set(stored)
        assert back.quantizer is back.wav2vec2.input_quantizer
    else:
        assert tied == {} and stored.keys() == m.state_dict().keys()


@pytest.mark.parametrize(
    "qt,qi,same", [c for c in COMBOS if c[1]], ids=[i for i, c in zip(IDS, COMBOS) if c[1]]
)
def test_fine_tuning_keeps_the_input_quantizer_and_gives_the_same_features(tmp_path, qt, qi, same):
    m = model(qt, qi, same).eval()
    m.save_pretrained(tmp_path / "pre")
    wave, padding = batch()
    with torch.no_grad():
        expected = m.wav2vec2(wave, padding).last_hidden_state
    for ctc in (
        Wav2Vec2ForCTC.from_pretraining(m, vocab_size=12),
        Wav2Vec2ForCTC.from_pretraining(tmp_path / "pre", vocab_size=12),
        Wav2Vec2ForCTC.from_pretrained(tmp_path / "pre", vocab_size=12),
    ):
        assert isinstance(ctc.wav2vec2.feature_projection, QuantizedFeatureProjection)
        with torch.no_grad():
            assert torch.equal(ctc.eval().wav2vec2(wave, padding).last_hidden_state, expected)
    ctc.save_pretrained(tmp_path / "ctc")
    assert state_dict_equal(load_model(tmp_path / "ctc").state_dict(), ctc.state_dict())
    backbone = Wav2Vec2Model.from_pretrained(tmp_path / "pre")
    with torch.no_grad():
        assert torch.equal(backbone(wave, padding).last_hidden_state, expected)
    # w2v2-extract reads the same features (the input quantizer runs when only features are asked for)
    got = Extractor(m, ["last"]).extract_wave(wave[0])["last"]
    assert torch.allclose(got, expected[0], atol=1e-6)


# ----------------------------------------------------------------------------- units, health, training task
def test_units_come_from_the_input_quantizer_when_targets_are_continuous():
    m = model(False, True).eval()
    wave, _ = batch()
    units = Extractor(m, [], units=True).extract_wave(wave[0])["units"]
    with torch.no_grad():
        iq = m.wav2vec2(wave[:1]).input_quantization
    assert torch.equal(units, iq.hard_codes.view(24, 2))


def test_units_are_refused_in_one_line_without_a_codebook():
    with pytest.raises(ValueError, match="quantize_targets=false and quantize_input=false") as e:
        Extractor(model(False, False), ["last"], units=True)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("qt,qi", [(False, False), (False, True)], ids=["no-codebook", "input-only"])
def test_the_training_task_and_health_monitor_cope(qt, qi):
    from wav2vec2_lite.train.config import to_run_config
    from wav2vec2_lite.train.tasks import PretrainTask

    model_node = {"preset": "tiny", **deep_merge(MICRO_MODEL, {"contrastive": {"quantize_targets": qt}})}
    model_node["contrastive"]["quantize_input"] = qi
    task = PretrainTask(
        to_run_config({"task": "pretrain", "model": model_node, "data": {"manifest_dir": "/x"}})
    )
    assert task.reference["code_groups"] == (2.0 if qi else 0.0)
    m = task.build_model().eval()
    wave, padding = batch()
    sums = task.eval_batch(m, {"waveform": wave, "padding_mask": padding}, torch.Generator().manual_seed(0))
    summary = task.summarize(sums)
    assert ("code_perplexity" in summary) is qi and summary["code_perplexity_max"] == (32.0 if qi else 0.0)
    monitor = task.health_monitor(HealthConfig(grace_updates=0, window=1), warmup_updates=0)
    warnings = monitor.check_train(5, {**summary, "grad_norm": 1.0}) + monitor.check_valid(5, summary)
    assert "codebook_collapse" not in {w.symptom for w in warnings} or qi


def test_fine_tuning_anneals_the_input_quantizer_from_its_own_update_count():
    """As fairseq's set_num_updates on the fine-tuned model: the input quantizer's Gumbel
    temperature follows the pretraining schedule again, counted in fine-tuning updates."""
    from wav2vec2_lite.modules.quantizer import gumbel_temperature
    from wav2vec2_lite.train.config import to_run_config
    from wav2vec2_lite.train.tasks import FinetuneTask

    schedule = (2.0, 0.5, 0.99)
    ctc = Wav2Vec2ForCTC.from_pretraining(
        model(True, True, contrastive={"gumbel_temperature": schedule}), vocab_size=12
    )
    task = FinetuneTask.__new__(FinetuneTask)  # its schedule needs only the config, not a corpus
    task.cfg = to_run_config({"task": "finetune", "data": {"manifest_dir": "/x"}})
    quantizer = ctc.wav2vec2.feature_projection.quantizer
    for update in (0, 50, 500):
        state = task.before_update(ctc, update)
        assert quantizer.temperature == state["input_gumbel_temp"] == gumbel_temperature(update, *schedule)
    assert quantizer.temperature == 0.5  # the floor, reached after ~70 updates
    plain = Wav2Vec2ForCTC.from_pretraining(model(True, False), vocab_size=12)
    assert "input_gumbel_temp" not in task.before_update(plain, 5)  # nothing to anneal


@pytest.mark.parametrize("qt,qi,same", [COMBOS[1], COMBOS[4]], ids=[IDS[1], IDS[4]])
def test_a_short_training_run_validates_saves_and_resumes(tmp_path, qt, qi, same):
    from test_train_loop import make_cfg

    from wav2vec2_lite.train.toy_data import make_toy_corpus
    from wav2vec2_lite.train.trainer import Trainer

    corpus = make_toy_corpus(tmp_path / "toy", train=8, valid=4, seed=0, min_words=2, max_words=3)
    switches = {"contrastive": {"quantize_targets": qt, "quantize_input": qi, "same_quantizer": same}}
    cfg = make_cfg("pretrain", corpus, model=switches, trainer={"max_updates": 3, "valid_interval": 2})
    valid = Trainer(cfg, tmp_path / "run").fit()["valid"]
    assert valid["contrastive_loss"] > 0 and ("diversity_loss" in valid) is (qt or qi)
    saved = load_model(tmp_path / "run" / "checkpoints" / "last")
    assert saved.config.contrastive == config(qt, qi, same).contrastive
    assert saved.quantizer is (saved.wav2vec2.input_quantizer if same else None)
    more = make_cfg("pretrain", corpus, model=switches, trainer={"max_updates": 4, "valid_interval": 0})
    assert Trainer(more, tmp_path / "run").fit()["update"] == 4  # resumed from the saved checkpoint


def test_health_monitor_without_a_codebook_has_no_code_rule():
    mon = HealthMonitor(HealthConfig(grace_updates=0, window=1), task="pretrain", num_code_groups=0)
    stats = {"contrastive_loss": 1.0, "accuracy": 0.5, "grad_norm": 1.0, "code_perplexity_max": 0.0}
    assert mon.check_train(10, {**stats, "code_perplexity": 0.0}) == []
    assert mon.check_valid(10, {"code_perplexity_set": 0.0, "code_perplexity_max": 0.0}) == []


# ----------------------------------------------------------------------------- Hydra
def test_hydra_overrides_reach_the_model():
    from hydra import compose, initialize_config_dir

    from wav2vec2_lite.train.config import build_model_config, register_configs, to_run_config

    register_configs()

    def model_config(*overrides):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name="pretrain_tiny", overrides=["data.manifest_dir=/x", *overrides])
        return build_model_config(to_run_config(cfg).model)

    c = model_config("model.contrastive.quantize_targets=false").contrastive
    assert (c.quantize_targets, c.quantize_input, c.gumbel_temperature) == (False, False, (2.0, 0.5, 0.995))
    c = model_config(
        "model.contrastive.quantize_input=true", "model.contrastive.same_quantizer=true"
    ).contrastive
    assert c.quantize_targets and c.quantize_input and c.same_quantizer
    with pytest.raises(ConfigError, match="same_quantizer"):
        model_config("model.contrastive.same_quantizer=true")


# ----------------------------------------------------------------------------- fairseq checkpoints
fairseq_tests = pytest.importorskip(
    "test_fairseq"
)  # its fixtures: transformers tensors under fairseq's names


def _fairseq_pretraining(tmp_path, hf_extra: dict, **model_changes):
    """A fairseq pretraining checkpoint: a transformers model's tensors under fairseq's names, edited
    below per setting, and the hydra-era cfg with ``model_changes``."""
    hf = fairseq_tests._hf("pretraining", "group_postln", **hf_extra)
    state = fairseq_tests.fairseq_names(hf, "group_postln", ctc=False)
    mcfg = fairseq_tests.pretraining_model_cfg("group_postln", **model_changes)
    return hf, state, mcfg


def _save(tmp_path, state, mcfg, name="fs.pt"):
    path = tmp_path / name
    torch.save(fairseq_tests._checkpoint(state, cfg=fairseq_tests._hydra_cfg(mcfg, [0.1, 10.0], False)), path)
    return path


def _input_side(state: dict, prefix: str, vq_dim: int, g: int = 2, v: int = 16, embed: int = 48) -> None:
    """fairseq's input quantizer and project_inp (shapes from its GumbelVectorQuantizer), in place of
    post_extract_proj."""
    gen = torch.Generator().manual_seed(11)
    del state[f"{prefix}post_extract_proj.weight"], state[f"{prefix}post_extract_proj.bias"]
    state[f"{prefix}input_quantizer.vars"] = torch.rand(1, g * v, vq_dim // g, generator=gen)
    state[f"{prefix}input_quantizer.weight_proj.weight"] = torch.randn(g * v, embed, generator=gen)
    state[f"{prefix}input_quantizer.weight_proj.bias"] = 0.1 * torch.randn(g * v, generator=gen)
    state[f"{prefix}project_inp.weight"] = 0.1 * torch.randn(64, vq_dim, generator=gen)
    state[f"{prefix}project_inp.bias"] = 0.1 * torch.randn(64, generator=gen)


def _transformer_input_by_hand(hf, state: dict, prefix: str, wave: torch.Tensor) -> torch.Tensor:
    """fairseq's forward up to the encoder, from the checkpoint's tensors: layer_norm, then the input
    quantizer's argmax codevectors (eval), then project_inp."""
    with torch.no_grad():
        feats = hf.wav2vec2.feature_extractor(wave).transpose(1, 2)
        feats = F.layer_norm(
            feats, (48,), state[f"{prefix}layer_norm.weight"], state[f"{prefix}layer_norm.bias"]
        )
        logits = feats @ state[f"{prefix}input_quantizer.weight_proj.weight"].T
        logits = (logits + state[f"{prefix}input_quantizer.weight_proj.bias"]).view(*feats.shape[:2], 2, 16)
        rows = logits.argmax(-1) + torch.arange(2) * 16  # group g's entries follow group g-1's in vars
        codevectors = state[f"{prefix}input_quantizer.vars"][0][rows].flatten(-2)
        return codevectors @ state[f"{prefix}project_inp.weight"].T + state[f"{prefix}project_inp.bias"]


@pytest.mark.parametrize("same", [False, True], ids=["separate", "shared"])
def test_fairseq_checkpoint_with_a_quantized_input_loads(tmp_path, same, caplog):
    from wav2vec2_lite.interop import load_fairseq

    # shared: fairseq sizes project_inp by final_dim (24), so its quantizer must be 24 wide (latent_dim 0)
    hf, state, mcfg = _fairseq_pretraining(
        tmp_path,
        {"codevector_dim": 24} if same else {},
        quantize_input=True,
        same_quantizer=same,
        latent_dim=0 if same else 32,
    )
    if same:  # fairseq's state dict holds the shared module under both names
        _input_side(state, "", 24)
        for key in ("vars", "weight_proj.weight", "weight_proj.bias"):
            state[f"input_quantizer.{key}"] = state[f"quantizer.{key}"]
    else:
        _input_side(state, "", 32)
    with caplog.at_level(logging.WARNING):
        ours = load_fairseq(_save(tmp_path, state, mcfg))
    assert "ignoring" not in caplog.text  # every tensor found its place
    c = ours.config.contrastive
    assert (c.quantize_targets, c.quantize_input, c.same_quantizer) == (True, True, same)
    assert c.input_codevector_dim == (0 if same else 32)
    assert (ours.quantizer is ours.wav2vec2.input_quantizer) is same

    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(2))
    by_hand = _transformer_input_by_hand(hf, state, "", wave)
    with torch.no_grad():
        out = ours.wav2vec2(wave)
        reference = hf.wav2vec2.encoder(by_hand).last_hidden_state  # transformers' encoder on that input
    assert (out.last_hidden_state - reference).abs().max().item() <= 1e-4

    if same:  # a state dict holding the shared quantizer once loads too
        for key in ("vars", "weight_proj.weight", "weight_proj.bias"):
            del state[f"input_quantizer.{key}"]
        again = load_fairseq(_save(tmp_path, state, mcfg, "once.pt"))
        assert state_dict_equal(again.state_dict(), ours.state_dict())


def test_fairseq_checkpoint_with_continuous_targets_loads(tmp_path, caplog):
    from wav2vec2_lite.interop import load_fairseq

    hf, state, mcfg = _fairseq_pretraining(tmp_path, {}, quantize_targets=False)
    for key in ("vars", "weight_proj.weight", "weight_proj.bias"):
        del state[f"quantizer.{key}"]
    state["project_q.weight"] = torch.randn(24, 48)  # Linear(embed, final_dim): the features, unquantized
    state["project_q.bias"] = torch.randn(24)
    with caplog.at_level(logging.WARNING):
        ours = load_fairseq(_save(tmp_path, state, mcfg))
    assert "ignoring" not in caplog.text and ours.quantizer is None
    assert torch.equal(ours.objective.project_q.weight, state["project_q.weight"])
    wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the backbone is the standard one: transformers reproduces it
        assert (
            ours.wav2vec2(wave).last_hidden_state - hf.wav2vec2(wave).last_hidden_state
        ).abs().max() <= 1e-4


def test_fairseq_ctc_checkpoint_with_a_quantized_input_keeps_it(tmp_path):
    from wav2vec2_lite.interop import load_fairseq

    hf = fairseq_tests._hf("ctc", "group_postln")
    state = fairseq_tests.fairseq_names(hf, "group_postln", ctc=True)
    prefix = "w2v_encoder.w2v_model."
    _input_side(state, prefix, 64)  # latent_dim 0: a separate input quantizer is encoder_embed_dim wide
    pre = fairseq_tests.pretraining_model_cfg("group_postln", quantize_input=True, latent_dim=0)
    cfg = {
        "task": {"_name": "audio_finetuning", "normalize": False},
        "criterion": {"_name": "ctc", "zero_infinity": True},
        "model": {
            "_name": "wav2vec_ctc",
            **fairseq_tests.FT,
            "w2v_args": fairseq_tests._hydra_cfg(pre, [0.1], False),
        },
    }
    path = tmp_path / "ctc.pt"
    torch.save(fairseq_tests._checkpoint(state, cfg=cfg), path)
    ours = load_fairseq(path)
    assert isinstance(ours, Wav2Vec2ForCTC)
    assert isinstance(ours.wav2vec2.feature_projection, QuantizedFeatureProjection)
    wave = torch.randn(1, 4000, generator=torch.Generator().manual_seed(4))
    by_hand = _transformer_input_by_hand(hf, state, prefix, wave)
    with torch.no_grad():
        expected = hf.lm_head(hf.wav2vec2.encoder(by_hand).last_hidden_state)
        assert (ours(wave).logits - expected).abs().max().item() <= 1e-4


# ----------------------------------------------------------------------------- Hugging Face export
def test_hf_export_refuses_a_quantized_input_in_one_line(tmp_path):
    pytest.importorskip("transformers")
    from wav2vec2_lite.data.tokenizer import CharTokenizer
    from wav2vec2_lite.interop.hf import to_hf
    from wav2vec2_lite.interop.hf_export import export_ctc_to_hf

    m = model(True, True)
    for target in (m, m.wav2vec2, Wav2Vec2ForCTC.from_pretraining(m, vocab_size=12)):
        with pytest.raises(ConfigError, match="no input quantizer") as e:
            to_hf(target)
        assert "\n" not in str(e.value)
    tokenizer = CharTokenizer(["|", "A", "B"])
    ctc = Wav2Vec2ForCTC.from_pretraining(m, vocab_size=len(tokenizer))
    with pytest.raises(ConfigError, match="no input quantizer"):
        export_ctc_to_hf(ctc, tokenizer, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # refused before anything is written


def test_hf_export_of_continuous_targets_takes_the_standard_backbone():
    pytest.importorskip("transformers")
    from wav2vec2_lite.interop.hf import to_hf

    m = model(False, False).eval()
    with pytest.raises(ConfigError, match="always quantizes its targets"):
        to_hf(m)
    hf = to_hf(m.wav2vec2)  # the backbone is standard: it exports with the same numbers
    wave, _ = batch()
    with torch.no_grad():
        assert (hf(wave[:1]).last_hidden_state - m.wav2vec2(wave[:1]).last_hidden_state).abs().max() <= 1e-4


def test_bf16_inference_keeps_the_input_codebook_logits_in_float32():
    """cast_for_inference stores Linear weights in bf16 but not a quantizer's: the cast model's
    input quantizer picks the float32 model's codes from the same features."""
    from wav2vec2_lite.inference_dtype import cast_for_inference

    m = model(True, True).eval()
    wave, padding = batch()
    with torch.no_grad():
        out = m.wav2vec2(wave, padding)
        normed = out.extract_features.flatten(0, 1)
        cast_for_inference(m, "bfloat16")
        got = m.wav2vec2.feature_projection.quantizer(normed).codes
    projection = m.wav2vec2.feature_projection
    assert all(p.dtype == torch.float32 for p in projection.quantizer.parameters())
    assert projection.project_inp.weight.dtype == torch.bfloat16
    assert torch.equal(got, out.input_quantization.codes)
