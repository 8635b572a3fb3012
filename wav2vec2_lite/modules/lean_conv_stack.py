"""Memory-lean training of the conv feature encoder: forward and backward of the whole stack.

The stack's activations are the largest part of a pretraining step's memory (the first
conv's output is the longest tensor). Autograd would keep three tensors for the first layer
(conv output, norm output, GELU output) and two for each other layer. :class:`LeanConvStack`
keeps only each conv's output (plus the norm's per-row mean and 1/std) and recomputes norm
and GELU, elementwise and cheap next to the convolutions, in the backward pass with the same
aten kernels, so the same numbers (tests/test_model.py); savings in docs/benchmarks.md. It is a
memory feature for every dtype; which kernels compute the convolutions is the encoder's choice
(:class:`NativeConvs` here; bf16 matmuls over unfolded windows in
:mod:`wav2vec2_lite.low_precision_speed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LeanConvStack", "NativeConvs"]

_aten = torch.ops.aten


def _norm_input(z: Tensor) -> Tensor:
    return z if z.device.type == "cpu" else z.float()


def _norm_forward(layer: nn.Module, z: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """The layer's norm on a conv output ``z`` (B, C, T), statistics in float32: a CUDA autocast
    output is normalised in float32 (CUDA autocast's choice), a CPU bf16 one (the unfolded convs
    of ``low_precision_speed``) by the mixed-type kernels, which accumulate in float32 and return
    bf16 (no cast of the longest tensors); returns (normed, (mean, rstd)) or (z, None)."""
    if layer.norm_kind is None:
        return z, None
    zf = _norm_input(z)
    b, c, t = zf.shape
    if layer.norm_kind == "group":
        n, mean, rstd = _aten.native_group_norm(
            zf, layer.norm.weight, layer.norm.bias, b, c, t, c, layer.norm.eps
        )
        return n, (mean, rstd)
    n, mean, rstd = _aten.native_layer_norm(
        zf.transpose(1, 2), [c], layer.norm.weight, layer.norm.bias, layer.norm.eps
    )
    return n.transpose(1, 2), (mean, rstd)


def _norm_backward(
    layer: nn.Module, grad: Tensor, z: Tensor, stats: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (input, weight, bias) of :func:`_norm_forward`'s norm at ``z``."""
    zf = _norm_input(z)
    b, c, t = zf.shape
    mean, rstd = stats
    w, bias = layer.norm.weight, layer.norm.bias
    if layer.norm_kind == "group":
        return _aten.native_group_norm_backward(
            grad.contiguous(), zf, mean, rstd, w, b, c, t, c, [True, True, True]
        )
    gx, gw, gb = _aten.native_layer_norm_backward(
        grad.transpose(1, 2), zf.transpose(1, 2), [c], mean, rstd, w, bias, [True, True, True]
    )
    return gx.transpose(1, 2), gw, gb


def _conv_backward(
    g: Tensor,
    x_in: Tensor,
    conv: nn.Conv1d,
    weight: Tensor,
    cdt: torch.dtype,
    need_input: bool,
    chunk_elements: int,
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """(input, weight, bias) gradients of an unpadded strided ``conv`` at input ``x_in``.

    The weight gradient comes first so the caller can drop ``x_in`` before the input gradient
    is allocated (that kernel reads only the input's shape). When ``x_in`` has more than
    ``chunk_elements`` elements, both are computed over time chunks of the output (each chunk's
    input window overlaps the next by ``kernel - stride`` samples, whose input gradients add):
    the convolution kernels' workspace grows with the length they see (docs/benchmarks.md), so
    chunks bound it. Chunked sums run in another order: ~1e-6 relative to the one-call result.
    """
    w = weight.to(cdt)
    k, s = conv.kernel_size[0], conv.stride[0]
    has_bias = conv.bias is not None
    args = ([s], [0], [1], False, [0], 1)
    batch, channels, length = x_in.shape
    frames = g.shape[-1]
    chunks = min(frames, -(-x_in.numel() // chunk_elements)) if chunk_elements > 0 else 1
    if chunks <= 1:
        _, gw, gb = _aten.convolution_backward(
            g, x_in, w, [conv.out_channels] if has_bias else None, *args, [False, True, has_bias]
        )
        gx = None
        if need_input:
            fake = torch.empty((), dtype=cdt, device=g.device).expand(x_in.shape)
            gx = _aten.convolution_backward(g, fake, w, None, *args, [True, False, False])[0]
        return gx, gw, gb
    step = -(-frames // chunks)
    spans = [(a, min(frames, a + step)) for a in range(0, frames, step)]
    gw = torch.zeros_like(w)
    for a, b in spans:
        gw += _aten.convolution_backward(
            g[..., a:b], x_in[..., a * s : (b - 1) * s + k], w, None, *args, [False, True, False]
        )[1]
    gb = g.sum(dim=(0, 2)) if has_bias else None
    gx = None
    if need_input:
        gx = g.new_zeros(batch, channels, length)
        for a, b in spans:
            lo, hi = a * s, (b - 1) * s + k
            fake = torch.empty((), dtype=cdt, device=g.device).expand(batch, channels, hi - lo)
            gx[..., lo:hi] += _aten.convolution_backward(
                g[..., a:b], fake, w, None, *args, [True, False, False]
            )[0]
    return gx, gw, gb


class NativeConvs:
    """:class:`LeanConvStack`'s convolutions as torch's kernels: ``F.conv1d`` forward, and
    :func:`_conv_backward` (time chunks above the encoder's ``backward_chunk_elements``)."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
        return F.conv1d(x, weight, bias, stride=stride)

    @staticmethod
    def backward(
        g: Tensor,
        x_in: Tensor,
        conv: nn.Conv1d,
        weight: Tensor,
        cdt: torch.dtype,
        need_input: bool,
        chunk_elements: int,
    ) -> tuple[Tensor | None, Tensor, Tensor | None]:
        return _conv_backward(g, x_in, conv, weight, cdt, need_input, chunk_elements)


class LeanConvStack(torch.autograd.Function):
    """The conv stack's forward + backward, keeping only each conv's output for backward.

    ``apply(wave (B, 1, S), encoder, (dtype, convs), grad_mult, *encoder.stack_parameters())
    -> (B, C, T)``. The convolutions run in ``dtype`` through ``convs`` (``encoder.stack_convs``:
    :class:`NativeConvs`, float32 under CPU autocast as the module path runs them) and the norms
    with float32 statistics; the saved conv outputs are in the convolutions' dtype.
    ``grad_mult`` is fairseq's ``feature_grad_mult``, applied to the incoming gradient.
    """

    @staticmethod
    def forward(
        ctx, wave: Tensor, encoder: nn.Module, plan: tuple, grad_mult: float, *params: Tensor
    ) -> Tensor:  # type: ignore[override]
        dev = wave.device.type
        cdt, convs = plan
        saved: list[Tensor] = []
        stats: list[tuple[Tensor, Tensor] | None] = []
        x = wave
        given = dict(zip(map(id, encoder.parameters()), params))  # a param, or its pre-cast stand-in
        with torch.autocast(dev, enabled=False):
            for layer in encoder.conv_layers:
                conv = layer.conv
                bias = given[id(conv.bias)].to(cdt) if conv.bias is not None else None
                z = convs.forward(x.to(cdt), given[id(conv.weight)].to(cdt), bias, conv.stride[0])
                n, st = _norm_forward(layer, z)
                saved.append(z)
                stats.append(st)
                x = F.gelu(n)
        # kept as a list (not save_for_backward) so backward can drop each one as soon as it is used
        ctx.encoder, ctx.grad_mult, ctx.cdt, ctx.stats, ctx.saved = encoder, grad_mult, cdt, stats, saved
        ctx.convs = convs
        ctx.save_for_backward(wave, *params)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        # Peak memory is this loop's: every full-size temporary is dropped (del) or overwritten
        # in place (the ``.out`` kernels) as soon as it is used, and a norm output is recomputed
        # rather than kept, so fewer first-layer-sized tensors are alive at once than with autograd
        # on the module path, and large convs are differentiated in time chunks, which bounds the
        # kernels' own workspace (:func:`_conv_backward`).
        wave, *params = ctx.saved_tensors
        encoder, cdt, stats, saved = ctx.encoder, ctx.cdt, ctx.stats, ctx.saved
        given = dict(zip(map(id, encoder.parameters()), params))
        if saved is None:
            raise RuntimeError(
                "LeanConvStack: backward through the conv stack twice (retain_graph) is not supported"
            )
        ctx.saved = None
        layers = list(encoder.conv_layers)
        grads: dict[int, Tensor] = {}
        g = grad * ctx.grad_mult if ctx.grad_mult != 1.0 else grad
        owned = ctx.grad_mult != 1.0  # may g be overwritten in place?
        with torch.autocast(wave.device.type, enabled=False):
            for i in range(len(layers) - 1, -1, -1):
                layer = layers[i]
                n_i = _norm_forward(layer, saved[i])[0]  # the GELU's input, recomputed
                g = g.to(n_i.dtype)
                if owned:
                    g = _aten.gelu_backward.grad_input(g, n_i, grad_input=g)
                else:
                    g = _aten.gelu_backward(g, n_i)
                del n_i
                z = saved.pop()
                if layer.norm_kind is not None:
                    g, grads[id(layer.norm.weight)], grads[id(layer.norm.bias)] = _norm_backward(
                        layer, g, z, stats[i]
                    )
                del z
                if i > 0:  # the conv's input: the previous layer's output, recomputed
                    prev = layers[i - 1]
                    n_prev = _norm_forward(prev, saved[i - 1])[0]
                    if prev.norm_kind is not None:  # a fresh tensor: GELU in place
                        x_in = _aten.gelu.out(n_prev, out=n_prev)
                    else:  # n_prev is the saved conv output, still needed
                        x_in = F.gelu(n_prev)
                    del n_prev
                    x_in = x_in.to(cdt)
                else:
                    x_in = wave.to(cdt)
                conv = layer.conv
                weight = given[id(conv.weight)]
                need_input = i > 0 or ctx.needs_input_grad[0]
                g, gw, gb = ctx.convs.backward(
                    g.to(cdt), x_in, conv, weight, cdt, need_input, encoder.backward_chunk_elements
                )
                del x_in
                owned = True
                grads[id(conv.weight)] = gw.to(weight.dtype)  # the dtype of what was passed in
                if conv.bias is not None:
                    grads[id(conv.bias)] = gb.to(given[id(conv.bias)].dtype)
        return (
            g if ctx.needs_input_grad[0] else None,
            None,
            None,
            None,
            *[
                grads.get(id(p)) if need else None
                for p, need in zip(encoder.parameters(), ctx.needs_input_grad[4:])
            ],
        )
