"""Running a trained model in bfloat16 for inference (transcribe, evaluate, extract).

:func:`cast_for_inference` stores the weights that do the bulk of the work, every Linear
(transformer blocks, feature projection, CTC head), in the low-precision dtype, so no weight
is cast per forward pass (autocast casts each weight at each use). What stays float32:

* the positional convolution of a model with < 32 channels per group: oneDNN's bf16
  convolutions give wrong results for such shapes on CPUs with native bf16
  (``modules/conv_precision.py``); its input is cast up and its output back down at the
  boundary. With more (BASE, LARGE) it is bf16 too;
* on a CPU, the feature encoder's convolutions, for the same reason, unless the speed
  transform (``low_precision_speed.speed_up_inference``, chosen per CPU) runs them in bf16 as
  matmuls over unfolded windows, correct for every shape: on a CPU with native bf16 (AMX or
  ``avx512_bf16``). On CUDA they are
  bf16;
* normalisation parameters, and the statistics (``Fp32LayerNorm`` normalises in float32;
  GroupNorm/LayerNorm on bf16 inputs accumulate in float32);
* the pretraining objective (quantizer, codebooks): units are computed from the bf16
  features cast to float32;
* the logits leave the model in bf16 and are decoded in float32.

The residual stream between blocks is bf16, as in transformers' ``torch_dtype=bfloat16``.
Quality against float32 is measured in tests/test_inference_dtype.py and docs/benchmarks.md.
"""

from __future__ import annotations

import torch
from torch import nn

from wav2vec2_lite.low_precision_speed import plain_modules, speed_up_inference
from wav2vec2_lite.models import backbone_of
from wav2vec2_lite.modules.conv_precision import onednn_low_precision_ok
from wav2vec2_lite.modules.quantizer import GumbelProductQuantizer

__all__ = ["INFERENCE_DTYPES", "cast_for_inference", "inference_dtype_of", "parse_inference_dtype"]

INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_ALIASES = {"fp32": "float32", "32": "float32", "bf16": "bfloat16"}


def parse_inference_dtype(name: str | torch.dtype) -> torch.dtype:
    """``float32`` or ``bfloat16`` (also ``fp32``, ``bf16``, a torch dtype); anything else is a ValueError."""
    if isinstance(name, torch.dtype):
        if name in INFERENCE_DTYPES.values():
            return name
        raise ValueError(f"inference dtype must be float32 or bfloat16, got {name}")
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in INFERENCE_DTYPES:
        raise ValueError(f"inference dtype must be float32 or bfloat16 (or bf16), got {name!r}")
    return INFERENCE_DTYPES[key]


def inference_dtype_of(model: nn.Module) -> str:
    """``float32`` or ``bfloat16``: what :func:`cast_for_inference` set (float32 if never called)."""
    return str(getattr(model, "inference_dtype", torch.float32)).removeprefix("torch.")


@torch.no_grad()
def cast_for_inference(model: nn.Module, dtype: str | torch.dtype = torch.bfloat16) -> nn.Module:
    """``model`` (a backbone, CTC or pretraining model), in eval mode, with its Linear weights in
    ``dtype`` and the rest as the module docstring says; float32 restores every weight to float32.

    Changes ``model`` in place and returns it. Training a model cast this way is not supported
    (train in float32 weights with ``trainer.precision=bf16``).
    """
    dtype = parse_inference_dtype(dtype)
    backbone = backbone_of(model)
    plain_modules(model).float()
    if dtype != torch.float32:
        # a quantized input's codebook logits stay float32, as the objective's quantizer does
        quantizer_parts = {
            id(m) for q in backbone.modules() if isinstance(q, GumbelProductQuantizer) for m in q.modules()
        }
        for module in backbone.modules():
            if isinstance(module, nn.Linear) and id(module) not in quantizer_parts:
                module.to(dtype)
        if next(model.parameters()).device.type != "cpu":  # no oneDNN guard needed
            for layer in backbone.feature_encoder.conv_layers:
                layer.conv.to(dtype)
        if onednn_low_precision_ok(backbone.context.pos_conv.conv, dtype):
            backbone.context.pos_conv.to(dtype)
        head = getattr(model, "lm_head", None)
        if isinstance(head, nn.Linear):
            head.to(dtype)
        speed_up_inference(model, dtype)  # per CPU: the feature encoder as bf16 unfolded matmuls
    model.inference_dtype = dtype
    return model.eval()
