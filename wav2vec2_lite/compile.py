"""``torch.compile`` for the dense part of a model: what compiles without graph breaks.

The feature projection, the context network (positional conv + transformer blocks) and a
CTC head are dense: fixed op sequences over (B, T, D) tensors, traced once for dynamic
lengths, where fusing the elementwise ops (norms, GELU, dropout, residuals) pays. The rest
stays eager on purpose: span masks and distractors are sampled with data-dependent shapes
(``nonzero``, counts read with ``.item()``) and the objectives gather masked frames, so
compiling them would break the graph at every step; the conv feature encoder is big
convolution kernels plus its memory-lean backward (``LeanConvStack``, an autograd Function
dynamo cannot trace). Compilation is in place (``nn.Module.compile``): state-dict keys and
checkpoints do not change. LayerDrop in training still breaks the context network's graph
(a random branch per block). The low-precision speed transform (``low_precision_speed``) swaps
module classes: apply it first, as the trainer and ``cast_for_inference`` do.
"""

from __future__ import annotations

from torch import nn

from wav2vec2_lite.models import backbone_of

__all__ = ["compile_dense", "dense_parts"]


def dense_parts(model: nn.Module) -> list[nn.Module]:
    """The submodules :func:`compile_dense` compiles, in forward order."""
    backbone = backbone_of(model)
    parts = [backbone.feature_projection, backbone.context]
    head = getattr(model, "lm_head", None)
    return parts + ([head] if head is not None else [])


def compile_dense(model: nn.Module, **options) -> nn.Module:
    """Compile ``model``'s dense parts in place (``dynamic=True`` unless given) and return it."""
    options.setdefault("dynamic", True)
    for part in dense_parts(model):
        part.compile(**options)
    return model
