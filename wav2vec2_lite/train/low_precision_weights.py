"""Mixed-precision training with the weights cast in one op per forward pass.

Under autocast every Linear weight and bias is cast to bf16 at each forward (one cast op per
parameter) and its gradient cast back (another); a BASE pretraining step did ~200 such
casts. :class:`LowPrecisionWeights` keeps the parameters of the model's Linear layers and
feature-encoder convolutions (``modules.precast``) as views of one flat float32 buffer,
casts that buffer once per forward, hands each layer its slice (``low_precision``), and in
the backward pass gathers the layers' bf16 gradients and casts them back once. The values are
those autocast computes (round-to-nearest casts both ways), so a run's numbers do not change,
only the count of cast ops (``tools/op_census.py``). float32 training never uses it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from wav2vec2_lite.modules.precast import PRECAST_LAYERS

__all__ = ["LowPrecisionWeights"]

Span = tuple[int, int, torch.Size]


class _CastFlat(torch.autograd.Function):
    """``(flat float32 buffer, dtype, spans, *params) -> one low-precision view per param``.

    The params are the buffer's views, passed so that autograd routes their gradients; the
    forward reads the buffer (one cast), the backward concatenates the incoming gradients
    into one float32 buffer (one op that casts) and returns float32 views, one per param.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, dtype: torch.dtype, spans: list[Span], *params: Tensor):  # type: ignore[override]
        low = flat.to(dtype)
        ctx.spans, ctx.high = spans, flat.dtype
        return tuple(low[a:b].view(shape) for a, b, shape in spans)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        need = ctx.needs_input_grad[3:]
        used = [i for i, (g, n) in enumerate(zip(grads, need)) if n and g is not None]
        out: list[Tensor | None] = [None] * len(grads)
        if (
            used
        ):  # gathered and cast back in one op (cat into a float32 buffer: 3x faster than cat, then cast)
            parts = [grads[i].reshape(-1) for i in used]
            gathered = torch.cat(parts, out=parts[0].new_empty(sum(p.numel() for p in parts), dtype=ctx.high))
            offset = 0
            for i in used:
                size = grads[i].numel()
                out[i] = gathered[offset : offset + size].view(ctx.spans[i][2])
                offset += size
        return (None, None, None, *out)


class LowPrecisionWeights:
    """The pre-castable layers' parameters of ``model`` in one flat buffer; :meth:`cast` hands them to the
    layers in ``dtype`` for the forward passes inside it.

    Binding replaces each parameter's storage by a slice of the buffer (``p.data``), so do it
    after the model is on its device and before anything copies the parameters' storage
    (DDP keeps the Parameter objects, which are unchanged). A parameter whose storage was
    replaced later (e.g. ``load_state_dict(assign=True)``) is noticed and bound again.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.layers = [m for m in model.modules() if isinstance(m, PRECAST_LAYERS)]
        params = self._current()
        if any(p.dtype != torch.float32 for p in params):
            raise ValueError(
                "LowPrecisionWeights needs float32 parameters (mixed precision keeps the weights "
                "float32 and casts them)"
            )
        if len({p.device for p in params}) > 1:
            raise ValueError("LowPrecisionWeights needs every layer's parameters on one device")
        self.params = params
        self.spans: list[Span] = []
        offset = 0
        for p in params:
            self.spans.append((offset, offset + p.numel(), p.shape))
            offset += p.numel()
        self.flat = torch.empty(offset, dtype=torch.float32, device=params[0].device if params else "cpu")
        self._bind()

    def _current(self) -> list[Tensor]:
        """The layers' parameters now (``load_state_dict(assign=True)`` replaces the objects)."""
        params: list[Tensor] = []
        for layer in self.layers:
            params += [layer.weight] + ([layer.bias] if layer.bias is not None else [])
        return params

    def _bind(self) -> None:
        self.params = self._current()
        if [p.shape for p in self.params] != [shape for _, _, shape in self.spans]:
            raise ValueError("LowPrecisionWeights: the layers' parameter shapes changed since binding")
        with torch.no_grad():
            for p, (a, b, _) in zip(self.params, self.spans):
                self.flat[a:b].copy_(p.detach().reshape(-1))
                p.data = self.flat[a:b].view(p.shape)

    def bound(self) -> bool:
        """Whether every parameter of the layers is the one bound, still living in the flat buffer."""
        base, size = self.flat.data_ptr(), self.flat.element_size()
        current = self._current()
        return (
            len(current) == len(self.params)
            and all(p is q for p, q in zip(current, self.params))
            and all(p.data_ptr() == base + a * size for p, (a, _, _) in zip(self.params, self.spans))
        )

    @contextlib.contextmanager
    def cast(self) -> Iterator[None]:
        """Forward passes inside use the low-precision copies (one cast op for all layers)."""
        if not self.params:
            yield
            return
        if not self.bound():
            self._bind()
        low = _CastFlat.apply(self.flat, self.dtype, self.spans, *self.params)
        it = iter(low)
        try:
            for layer in self.layers:
                layer.low_precision = (next(it), next(it) if layer.bias is not None else None)
            yield
        finally:
            for layer in self.layers:
                layer.low_precision = None
