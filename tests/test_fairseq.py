"""load_fairseq: real checkpoint structure, numerical fidelity, refusals and pickle safety.

fairseq does not install on Python 3.11, so the fixtures are built the way fairseq writes
them: a randomly initialised transformers model of the same configuration, its tensors
renamed to fairseq's parameter names (written out below from fairseq's module layout,
independently of wav2vec2_lite's own mapping), with an argparse ``Namespace`` (2020
releases), an omegaconf ``DictConfig`` (hydra-era) or a plain dict (current fairseq) as
config, saved with ``torch.save``. Fidelity = outputs equal to the transformers model's.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os

import pytest
import torch

from _helpers import padded_inputs

transformers = pytest.importorskip("transformers")
omegaconf = pytest.importorskip("omegaconf")

from wav2vec2_lite import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining  # noqa: E402
from wav2vec2_lite.config import ConfigError  # noqa: E402
from wav2vec2_lite.interop import load_fairseq  # noqa: E402
from wav2vec2_lite.interop.fairseq import config_from_fairseq, parse_fairseq_literal  # noqa: E402
from wav2vec2_lite.interop.safe_pickle import UntrustedCheckpointError  # noqa: E402
from wav2vec2_lite.objectives.masking import compute_span_mask, sample_negatives  # noqa: E402

ATOL = 1e-4
CONV = [(32, 10, 5), (48, 3, 2), (48, 3, 2)]
HF_SMALL = dict(
    num_hidden_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=[c[0] for c in CONV],
    conv_kernel=[c[1] for c in CONV],
    conv_stride=[c[2] for c in CONV],
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    num_codevectors_per_group=16,
    num_codevector_groups=2,
    codevector_dim=32,
    proj_codevector_dim=24,
    vocab_size=20,
    num_negatives=10,
)
HF_LAYOUTS = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer_preln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


# ----------------------------------------------------------------------------- fixtures
def _hf(kind: str, layout: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    cls = {"pretraining": transformers.Wav2Vec2ForPreTraining, "ctc": transformers.Wav2Vec2ForCTC}[kind]
    hf = cls(transformers.Wav2Vec2Config(**{**HF_SMALL, **HF_LAYOUTS[layout], **extra})).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that a mapping slip shows in the outputs
        for name, p in hf.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return hf


def fairseq_names(hf, layout: str, ctc: bool) -> dict[str, torch.Tensor]:
    """transformers tensors under the names fairseq's modules give them.

    ConvFeatureExtractionModel: conv_layers[i] = Sequential(Conv1d, Dropout, norm, GELU), the
    norm being Fp32GroupNorm (first layer, extractor_mode=default) or
    Sequential(TransposeLast, Fp32LayerNorm, TransposeLast) (layer_norm mode); Wav2Vec2Model:
    layer_norm, post_extract_proj, mask_emb, quantizer.{vars, weight_proj}, project_q,
    final_proj; TransformerEncoder: pos_conv = Sequential(weight-normed Conv1d, SamePad, GELU),
    layer_norm, layers[i].{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2,
    final_layer_norm}; Wav2VecCtc: w2v_encoder.{w2v_model, proj}.
    """
    src = dict(hf.state_dict())
    out: dict[str, torch.Tensor] = {}

    def put(fs_name: str, hf_name: str) -> None:
        out[fs_name] = src.pop(hf_name).clone()

    p = "w2v_encoder.w2v_model." if ctc else ""
    for i in range(len(CONV)):
        for t in ("weight", "bias"):
            if f"wav2vec2.feature_extractor.conv_layers.{i}.conv.{t}" in src:
                put(
                    f"{p}feature_extractor.conv_layers.{i}.0.{t}",
                    f"wav2vec2.feature_extractor.conv_layers.{i}.conv.{t}",
                )
            hf_norm = f"wav2vec2.feature_extractor.conv_layers.{i}.layer_norm.{t}"
            if hf_norm in src:
                fs_norm = f"conv_layers.{i}.2.1.{t}" if layout == "layer_preln" else f"conv_layers.{i}.2.{t}"
                put(f"{p}feature_extractor.{fs_norm}", hf_norm)
    for t in ("weight", "bias"):
        put(f"{p}layer_norm.{t}", f"wav2vec2.feature_projection.layer_norm.{t}")
        put(f"{p}post_extract_proj.{t}", f"wav2vec2.feature_projection.projection.{t}")
        put(f"{p}encoder.layer_norm.{t}", f"wav2vec2.encoder.layer_norm.{t}")
    put(f"{p}mask_emb", "wav2vec2.masked_spec_embed")
    put(
        f"{p}encoder.pos_conv.0.weight_g",
        "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    )
    put(
        f"{p}encoder.pos_conv.0.weight_v",
        "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    )
    put(f"{p}encoder.pos_conv.0.bias", "wav2vec2.encoder.pos_conv_embed.conv.bias")
    for i in range(HF_SMALL["num_hidden_layers"]):
        fs, h = f"{p}encoder.layers.{i}.", f"wav2vec2.encoder.layers.{i}."
        for t in ("weight", "bias"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                put(f"{fs}self_attn.{proj}.{t}", f"{h}attention.{proj}.{t}")
            put(f"{fs}self_attn_layer_norm.{t}", f"{h}layer_norm.{t}")
            put(f"{fs}fc1.{t}", f"{h}feed_forward.intermediate_dense.{t}")
            put(f"{fs}fc2.{t}", f"{h}feed_forward.output_dense.{t}")
            put(f"{fs}final_layer_norm.{t}", f"{h}final_layer_norm.{t}")
    if ctc:
        for t in ("weight", "bias"):
            put(f"w2v_encoder.proj.{t}", f"lm_head.{t}")
    else:
        put("quantizer.vars", "quantizer.codevectors")  # both (1, G*V, d)
        for t in ("weight", "bias"):
            put(f"quantizer.weight_proj.{t}", f"quantizer.weight_proj.{t}")
            put(f"project_q.{t}", f"project_q.{t}")
            put(f"final_proj.{t}", f"project_hid.{t}")
    assert not src, f"test mapping left transformers tensors unmapped: {sorted(src)}"
    return out


def pretraining_model_cfg(layout: str, **changes) -> dict:
    """fairseq ``Wav2Vec2Config`` fields for the HF_SMALL model (plus a few real-world extras)."""
    cfg = dict(
        _name="wav2vec2",
        extractor_mode="layer_norm" if layout == "layer_preln" else "default",
        conv_feature_layers="[(32, 10, 5)] + [(48, 3, 2)] * 2",
        conv_bias=layout == "layer_preln",
        encoder_layers=2,
        encoder_embed_dim=64,
        encoder_ffn_embed_dim=128,
        encoder_attention_heads=4,
        activation_fn="gelu",
        layer_type="transformer",
        layer_norm_first=layout == "layer_preln",
        dropout=0.1,
        attention_dropout=0.05,
        activation_dropout=0.02,
        encoder_layerdrop=0.05,
        dropout_input=0.1,
        dropout_features=0.1,
        final_dim=24,
        latent_dim=32,
        latent_vars=16,
        latent_groups=2,
        latent_temp=[2.0, 0.5, 0.999995],
        logit_temp=0.1,
        quantize_targets=True,
        quantize_input=False,
        same_quantizer=False,
        target_glu=False,
        feature_grad_mult=0.1,
        quantizer_depth=1,
        quantizer_factor=3,
        mask_length=10,
        mask_prob=0.65,
        mask_selection="static",
        mask_other=0.0,
        no_mask_overlap=False,
        mask_min_space=1,
        require_same_masks=True,
        mask_dropout=0.0,
        mask_channel_length=10,
        mask_channel_prob=0.0,
        mask_channel_before=False,
        mask_channel_selection="static",
        num_negatives=10,
        negatives_from_everywhere=False,
        cross_sample_negatives=0,
        codebook_negatives=0,
        conv_pos=16,
        conv_pos_groups=4,
        pos_conv_depth=1,
        max_positions=100000,
        checkpoint_activations=False,
        required_seq_len_multiple=2,
        crop_seq_to_multiple=1,
    )
    cfg.update(changes)
    return cfg


def _namespace_args(model_cfg: dict, loss_weights, normalize: bool) -> argparse.Namespace:
    """2020-style flat args: model, criterion, task and optimizer options side by side."""
    flat = {k: v for k, v in model_cfg.items() if k != "_name"}
    flat["latent_temp"] = "(2,0.5,0.999995)"  # the argparse era kept it as a string
    return argparse.Namespace(
        arch=model_cfg["_name"],
        task="audio_pretraining",
        criterion="wav2vec",
        infonce=True,
        loss_weights=str(loss_weights),
        log_keys=["prob_perplexity"],
        normalize=normalize,
        sample_rate=16000,
        lr=[0.0005],
        optimizer="adam",
        adam_betas="(0.9,0.98)",
        max_update=400000,
        **flat,
    )


def _hydra_cfg(model_cfg: dict, loss_weights, normalize: bool) -> dict:
    return {
        "_name": None,
        "common": {"fp16": True, "log_interval": 200, "seed": 1},
        "task": {
            "_name": "audio_pretraining",
            "data": "/data/manifests",
            "normalize": normalize,
            "sample_rate": 16000,
            "labels": None,
        },
        "criterion": {
            "_name": "wav2vec",
            "infonce": True,
            "loss_weights": list(loss_weights),
            "log_keys": ["prob_perplexity", "code_perplexity", "temp"],
        },
        "optimization": {"max_update": 400000, "lr": [0.0005]},
        "model": dict(model_cfg),
    }


def _checkpoint(model_state: dict, *, args=None, cfg=None) -> dict:
    return {
        "args": args,
        "cfg": cfg,
        "model": model_state,
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "Wav2vecCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 3.21},
                "num_updates": 400000,
            }
        ],
        "extra_state": {
            "epoch": 10,
            "train_iterator": {"epoch": 10, "iterations_in_epoch": 0, "shuffle": True},
            "previous_training_time": 12345.6,
            "best": 3.21,
        },
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]},
    }


def _save_pretraining(tmp_path, layout: str, container: str, **model_changes):
    hf = _hf("pretraining", layout)
    mcfg = pretraining_model_cfg(layout, **model_changes)
    loss_weights = [0.1, 10.0] if layout == "group_postln" else [0.1, 0.0]
    normalize = layout == "layer_preln"
    state = fairseq_names(hf, layout, ctc=False)
    path = tmp_path / f"pretrain_{layout}_{container}.pt"
    if container == "namespace":  # 2020 release, written in torch's legacy (non-zip) format
        torch.save(
            _checkpoint(state, args=_namespace_args(mcfg, loss_weights, normalize)),
            path,
            _use_new_zipfile_serialization=False,
        )
    else:
        cfg = _hydra_cfg(mcfg, loss_weights, normalize)
        torch.save(
            _checkpoint(state, cfg=omegaconf.OmegaConf.create(cfg) if container == "dictconfig" else cfg),
            path,
        )
    return hf, path


FT = dict(
    apply_mask=True,
    mask_prob=0.5,
    mask_length=10,
    mask_channel_prob=0.25,
    mask_channel_length=64,
    layerdrop=0.1,
    final_dropout=0.05,
    feature_grad_mult=0.0,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.1,
    dropout_input=0.0,
    freeze_finetune_updates=10000,
    w2v_path="/ckpt/wav2vec_small.pt",
    no_pretrained_weights=False,
    normalize=False,
)


def _save_ctc(tmp_path, layout: str, container: str):
    hf = _hf("ctc", layout)
    pre = pretraining_model_cfg(layout)
    state = fairseq_names(hf, layout, ctc=True)
    path = tmp_path / f"ctc_{layout}_{container}.pt"
    if container == "namespace":  # 2020: w2v_args is the pretraining run's flat Namespace
        w2v_args = _namespace_args(pre, [0.1, 10.0], False)
        args = argparse.Namespace(
            arch="wav2vec_ctc",
            task="audio_pretraining",
            criterion="ctc",
            labels="ltr",
            zero_infinity=True,
            post_process="letter",
            w2v_args=w2v_args,
            **FT,
        )
        torch.save(_checkpoint(state, args=args), path)
    else:  # hydra-era: cfg.model.w2v_args is the pretraining run's whole cfg
        cfg = {
            "_name": None,
            "task": {"_name": "audio_finetuning", "normalize": layout == "layer_preln", "labels": "ltr"},
            "criterion": {"_name": "ctc", "zero_infinity": True, "post_process": "letter"},
            "model": {
                "_name": "wav2vec_ctc",
                **FT,
                "normalize": layout == "layer_preln",
                "w2v_args": _hydra_cfg(pre, [0.1, 0.0], layout == "layer_preln"),
            },
        }
        torch.save(_checkpoint(state, cfg=omegaconf.OmegaConf.create(cfg)), path)
    return hf, path


# ----------------------------------------------------------------------------- pretraining
PRETRAIN_CASES = [("group_postln", "namespace"), ("layer_preln", "dictconfig"), ("group_postln", "dict")]


@pytest.mark.parametrize("layout,container", PRETRAIN_CASES)
def test_pretraining_checkpoint_matches_transformers(tmp_path, layout, container):
    hf, path = _save_pretraining(tmp_path, layout, container)
    ours = load_fairseq(path)
    assert isinstance(ours, Wav2Vec2ForPreTraining) and not ours.training

    wave, _ = padded_inputs(False)
    with torch.no_grad():
        ref = hf.wav2vec2(wave, output_hidden_states=True)
        out = ours.wav2vec2(wave, output_hidden_states=True)
    assert (ref.last_hidden_state - out.last_hidden_state).abs().max().item() <= ATOL
    assert len(ref.hidden_states) == len(out.hidden_states) == 3
    for a, b in zip(ref.hidden_states, out.hidden_states):
        assert (a - b).abs().max().item() <= ATOL

    # quantizer: fairseq's vars (1, G*V, d) became our (G, V, d) without reordering entries
    x = torch.randn(3, 7, CONV[-1][0])
    with torch.no_grad():
        ref_q, _ = hf.quantizer(x)
        our_q = ours.quantizer(x.reshape(-1, x.shape[-1])).codevectors.reshape(3, 7, -1)
    assert (ref_q - our_q).abs().max().item() <= ATOL

    # contrastive loss through project_q / final_proj, same masks and distractors
    frames = int(hf._get_feat_extract_output_lengths(torch.tensor(wave.shape[1])))
    g = torch.Generator().manual_seed(7)
    mask = compute_span_mask(2, frames, 0.5, 4, min_masks=2, generator=g)
    negatives = sample_negatives(mask, HF_SMALL["num_negatives"], generator=g)
    with torch.no_grad():
        flat_negatives = negatives + torch.arange(2)[:, None, None] * frames  # transformers wants b*T + t
        ref = hf(wave, mask_time_indices=mask, sampled_negative_indices=flat_negatives)
        out = ours(wave, mask_indices=mask, negative_indices=negatives)
    expected = ref.contrastive_loss.item()
    assert abs(expected - out.objective.contrastive_loss.item()) <= ATOL * max(1.0, abs(expected))

    # the feature penalty, by hand: mean of the squared conv-encoder output
    with torch.no_grad():
        conv_out = hf.wav2vec2.feature_extractor(wave)  # (B, C, T)
    assert conv_out.shape == (2, CONV[-1][0], frames)
    by_hand = conv_out.pow(2).mean().item()
    assert abs(out.objective.feature_penalty.item() - by_hand) <= 1e-5 * max(1.0, by_hand)


@pytest.mark.parametrize("layout,container", PRETRAIN_CASES[:2])
def test_pretraining_config_fields(tmp_path, layout, container):
    _, path = _save_pretraining(tmp_path, layout, container)
    cfg = load_fairseq(path).config
    layer = layout == "layer_preln"
    assert cfg.conv_dim == (32, 48, 48) and cfg.conv_kernel == (10, 3, 3) and cfg.conv_stride == (5, 2, 2)
    assert cfg.feat_extract_norm == ("layer" if layer else "group")
    assert cfg.conv_bias is layer and cfg.layer_norm_first is layer
    assert cfg.masked_group_norm is False  # fairseq's GroupNorm statistics include padding
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_dim, cfg.num_heads) == (2, 64, 128, 4)
    assert (cfg.pos_conv_kernel, cfg.pos_conv_groups) == (16, 4)
    c = cfg.contrastive
    assert (c.num_code_groups, c.num_codes_per_group, c.codevector_dim, c.final_dim) == (2, 16, 32, 24)
    assert c.gumbel_temperature == (2.0, 0.5, 0.999995)
    assert (cfg.dropout, cfg.attention_dropout, cfg.activation_dropout) == (0.1, 0.05, 0.02)
    assert (cfg.layerdrop, cfg.dropout_input, c.dropout_features, cfg.feature_grad_mult) == (
        0.05,
        0.1,
        0.1,
        0.1,
    )
    assert (cfg.mask_time_prob, cfg.mask_time_length, cfg.mask_time_min_masks) == (0.65, 10, 2)
    assert (c.num_negatives, c.cross_sample_negatives, c.logit_temperature) == (10, 0, 0.1)
    assert c.diversity_loss_weight == 0.1
    assert c.feature_penalty_weight == (0.0 if layer else 10.0)
    assert cfg.extra["source"] == "fairseq" and cfg.extra["normalize"] is layer
    assert cfg.extra["checkpoint"] == str(path)


def test_latent_dim_zero_means_final_dim_and_final_dim_zero_means_width():
    cfg = config_from_fairseq(
        _namespace_args(pretraining_model_cfg("group_postln", latent_dim=0, final_dim=0), [0.1, 10], False)
    )
    assert cfg.contrastive.final_dim == 64 and cfg.contrastive.codevector_dim == 64


def test_identity_projection_and_parametrized_pos_conv(tmp_path):
    """Conv width == transformer width: fairseq has no post_extract_proj (identity)."""
    hf = _hf("pretraining", "group_postln", conv_dim=[32, 48, 64])
    with torch.no_grad():
        hf.wav2vec2.feature_projection.projection.weight.copy_(torch.eye(64))
        hf.wav2vec2.feature_projection.projection.bias.zero_()
    state = fairseq_names(hf, "group_postln", ctc=False)
    del state["post_extract_proj.weight"], state["post_extract_proj.bias"]
    # a fairseq run on newer torch may save weight norm as a parametrization
    state["encoder.pos_conv.0.parametrizations.weight.original0"] = state.pop("encoder.pos_conv.0.weight_g")
    state["encoder.pos_conv.0.parametrizations.weight.original1"] = state.pop("encoder.pos_conv.0.weight_v")
    mcfg = pretraining_model_cfg("group_postln", conv_feature_layers="[(32, 10, 5), (48, 3, 2), (64, 3, 2)]")
    path = tmp_path / "identity.pt"
    torch.save(_checkpoint(state, cfg=_hydra_cfg(mcfg, [0.1, 10], False)), path)
    ours = load_fairseq(path)
    wave, _ = padded_inputs(False)
    with torch.no_grad():
        a = hf.wav2vec2(wave).last_hidden_state
        b = ours.wav2vec2(wave).last_hidden_state
    assert (a - b).abs().max().item() <= ATOL


# ----------------------------------------------------------------------------- CTC
@pytest.mark.parametrize("layout,container", [("group_postln", "namespace"), ("layer_preln", "dictconfig")])
@pytest.mark.parametrize("padded", [False, True])
def test_ctc_checkpoint_matches_transformers(tmp_path, layout, container, padded):
    hf, path = _save_ctc(tmp_path, layout, container)
    ours = load_fairseq(path)
    assert isinstance(ours, Wav2Vec2ForCTC) and not ours.training
    wave, attention = padded_inputs(padded)
    with torch.no_grad():
        ref = hf(wave, attention_mask=attention if padded else None).logits
        out = ours(wave, padding_mask=~attention.bool() if padded else None)
    lengths = hf._get_feat_extract_output_lengths(attention.sum(-1)).tolist()
    assert out.output_lengths.tolist() == lengths
    for i, n in enumerate(lengths):
        assert (ref[i, :n] - out.logits[i, :n]).abs().max().item() <= ATOL


@pytest.mark.parametrize("container", ["namespace", "dictconfig"])
def test_ctc_config_takes_finetuning_overrides(tmp_path, container):
    _, path = _save_ctc(tmp_path, "group_postln", container)
    cfg = load_fairseq(path).config
    assert cfg.vocab_size == HF_SMALL["vocab_size"]  # from w2v_encoder.proj.weight
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (2, 64, 4)  # from w2v_args
    assert (cfg.mask_time_prob, cfg.mask_channel_prob, cfg.mask_channel_length) == (0.5, 0.25, 64)
    assert (cfg.layerdrop, cfg.final_dropout, cfg.feature_grad_mult) == (0.1, 0.05, 0.0)
    assert (cfg.dropout, cfg.attention_dropout, cfg.activation_dropout, cfg.dropout_input) == (
        0.0,
        0.0,
        0.1,
        0.0,
    )
    assert cfg.ctc_zero_infinity is True
    assert cfg.extra["fairseq_arch"] == "wav2vec_ctc" and "<s> (CTC blank)" in cfg.extra["vocab_layout"]


def test_dictionary_ids_line_up_with_fairseq(tmp_path):
    """docs/interop.md: CharTokenizer ids equal fairseq Dictionary ids for every dict.ltr.txt symbol."""
    from wav2vec2_lite.data.tokenizer import CharTokenizer

    symbols = ["|", "E", "T", "A", "O"]
    (tmp_path / "dict.ltr.txt").write_text("".join(f"{s} {100 - i}\n" for i, s in enumerate(symbols)))
    tok = CharTokenizer.from_dictionary(tmp_path / "dict.ltr.txt")
    fairseq_order = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
    ] + symbols  # fairseq Dictionary: bos, pad, eos, unk, file
    assert tok.blank_id == 0 == fairseq_order.index("<s>")
    assert all(tok.index[s] == fairseq_order.index(s) for s in symbols)
    assert tok.decode([0, 6, 6, 0, 1, 4, 5, 7], collapse_repeats=True) == "T EA"


def test_ctc_without_apply_mask_does_not_mask(tmp_path):
    _, path = _save_ctc(tmp_path, "group_postln", "namespace")
    ckpt = torch.load(path, weights_only=False)
    ckpt["args"].apply_mask = False
    torch.save(ckpt, path)
    cfg = load_fairseq(path, layerdrop=0.0).config  # and config overrides win
    assert cfg.mask_time_prob == 0.0 and cfg.mask_channel_prob == 0.0 and cfg.layerdrop == 0.0


# ----------------------------------------------------------------------------- errors
def test_missing_tensors_are_named(tmp_path):
    _, path = _save_pretraining(tmp_path, "group_postln", "dict")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["encoder.layers.1.fc1.weight"], ckpt["model"]["quantizer.vars"]
    torch.save(ckpt, path)
    with pytest.raises(KeyError) as e:
        load_fairseq(path)
    msg = str(e.value)
    assert "encoder.layers.1.fc1.weight" in msg and "quantizer.vars" in msg and str(path) in msg


@pytest.mark.parametrize(
    "key,value",
    [
        ("negatives_from_everywhere", True),
        ("codebook_negatives", 10),
        ("target_glu", True),
        ("activation_fn", "relu"),
        ("layer_type", "conformer"),
        ("pos_conv_depth", 5),
        ("extractor_mode", "spectrogram"),
    ],
)
def test_unsupported_options_are_refused_by_name(key, value):
    args = _namespace_args(pretraining_model_cfg("group_postln", **{key: value}), [0.1, 10], False)
    with pytest.raises(ConfigError, match=key):
        config_from_fairseq(args)


def test_shared_codebook_is_refused(tmp_path):
    hf, path = _save_pretraining(tmp_path, "group_postln", "dict")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["quantizer.vars"] = ckpt["model"]["quantizer.vars"][:, :16]  # combine_groups: (1, V, d)
    torch.save(ckpt, path)
    with pytest.raises(ConfigError, match="combine_groups"):
        load_fairseq(path)


def test_unknown_arch_is_refused():
    with pytest.raises(ConfigError, match="hubert"):
        config_from_fairseq({"model": {"_name": "hubert"}, "task": {}, "criterion": {}})


def test_conv_layers_are_parsed_without_eval():
    assert (
        parse_fairseq_literal("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2")
        == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    assert parse_fairseq_literal("(2, 0.5, 0.999995)") == (2, 0.5, 0.999995)
    for bad in (
        "__import__('os').system('echo pwned')",
        "[(1, 2, 3)] * 10 ** 9",
        "[(1, 2, 3)] * 100000000",
        "[x for x in range(3)]",
        "[(1, 2, 3)] + 'a'",
    ):
        with pytest.raises(ConfigError, match="conv_feature_layers"):
            parse_fairseq_literal(bad, what="conv_feature_layers")


# ----------------------------------------------------------------------------- pickle safety
class _SystemCall:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class _Harmless:
    """A custom class fairseq forks put in extra_state: not code, but not allowlisted either."""

    def __init__(self, value):
        self.value = value


@pytest.mark.parametrize("payload", [_SystemCall, _Exec])
@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused(tmp_path, payload, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    cfg = _hydra_cfg(pretraining_model_cfg("group_postln"), [0.1, 10], False)
    ckpt = _checkpoint({"mask_emb": torch.zeros(64)}, cfg=cfg)
    ckpt["extra_state"]["meter"] = payload(marker)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(UntrustedCheckpointError) as e:
        load_fairseq(path)
    msg = str(e.value)
    assert str(path) in msg and "trust=True" in msg and "trust the source" in msg
    assert ("system" in msg) if payload is _SystemCall else ("exec" in msg)
    assert not marker.exists()


def test_trust_flag_loads_full_pickle_with_a_warning(tmp_path, caplog):
    _, good = _save_pretraining(tmp_path, "group_postln", "dict")
    ckpt = torch.load(good, weights_only=True)
    ckpt["extra_state"]["meter"] = _Harmless(3)
    path = tmp_path / "custom.pt"
    torch.save(ckpt, path)
    with pytest.raises(UntrustedCheckpointError, match="_Harmless"):
        load_fairseq(path)
    with caplog.at_level(logging.WARNING):
        model = load_fairseq(path, trust=True)
    assert isinstance(model, Wav2Vec2ForPreTraining)
    assert any("trust=True" in r.getMessage() and "executes" in r.getMessage() for r in caplog.records)


def test_not_a_fairseq_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a fairseq checkpoint"):
        load_fairseq(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_fairseq(tmp_path / "missing.pt")


def test_config_from_fairseq_accepts_each_container():
    mcfg = pretraining_model_cfg("layer_preln")
    hydra = _hydra_cfg(mcfg, [0.1, 0.0], True)
    configs = [
        config_from_fairseq(_namespace_args(mcfg, [0.1, 0.0], True)),
        config_from_fairseq(omegaconf.OmegaConf.create(copy.deepcopy(hydra))),
        config_from_fairseq(hydra),
        config_from_fairseq({"args": None, "cfg": hydra, "model": {}}),
    ]
    ref = configs[0].to_dict()
    for c in configs[1:]:
        assert c.to_dict() == ref
