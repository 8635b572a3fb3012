"""Numerical parity with Hugging Face transformers (float32, eval, same weights)."""

from __future__ import annotations

import pytest
import torch

from _helpers import padded_inputs

transformers = pytest.importorskip("transformers")

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model  # noqa: E402
from wav2vec2_lite.config import ConfigError  # noqa: E402
from wav2vec2_lite.interop import from_hf, to_hf  # noqa: E402
from wav2vec2_lite.objectives.masking import compute_span_mask, sample_negatives  # noqa: E402

ATOL = 1e-4
SMALL = dict(
    num_hidden_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    intermediate_size=128,
    conv_dim=(32, 48, 64),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    num_codevectors_per_group=16,
    codevector_dim=32,
    proj_codevector_dim=24,
    vocab_size=20,
    num_negatives=10,
)
# BASE-like: group norm on the first conv, post-LN; LARGE-like: layer norm everywhere, pre-LN, conv bias
LAYOUTS = {
    "group_postln": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "layer_preln": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}
CLASSES = {
    "model": transformers.Wav2Vec2Model,
    "ctc": transformers.Wav2Vec2ForCTC,
    "pretraining": transformers.Wav2Vec2ForPreTraining,
}


def _hf(cls_name: str, layout: str, seed: int = 0):
    torch.manual_seed(seed)
    hf = CLASSES[cls_name](transformers.Wav2Vec2Config(**SMALL, **LAYOUTS[layout])).eval()
    with torch.no_grad():  # make norms and biases non-trivial so that a mapping error shows
        for name, p in hf.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return hf


def _valid_frames(hf, attention):
    return hf._get_feat_extract_output_lengths(attention.sum(-1)).long()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("cls_name", ["model", "ctc"])
def test_outputs_match_transformers(layout, padded, cls_name):
    hf = _hf(cls_name, layout)
    ours = from_hf(hf).eval()
    assert type(ours) is {"model": Wav2Vec2Model, "ctc": Wav2Vec2ForCTC}[cls_name]
    wave, attention = padded_inputs(padded)
    with torch.no_grad():
        ref = hf(wave, attention_mask=attention if padded else None)
        out = ours(wave, padding_mask=~attention.bool() if padded else None)
    a = ref.last_hidden_state if cls_name == "model" else ref.logits
    b = out.last_hidden_state if cls_name == "model" else out.logits
    frames = _valid_frames(hf, attention)
    for i, n in enumerate(frames.tolist()):
        assert (a[i, :n] - b[i, :n]).abs().max().item() <= ATOL
    if cls_name == "ctc":
        assert out.output_lengths.tolist() == frames.tolist()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hidden_states_match(layout):
    hf = _hf("model", layout)
    ours = from_hf(hf).eval()
    wave, _ = padded_inputs(False)
    with torch.no_grad():
        ref = hf(wave, output_hidden_states=True).hidden_states
        out = ours(wave, output_hidden_states=True).hidden_states
    assert len(ref) == len(out) == SMALL["num_hidden_layers"] + 1
    for a, b in zip(ref, out):
        assert (a - b).abs().max().item() <= ATOL


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("padded", [False, True])
def test_contrastive_loss_and_perplexity_match(layout, padded):
    hf = _hf("pretraining", layout)
    ours = from_hf(hf).eval()
    assert isinstance(ours, Wav2Vec2ForPreTraining)
    wave, attention = padded_inputs(padded)
    frames = _valid_frames(hf, attention)
    total = int(hf._get_feat_extract_output_lengths(torch.tensor(wave.shape[1])))
    g = torch.Generator().manual_seed(7)
    mask = compute_span_mask(2, total, 0.5, 4, lengths=frames, min_masks=2, generator=g)
    negatives = sample_negatives(mask, SMALL["num_negatives"], generator=g)
    hf_negatives = negatives + torch.arange(2)[:, None, None] * total  # transformers wants flat indices
    with torch.no_grad():
        ref = hf(
            wave,
            attention_mask=attention if padded else None,
            mask_time_indices=mask,
            sampled_negative_indices=hf_negatives,
        )
        out = ours(
            wave,
            padding_mask=~attention.bool() if padded else None,
            mask_indices=mask,
            negative_indices=negatives,
        )
    ours = out.objective.contrastive_loss.item()
    assert abs(ref.contrastive_loss.item() - ours) <= ATOL * max(1.0, abs(ref.contrastive_loss.item()))
    assert abs(ref.codevector_perplexity.item() - out.code_perplexity.item()) <= ATOL
    assert out.num_masked.item() == mask.sum().item()


def test_quantizer_codevectors_match():
    hf = _hf("pretraining", "group_postln")
    ours = from_hf(hf).eval()
    x = torch.randn(3, 11, SMALL["conv_dim"][-1])
    with torch.no_grad():
        ref, _ = hf.quantizer(x)
        out = ours.quantizer(x.reshape(-1, x.shape[-1])).codevectors.reshape(3, 11, -1)
    assert ref.shape == out.shape
    assert (ref - out).abs().max().item() <= ATOL


def test_ctc_loss_matches_transformers():
    hf = _hf("ctc", "layer_preln")
    ours = from_hf(hf).eval()
    wave, attention = padded_inputs(True)
    labels = torch.tensor([[5, 6, 7, 7, 8], [9, 10, -100, -100, -100]])
    with torch.no_grad():
        ref = hf(wave, attention_mask=attention, labels=labels)
        out = ours(wave, padding_mask=~attention.bool(), labels=labels)
    assert abs(ref.loss.item() - out.loss.item()) <= ATOL * max(1.0, abs(ref.loss.item()))


@pytest.mark.parametrize("cls_name", list(CLASSES))
def test_to_hf_round_trip(cls_name, tmp_path):
    ours_cls = {"model": Wav2Vec2Model, "ctc": Wav2Vec2ForCTC, "pretraining": Wav2Vec2ForPreTraining}[
        cls_name
    ]
    torch.manual_seed(1)
    ours = ours_cls(
        Wav2Vec2Config.tiny(
            num_layers=2,
            vocab_size=12,
            masked_group_norm=False,
            contrastive={"feature_penalty_weight": 0.0},
            feature_grad_mult=1.0,
        )
    ).eval()
    hf = to_hf(ours)
    assert type(hf).__name__ == CLASSES[cls_name].__name__
    hf.save_pretrained(tmp_path / "hf")
    back = from_hf(str(tmp_path / "hf")).eval()
    assert type(back) is ours_cls
    for k, v in ours.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    wave = torch.randn(1, 3200)
    with torch.no_grad():
        a, b = ours(wave), hf(wave)
    if cls_name == "model":
        assert (a.last_hidden_state - b.last_hidden_state).abs().max() <= ATOL
    elif cls_name == "ctc":
        assert (a.logits - b.logits).abs().max() <= ATOL


def test_to_hf_refuses_what_transformers_cannot_represent():
    model = Wav2Vec2ForPreTraining(
        Wav2Vec2Config.tiny(num_layers=1, contrastive={"cross_sample_negatives": 5})
    )
    with pytest.raises(ConfigError, match="cross_sample_negatives"):
        to_hf(model)


def test_from_hf_refuses_unsupported_options():
    hf = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SMALL, use_weighted_layer_sum=True))
    with pytest.raises(ConfigError, match="weighted layer sum"):
        from_hf(hf)
