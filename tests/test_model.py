"""Unit tests of the core modules: shapes, padding, masking statistics, negatives, gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from wav2vec2_lite import ConfigError, Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model
from wav2vec2_lite.modules.feature_encoder import conv_output_lengths
from wav2vec2_lite.objectives.configs import ContrastiveConfig
from wav2vec2_lite.objectives.masking import compute_span_mask, sample_cross_negatives, sample_negatives
from wav2vec2_lite.serialization import CheckpointError, load_model, save_model

from _helpers import deep_merge
from _tolerance import (
    assert_all_float32_close,
    assert_float32_close,
    bf16_rounding,
    float32_excess,
    nudged,
    worst_float32_excess,
)


def small(**kw) -> Wav2Vec2Config:
    base = dict(
        conv_dim=(16, 32, 32, 32, 32, 32, 32),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_dim=128,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        layerdrop=0.0,
        contrastive=dict(num_codes_per_group=16, codevector_dim=32, final_dim=24, num_negatives=10),
    )
    return Wav2Vec2Config.tiny(**deep_merge(base, kw))


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("mask_time_prob", 1.5, "mask_time_prob"),
        ("conv_kernel", (10, 3), "conv_kernel"),
        ("num_heads", 5, "num_heads"),
        ("contrastive", {"codevector_dim": 33}, r"contrastive\.codevector_dim"),
        ("feat_extract_norm", "batch", "feat_extract_norm"),
        ("contrastive", {"gumbel_temperature": (0.5, 2.0, 0.9)}, r"contrastive\.gumbel_temperature"),
        (
            "contrastive",
            {"num_negativs": 5},
            r"Wav2Vec2Config\.contrastive: unknown key\(s\) \['num_negativs'\]",
        ),
        (
            "num_negatives",
            5,
            r"Wav2Vec2Config\.num_negatives is now Wav2Vec2Config\.contrastive\.num_negatives",
        ),
    ],
)
def test_config_errors_name_the_key(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        small(**{key: value})


def test_objective_settings_are_typed_sub_configs_merged_key_by_key():
    cfg = Wav2Vec2Config.tiny(contrastive={"num_negatives": 7})
    assert isinstance(cfg.contrastive, ContrastiveConfig) and cfg.contrastive.num_negatives == 7
    assert cfg.contrastive.num_codes_per_group == 64  # the rest from the tiny preset
    assert cfg.replace(contrastive={"final_dim": 64}).contrastive == ContrastiveConfig(
        num_codes_per_group=64, codevector_dim=128, final_dim=64, num_negatives=7
    )
    assert Wav2Vec2Config.from_dict(cfg.to_dict()) == cfg


def test_config_round_trip_and_unknown_key():
    cfg = Wav2Vec2Config.large()
    assert Wav2Vec2Config.from_dict(cfg.to_dict()) == cfg
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.layer_norm_first) == (24, 1024, 16, True)
    base = Wav2Vec2Config.base()
    assert (base.num_heads, base.frame_stride, base.receptive_field) == (12, 320, 400)
    with pytest.raises(ConfigError, match="unknown key"):
        Wav2Vec2Config.from_dict({"hidden_sise": 3})


# ---------------------------------------------------------------- feature encoder
def test_output_lengths_match_conv_shapes():
    cfg = small()
    model = Wav2Vec2Model(cfg).eval()
    for n in (400, 401, 719, 720, 3333, 16000):
        frames = model.feature_encoder(torch.randn(1, n)).shape[-1]
        assert frames == int(model.feature_output_lengths(torch.tensor([n]))[0])
    assert (
        conv_output_lengths(torch.tensor([16000]), (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)).item() == 49
    )


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_padded_batch_equals_one_at_a_time(norm):
    """Padding-invariant batching (masked GroupNorm by default): each utterance's logits equal its
    own, alone, up to float32 rounding (other shapes run other kernels; tests/_tolerance.py)."""
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(small(feat_extract_norm=norm, vocab_size=10)).eval()
    exact = copy.deepcopy(model).double()
    lengths = [5000, 3100, 1800]
    waves = [torch.randn(n) for n in lengths]
    batch = torch.zeros(3, max(lengths))
    pad = torch.ones(3, max(lengths), dtype=torch.bool)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
        pad[i, : len(w)] = False
    with torch.no_grad():
        out = model(batch, pad)
        for i, w in enumerate(waves):
            single, want = model(w[None]).logits[0], exact(w[None].double()).logits[0]
            assert out.output_lengths[i].item() == single.shape[0]
            assert_float32_close(out.logits[i, : single.shape[0]], single, want, f"utterance {i}")
        nudged_out = nudged(model, "wav2vec2.feature_encoder.conv_layers.0.conv.weight")(batch, pad).logits
        assert (
            float32_excess(
                nudged_out[0, : out.output_lengths[0]],
                model(waves[0][None]).logits[0],
                exact(waves[0][None].double()).logits[0],
            )
            > 1
        )  # the bound catches a 1e-3 error on one weight


def test_reference_group_norm_mode_differs_under_padding():
    torch.manual_seed(0)
    cfg = small(masked_group_norm=False)
    model = Wav2Vec2Model(cfg).eval()
    w = torch.randn(1, 3000)
    batch = torch.cat([w, torch.zeros(1, 1000)], 1)
    pad = torch.zeros(1, 4000, dtype=torch.bool)
    pad[0, 3000:] = True
    with torch.no_grad():
        single = model(w).last_hidden_state
        padded = model(batch, pad).last_hidden_state[:, : single.shape[1]]
    assert (single - padded).abs().max() > 1e-3  # the reference behaviour this library fixes by default


def test_input_errors_are_clear():
    model = Wav2Vec2Model(small()).eval()
    with pytest.raises(ValueError, match="waveform\\[None\\]"):
        model(torch.randn(1000))
    with pytest.raises(ValueError, match="receptive field"):
        model(torch.randn(1, 399))
    left = torch.zeros(1, 1000, dtype=torch.bool)
    left[0, :10] = True
    with pytest.raises(ValueError, match="right padding"):
        model(torch.randn(1, 1000), left)


def test_feature_grad_mult_scales_encoder_gradient():
    grads = {}
    for mult in (1.0, 0.1):
        torch.manual_seed(0)
        model = Wav2Vec2Model(
            small(feature_grad_mult=mult, dropout=0.0, dropout_input=0.0, attention_dropout=0.0)
        )
        model(torch.randn(1, 2000)).last_hidden_state.sum().backward()
        grads[mult] = model.feature_encoder.conv_layers[0].conv.weight.grad.clone()
    assert torch.allclose(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-7)
    torch.manual_seed(0)
    frozen = Wav2Vec2Model(small(feature_grad_mult=0.0))
    frozen(torch.randn(1, 2000)).last_hidden_state.sum().backward()
    assert frozen.feature_encoder.conv_layers[0].conv.weight.grad is None


# ---------------------------------------------------------------- masking and negatives
def test_span_mask_statistics_and_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([500, 300])
    fractions = []
    for _ in range(200):
        mask = compute_span_mask(2, 500, 0.65, 10, lengths=lengths, min_masks=2, generator=g)
        assert not mask[1, 300:].any()
        fractions.append(mask[0].float().mean().item())
    expected = 1 - (1 - 0.065) ** 10  # each frame is covered by one of ~M possible starts
    assert abs(sum(fractions) / len(fractions) - expected) < 0.03


def test_span_mask_on_short_audio():
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask(3, 8, 0.65, 10, lengths=torch.tensor([8, 3, 1]), min_masks=2, generator=g)
    assert mask[0].any() and not mask[0].all()
    assert mask[1].any() and not mask[1].all()
    assert not mask[1, 3:].any() and not mask[2, 1:].any()


def test_negatives_come_from_other_masked_frames():
    g = torch.Generator().manual_seed(0)
    mask = compute_span_mask(2, 120, 0.65, 10, lengths=torch.tensor([120, 70]), min_masks=2, generator=g)
    neg = sample_negatives(mask, 50, generator=g)
    assert neg.shape == (2, 120, 50)
    for b in range(2):
        for t in mask[b].nonzero().flatten().tolist():
            assert (neg[b, t] != t).all()  # never the positive frame itself
            assert mask[b, neg[b, t]].all()  # only masked frames (so never padding)
    cross = sample_cross_negatives(mask, 5, generator=g)
    flat = mask.flatten()
    for i in flat.nonzero().flatten().tolist():
        assert (cross.view(-1, 5)[i] != i).all() and flat[cross.view(-1, 5)[i]].all()


def test_negative_indices_are_validated():
    model = Wav2Vec2ForPreTraining(small()).eval()
    wave = torch.randn(1, 4000)
    frames = int(model.feature_output_lengths(torch.tensor([4000])))
    mask = torch.zeros(1, frames, dtype=torch.bool)
    mask[0, 2:8] = True
    neg = torch.zeros(1, frames, 10, dtype=torch.long)
    neg[0, 3, 4] = frames + 5
    with pytest.raises(ValueError, match=r"negative_indices\[0, 3, 4\]"):
        model(wave, mask_indices=mask, negative_indices=neg)


# ---------------------------------------------------------------- pretraining model
def test_pretraining_loss_parts_and_gradients():
    torch.manual_seed(0)
    cfg = small()
    model = Wav2Vec2ForPreTraining(cfg).train()
    g = torch.Generator().manual_seed(1)
    wave = torch.randn(2, 6000)
    pad = torch.zeros(2, 6000, dtype=torch.bool)
    pad[1, 4500:] = True
    out = model(wave, pad, generator=g)
    n = out.num_masked.float()
    c, parts = cfg.contrastive, out.objective
    expected = (
        parts.contrastive_loss / n
        + c.diversity_loss_weight * parts.diversity_loss
        + c.feature_penalty_weight * parts.feature_penalty
    )
    assert torch.allclose(out.loss, expected)
    assert torch.allclose(out.loss_sum, out.loss * n)
    assert out.logits.shape == (int(n), 1 + c.num_negatives)
    top = (out.logits.argmax(-1) == 0) & (
        out.logits.argmin(-1) != 0
    )  # fairseq: the positive wins, no all-tie
    assert out.num_correct.item() == int(top.sum()) and torch.allclose(out.accuracy, top.float().mean())
    assert 1 <= out.code_perplexity.item() <= c.num_code_groups * c.num_codes_per_group
    # at random init the contrastive loss is near chance, ln(K + 1)
    assert abs((parts.contrastive_loss / n).item() - math.log(c.num_negatives + 1)) < 1.0
    frames = model.feature_output_lengths(torch.tensor([4500]))
    assert not out.mask_indices[1, int(frames) :].any()
    out.loss.backward()
    # straight-through Gumbel: gradients reach the quantizer's projection and the picked entries only
    assert model.quantizer.weight_proj.weight.grad.abs().sum() > 0
    used = torch.zeros(c.num_code_groups, c.num_codes_per_group, dtype=torch.bool)
    codes = out.codes[out.codes[..., 0] >= 0]
    for grp in range(c.num_code_groups):
        used[grp, codes[:, grp]] = True
    row_grad = model.quantizer.codebook.grad.abs().sum(-1) > 0
    assert row_grad[used].all() and not row_grad[~used].any()
    assert model.wav2vec2.feature_encoder.conv_layers[0].conv.weight.grad.abs().sum() > 0


def test_same_generator_same_masks_and_loss():
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small()).eval()
    wave = torch.randn(2, 5000)
    a = model(wave, generator=torch.Generator().manual_seed(3))
    b = model(wave, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.mask_indices, b.mask_indices) and torch.equal(
        a.objective.negative_indices, b.objective.negative_indices
    )
    assert torch.equal(a.loss, b.loss)


def test_distractors_identical_to_positive_are_masked_out():
    torch.manual_seed(0)
    cfg = small(
        contrastive=dict(num_code_groups=1, num_codes_per_group=2, codevector_dim=16)
    )  # many identical codes
    model = Wav2Vec2ForPreTraining(cfg).eval()
    out = model(torch.randn(1, 6000), generator=torch.Generator().manual_seed(0))
    masked = out.codes[out.mask_indices]  # (N, 1)
    b, t = out.mask_indices.nonzero(as_tuple=True)
    neg_codes = out.codes[b[:, None], out.objective.negative_indices[b, t]][..., 0]  # (N, K)
    twin = neg_codes == masked
    assert twin.any()
    assert torch.isinf(out.logits[:, 1:][twin]).all() and torch.isfinite(out.logits[:, 1:][~twin]).all()


def test_layerdrop_only_in_training():
    torch.manual_seed(0)
    model = Wav2Vec2Model(small(layerdrop=0.9, num_layers=4)).eval()
    wave = torch.randn(1, 3000)
    with torch.no_grad():
        a = model(wave).last_hidden_state
        b = model(wave).last_hidden_state
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(5)
    with torch.no_grad():
        hs = model(wave, output_hidden_states=True).hidden_states
    assert any(torch.equal(x, y) for x, y in zip(hs[:-1], hs[1:]))  # some block was skipped


def test_gumbel_temperature_schedule_lives_on_the_contrastive_objective():
    model = Wav2Vec2ForPreTraining(small(contrastive=dict(gumbel_temperature=(2.0, 0.5, 0.999995))))
    objective = model.objective
    assert objective.temperature_at(0) == 2.0
    assert objective.temperature_at(10**7) == 0.5
    assert abs(objective.temperature_at(1000) - 2.0 * 0.999995**1000) < 1e-12
    objective.set_temperature(1.25)
    assert model.quantizer.temperature == 1.25
    assert not hasattr(model, "set_gumbel_temperature")  # the generic model knows no Gumbel


# ---------------------------------------------------------------- CTC model
def test_ctc_from_pretraining_and_freezing(tmp_path):
    torch.manual_seed(0)
    pre = Wav2Vec2ForPreTraining(small())
    save_model(pre, tmp_path / "pre")
    ctc = Wav2Vec2ForCTC.from_pretraining(tmp_path / "pre", vocab_size=12, mask_time_prob=0.3)
    for k, v in pre.wav2vec2.state_dict().items():
        assert torch.equal(v, ctc.wav2vec2.state_dict()[k])
    assert ctc.config.vocab_size == 12 and ctc.config.mask_time_prob == 0.3
    ctc.freeze_feature_encoder()
    wave = torch.randn(2, 5000)
    labels = torch.tensor([[3, 4, 5], [6, 7, -100]])
    out = ctc(wave, labels=labels, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None for p in ctc.wav2vec2.feature_encoder.parameters())
    assert ctc.wav2vec2.context.layers[0].attention.qkv.weight.grad is not None
    ctc.zero_grad(set_to_none=True)
    ctc.set_encoder_frozen(True)
    ctc(wave, labels=labels).loss.backward()
    assert ctc.lm_head.weight.grad is not None
    assert all(p.grad is None for p in ctc.wav2vec2.parameters())


def test_ctc_infinite_loss_is_zeroed_and_labels_checked():
    model = Wav2Vec2ForCTC(small(vocab_size=8)).eval()
    wave = torch.randn(1, 1000)  # 2 frames, label of 6: impossible alignment
    out = model(wave, labels=torch.tensor([[1, 2, 3, 4, 5, 6]]))
    assert out.loss.item() == 0.0
    with pytest.raises(ValueError, match="vocab_size"):
        model(wave, labels=torch.tensor([[9]]))


# ---------------------------------------------------------------- serialization
def test_save_load_round_trip_and_corruption(tmp_path):
    model = Wav2Vec2ForCTC(small(vocab_size=9))
    save_model(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert type(back) is Wav2Vec2ForCTC and back.config == model.config
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_every_load_checks_the_weights_checksum_and_finiteness(tmp_path, caplog):
    """config.json records the weights' sha256: bytes changed in place (same size) are an error
    naming the file; a folder without the checksum (older/foreign) loads with a notice;
    NaN weights are refused on save and on load."""
    import json
    import logging

    from wav2vec2_lite.serialization import file_sha256, read_weights

    model = Wav2Vec2ForCTC(small(vocab_size=9))
    folder = save_model(model, tmp_path / "m")
    info = json.loads((folder / "config.json").read_text())
    weights = folder / "model.safetensors"
    assert info["weights_sha256"] == file_sha256(weights)
    data = bytearray(weights.read_bytes())
    data[-4096:] = b"\xff" * 4096  # same size, other bytes
    weights.write_bytes(bytes(data))
    for load in (load_model, read_weights):
        with pytest.raises(
            CheckpointError, match=r"model.safetensors: corrupted: its sha256 .* does not match"
        ):
            load(folder)
    # an older (or foreign) folder without the checksums: loads, with a one-line notice
    save_model(model, folder)
    info = json.loads((folder / "config.json").read_text())
    del info["weights_sha256"]
    info["format_version"] = 3  # format_version 4 folders carry checksums.json (tests/test_integrity.py)
    (folder / "config.json").write_text(json.dumps(info))
    (folder / "checksums.json").unlink()
    with caplog.at_level(logging.INFO, logger="wav2vec2_lite.serialization"):
        back = load_model(folder)
    assert torch.equal(back.lm_head.weight, model.lm_head.weight)
    assert any("no weights_sha256" in r.getMessage() for r in caplog.records)
    # non-finite weights: refused when saving, and when a file holding them is loaded
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite weights.*lm_head.weight"):
        save_model(model, tmp_path / "nan")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    with pytest.raises(
        CheckpointError, match=r"model.safetensors: non-finite weights \(NaN/Inf\) in lm_head.weight"
    ):
        load_model(folder)


def _encoder_grads(enc, wave, lean: bool, autocast: bool = False):
    enc.lean_backward = lean
    enc.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = enc(wave)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weight).sum().backward()
    return out.detach().float(), [p.grad.clone() for p in enc.parameters()]


@pytest.mark.parametrize("norm,grad_mult", [("group", 0.1), ("group", 1.0), ("layer", 1.0)])
def test_lean_conv_stack_is_exactly_the_module_path(norm, grad_mult):
    """LeanConvStack (conv outputs kept, norm + GELU recomputed in backward) gives the very
    numbers autograd gives on the module path: output and every parameter gradient."""
    from wav2vec2_lite.modules.feature_encoder import FeatureEncoder

    torch.manual_seed(0)
    cfg = Wav2Vec2Config.tiny(feat_extract_norm=norm, feature_grad_mult=grad_mult, conv_bias=norm == "layer")
    enc = FeatureEncoder(cfg)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    wave = torch.randn(2, 8000)
    ref_out, ref_grads = _encoder_grads(enc, wave, lean=False)
    out, grads = _encoder_grads(enc, wave, lean=True)
    assert torch.equal(out, ref_out)
    assert len(grads) == len(ref_grads) == len(list(enc.parameters()))
    for g, r in zip(grads, ref_grads):
        assert torch.equal(g, r)
    # CPU bf16 autocast: both paths run the convs in float32 (modules/conv_precision.py; the bf16
    # unfolded convs are low_precision_speed's, tests/test_low_precision_speed.py): float32's numbers
    for lean in (True, False):
        out, grads = _encoder_grads(enc, wave, lean=lean, autocast=True)
        assert torch.equal(out, ref_out)
        assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@pytest.mark.parametrize("lean", [True, False])
def test_no_convolution_goes_through_onednn_bf16_under_cpu_autocast(lean):
    """oneDNN's bf16 convs on AVX-512-bf16 / AMX CPUs are wrong for some shapes (errors as large
    as the output, not rounding): a 64-wide positional conv with 16 groups and kernel 16, and
    ungrouped convs with 16 input channels and kernel 4 or 16. These shapes here: under CPU
    autocast the positional conv (4 channels per group) and the feature encoder give the float32
    result, on any CPU (the encoder's bf16 unfolded matmuls of ``low_precision_speed``:
    tests/test_low_precision_speed.py)."""
    torch.manual_seed(0)
    cfg = small(
        hidden_size=64,
        num_heads=2,
        ffn_dim=128,
        conv_dim=[16, 16, 16],
        conv_kernel=[10, 4, 16],
        conv_stride=[5, 4, 4],
        pos_conv_kernel=16,
        pos_conv_groups=16,
        feature_grad_mult=1.0,
    )
    model = Wav2Vec2Model(cfg)
    model.feature_encoder.lean_backward = lean
    wave = torch.randn(2, 16000)
    x = torch.randn(2, 60, 64)
    with torch.set_grad_enabled(lean):
        ref_feats, ref_pos = model.feature_encoder(wave), model.context.pos_conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats, pos = model.feature_encoder(wave), model.context.pos_conv(x)
    assert pos.dtype == feats.dtype == torch.float32
    torch.testing.assert_close(pos, ref_pos, rtol=1e-5, atol=1e-5)
    assert torch.equal(feats, ref_feats)


@pytest.mark.parametrize("hidden, groups", [(64, 2), (96, 2), (512, 16)])
def test_positional_conv_with_32_or_more_channels_per_group_runs_bf16_under_cpu_autocast(hidden, groups):
    """From 32 input channels per group (BASE 48, LARGE 64) oneDNN's bf16 grouped conv was right
    on every shape measured: under CPU autocast the positional conv runs there in bf16, its
    output and gradients within bf16 rounding of float32 (a wrong kernel errs by O(1))."""
    from wav2vec2_lite.modules.conv_precision import onednn_low_precision_ok

    torch.manual_seed(0)
    pos = Wav2Vec2Model(
        small(hidden_size=hidden, num_heads=2, pos_conv_kernel=128, pos_conv_groups=groups)
    ).context.pos_conv
    assert onednn_low_precision_ok(pos.conv)
    x = torch.randn(2, 50, hidden, requires_grad=True)
    ref = pos(x)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pos(x)
        rounding = bf16_rounding(lambda: pos(x), ref)
    (grad,) = torch.autograd.grad(out.float().square().sum(), x)
    assert out.dtype == torch.bfloat16
    print(
        f"pos conv under bf16 autocast: {_rel(out, ref):.3g} (grad {_rel(grad, ref_grad):.3g}) "
        f"vs exact-kernel rounding {rounding:.3g}"
    )
    assert 0 < _rel(out, ref) <= 2 * rounding and _rel(grad, ref_grad) <= 3 * rounding


def test_lean_conv_stack_frozen_padded_and_double_backward():
    from wav2vec2_lite.modules.feature_encoder import FeatureEncoder

    torch.manual_seed(0)
    enc = FeatureEncoder(Wav2Vec2Config.tiny())
    wave = torch.randn(2, 8000)
    # a padded batch with masked GroupNorm takes the module path, with gradients
    out = enc(wave, torch.tensor([8000, 6000]))
    assert out.grad_fn is not None and "LeanConvStack" not in type(out.grad_fn).__name__
    assert "LeanConvStack" in type(enc(wave).grad_fn).__name__
    # frozen: no graph at all
    for p in enc.parameters():
        p.requires_grad_(False)
    assert enc(wave).grad_fn is None
    for p in enc.parameters():
        p.requires_grad_(True)
    out = enc(wave).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        out.backward()


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_lean_conv_stack_chunked_backward_matches(norm):
    """Above ``backward_chunk_elements`` a conv's gradients are summed over overlapping time
    chunks (bounded kernel workspace): the same gradients up to summation order, input included."""
    from wav2vec2_lite.modules.feature_encoder import FeatureEncoder

    torch.manual_seed(0)
    enc = FeatureEncoder(
        Wav2Vec2Config.tiny(feat_extract_norm=norm, conv_bias=norm == "layer", feature_grad_mult=0.1)
    )
    wave = torch.randn(2, 16000, requires_grad=True)
    results = []
    for lean, chunk in ((False, 0), (True, 1000)):
        enc.lean_backward, enc.backward_chunk_elements = lean, chunk
        enc.zero_grad()
        wave.grad = None
        out = enc(wave)
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        results.append([wave.grad.clone()] + [p.grad.clone() for p in enc.parameters()])
    enc.double().zero_grad()
    enc.lean_backward, wave64 = False, wave.detach().double().requires_grad_()
    out = enc(wave64)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).double()).sum().backward()
    exact = [wave64.grad] + [p.grad for p in enc.parameters()]
    assert_all_float32_close(results[1], results[0], exact)
    assert worst_float32_excess([g * (1 + 1e-3) for g in results[1]], results[0], exact) > 1


def test_long_input_attention_recompute_gives_the_same_gradients(monkeypatch):
    """From ``SelfAttention.recompute_min_frames`` on, attention with dropout is recomputed in
    the backward pass (its (B, H, T, T) probabilities are not kept); replaying the RNG state gives
    the same dropout mask, so loss and gradients equal the stored path's."""
    from wav2vec2_lite.modules.context import SelfAttention

    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(small(attention_dropout=0.3)).train()
    wave = torch.randn(2, 16000)
    results = []
    for threshold in (10**9, 1):
        monkeypatch.setattr(SelfAttention, "recompute_min_frames", threshold)
        model.zero_grad()
        torch.manual_seed(5)  # the global RNG drives the dropout masks
        out = model(wave, generator=torch.Generator().manual_seed(3))
        out.loss.backward()
        results.append(
            [out.loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
        )
    assert len(results[0]) == len(results[1]) > 10
    for ref, got in zip(*results):
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6 * max(float(ref.abs().max()), 1.0))


# ---------------------------------------------------------------- mixed precision
def test_fp32_layer_norm_is_layer_norm_and_stays_float32_under_autocast():
    from wav2vec2_lite.modules.layer_norm import Fp32LayerNorm

    torch.manual_seed(0)
    ours, ref = Fp32LayerNorm(64, eps=1e-5), torch.nn.LayerNorm(64, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = 3.0 * torch.randn(2, 7, 64)
    assert torch.equal(ours(x), ref(x))  # float32: the same kernel, bit for bit
    assert ours(x.bfloat16()).dtype == torch.bfloat16  # no autocast: the input's dtype back
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, plain = ours(x.bfloat16()), ref(x.bfloat16())
    assert out.dtype == torch.float32 and plain.dtype == torch.bfloat16  # what CPU autocast alone does
    exact = ref(x.bfloat16().float())
    assert (out - exact).abs().max() < 1e-5 < (plain.float() - exact).abs().max()


def test_bf16_autocast_keeps_norms_and_the_residual_stream_in_float32():
    from wav2vec2_lite.modules.layer_norm import Fp32LayerNorm

    from _bf16 import rounded_bf16

    torch.manual_seed(0)
    model = Wav2Vec2Model(small()).eval()
    dtypes = []
    for m in model.modules():
        if isinstance(m, Fp32LayerNorm):
            m.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        ref = model(wave).last_hidden_state
        dtypes.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(wave).last_hidden_state
            n_norms = len(dtypes)
            # the same forward with exact bf16 kernels and randomly rounded operands (tests/_bf16.py)
            rounding_error = []
            for seed in range(4):
                with rounded_bf16(torch.Generator().manual_seed(seed)):
                    rounding_error.append((model(wave).last_hidden_state - ref).abs().max())
    assert n_norms == 2 * 2 + 2 and set(dtypes) == {torch.float32}  # 2 per block, projection, context
    assert out.dtype == torch.float32
    # SDPA's math path accumulates reduced-precision softmax in float32 unless this is switched on
    assert not torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed()
    # this CPU's bf16 kernels err no more than bf16 rounding does (a wrong kernel errs by O(1))
    assert 0 < (out - ref).abs().max() <= 2 * max(rounding_error)
