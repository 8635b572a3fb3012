"""Quantized transformer input (fairseq ``quantize_input``; wav2vec 2.0 Table 5).

:class:`QuantizedFeatureProjection` replaces :class:`~wav2vec2_lite.modules.feature_encoder.FeatureProjection`
when ``contrastive.quantize_input`` is on: LayerNorm over the encoder channels, dropout
(``dropout_input``), a Gumbel product quantizer, then ``project_inp`` to the transformer
width. As in fairseq, dropout comes *before* the quantizer and there is no separate linear
projection. It runs before masking and in every forward (features only, CTC, probes), so it
belongs to the backbone.

Width of the codevectors (fairseq's rules): with ``same_quantizer`` the target quantizer's
(``codevector_dim``, which must equal ``final_dim``); otherwise ``input_codevector_dim``, or
``hidden_size`` when that is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.layer_norm import Fp32LayerNorm
from wav2vec2_lite.modules.quantizer import GumbelProductQuantizer, QuantizerOutput

__all__ = ["QuantizedFeatureProjection", "input_codevector_dim"]


def input_codevector_dim(cfg: Wav2Vec2Config) -> int:
    """Codevector width of the input quantizer (fairseq: ``final_dim`` with same_quantizer,
    else ``latent_dim`` or ``encoder_embed_dim``)."""
    c = cfg.contrastive
    if c.same_quantizer:
        return c.codevector_dim
    return c.input_codevector_dim or cfg.hidden_size


class QuantizedFeatureProjection(nn.Module):
    """``(B, T, C) -> (projected (B, T, D), normed (B, T, C), QuantizerOutput over the B·T frames)``.

    ``normed`` (the layer-normed features, before dropout) is what the target side sees, as
    with :class:`~wav2vec2_lite.modules.feature_encoder.FeatureProjection`; the quantizer's
    output carries the codes and probabilities the contrastive objective needs for its
    diversity loss and metrics.
    """

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        width = input_codevector_dim(cfg)
        self.layer_norm = Fp32LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout_input)
        self.quantizer = GumbelProductQuantizer(cfg.contrastive, cfg.conv_dim[-1], codevector_dim=width)
        self.project_inp = nn.Linear(width, cfg.hidden_size)

    def forward(
        self, features: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, QuantizerOutput]:
        normed = self.layer_norm(features)  # float32 from the conv stack
        batch, frames, _ = normed.shape
        quant = self.quantizer(self.dropout(normed).flatten(0, 1), generator=generator)
        codevectors = quant.codevectors.view(batch, frames, -1)
        return self.project_inp(codevectors.to(self.project_inp.weight.dtype)), normed, quant
