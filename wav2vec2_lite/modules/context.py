"""Context network: transformer encoder over the (masked) latent features -> c_t.

Two block layouts, as in the reference implementations:

* post-LN (BASE): ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``, one LayerNorm after the
  positional embedding;
* pre-LN (LARGE, fairseq ``layer_norm_first``): ``x = x + Attn(LN(x)); x = x + FFN(LN(x))``,
  one LayerNorm after the last block.

Attention runs through ``F.scaled_dot_product_attention`` with a fused QKV projection;
padded frames are excluded as keys. LayerDrop skips whole blocks in training only. Under
autocast the LayerNorms run in float32 (``Fp32LayerNorm``), so the post-LN residual stream
stays float32; SDPA accumulates its softmax in float32 in every path. The bf16 attention core
with dropout of a CPU run is :mod:`wav2vec2_lite.low_precision_speed`'s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.layer_norm import Fp32LayerNorm
from wav2vec2_lite.modules.positional import ConvPositionalEmbedding

__all__ = ["SelfAttention", "FeedForward", "TransformerBlock", "ContextNetwork"]


class SelfAttention(nn.Module):
    """Multi-head self-attention. ``(B, T, D), key_mask (B, T) bool True=attend -> (B, T, D)``.

    With attention dropout in training, torch's CPU SDPA takes its math path, which keeps the
    ``(B, heads, T, T)`` probabilities and dropout mask of every layer for the backward pass,
    most of a long input's step memory (docs/benchmarks.md). From ``recompute_min_frames``
    frames on, the attention core is recomputed in the backward pass instead (the same dropout
    mask: the RNG state is replayed), so only q, k, v stay alive; gradients are unchanged.
    """

    recompute_min_frames: int = 1024  # ~20 s: longer than fairseq's 15.6 s training crops

    def __init__(self, cfg: Wav2Vec2Config, recompute_min_frames: int | None = None) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = cfg.attention_dropout
        if recompute_min_frames is not None:
            self.recompute_min_frames = recompute_min_frames

    def core(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float) -> Tensor:
        """The attention core, ``(B, H, T, d) x3, key mask (B, 1, 1, T) -> (B, H, T, d)``: torch's SDPA."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        dropout_p = self.dropout if self.training else 0.0
        if dropout_p > 0 and torch.is_grad_enabled() and x.shape[1] >= self.recompute_min_frames:
            y = checkpoint(
                self.core, q, k, v, attn_mask, dropout_p, use_reentrant=False, preserve_rng_state=True
            )
        else:
            y = self.core(q, k, v, attn_mask, dropout_p)
        return self.out_proj(rearrange(y, "b h t d -> b t (h d)"))


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.hidden_size)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(F.gelu(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """One encoder block, post-LN or pre-LN (``cfg.layer_norm_first``)."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.attn_layer_norm = Fp32LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.final_layer_norm = Fp32LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layer_norm_first = cfg.layer_norm_first

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.attn_layer_norm(x), attn_mask))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.attn_layer_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.final_layer_norm(x + self.feed_forward(x))


class ContextNetwork(nn.Module):
    """Positional conv + transformer blocks. ``(B, T, D), padding (B, T) -> (B, T, D)``."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.pos_conv = ConvPositionalEmbedding(cfg)
        self.layer_norm = Fp32LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.layer_norm_first = cfg.layer_norm_first
        self.layerdrop = cfg.layerdrop
        self.gradient_checkpointing = False

    def forward(
        self, x: Tensor, padding_mask: Tensor | None = None, output_hidden_states: bool = False
    ) -> tuple[Tensor, list[Tensor] | None]:
        """x: (B, T, D); padding_mask: (B, T) bool True = padded frame.

        Returns the context vectors (B, T, D) and, if asked, the first block's input followed
        by every block's output (transformers' ``hidden_states`` convention; for pre-LN the
        last entry is before the final LayerNorm).
        """
        attn_mask = None
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)  # padded frames must not leak through the conv
            attn_mask = ~padding_mask[:, None, None, :]  # (B, 1, 1, T), True = attend
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        hidden: list[Tensor] | None = [] if output_hidden_states else None
        for layer in self.layers:
            if hidden is not None:
                hidden.append(x)
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, attn_mask, use_reentrant=False)
            else:
                x = layer(x, attn_mask)
        if hidden is not None:
            hidden.append(x)  # the last block's output (before the pre-LN final norm, as transformers 5)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x, hidden
