"""The low-precision speed path: one transform that swaps fast modules into a built model.

The modules under ``modules/`` hold the precision *policy* (float32 LayerNorm statistics, the
oneDNN guard of ``conv_precision``, the autocast-off regions of losses and targets) and run under
autocast, or with bf16 weights, as plain torch layers do. What makes a bf16 run fast is here:

* **flat weights** (training): the parameters of the Linear layers (and of the unfolded convs)
  live as views of one float32 buffer, cast in one op per forward; their bf16 gradients are
  gathered and cast back in one op. The numbers are autocast's (round-to-nearest both ways),
  ~200 cast ops fewer per BASE step (``tools/op_census.py``); both buffers are reused from
  step to step (:class:`_Reused`);
* **unfolded convolutions**: the feature encoder's strided convs in bf16 as matmuls over
  unfolded windows (im2col), forward and in :class:`LeanConvStack`'s backward: correct for every
  shape (oneDNN's bf16 convs are not), 3x faster than the float32 convs on a CPU with AMX and
  as fast as oneDNN's bf16 convs without it;
* **bf16 attention with dropout**: torch's CPU SDPA runs a bf16 attention with dropout in
  float32 (five casts per layer); :func:`low_precision_attention` keeps it in bf16.

Which of these pays depends on the CPU: :func:`choose_plan` reads its bf16 kind at run time
(/proc/cpuinfo's flags lowered by ``ONEDNN_MAX_CPU_ISA``, ``tools/hardware.py``) and takes that
kind's entry in :data:`CPU_BF16_PLANS` (a CPU without AMX is measured only by emulation so far:
docs/benchmarks/2026-12-06_no_amx_emulated.md).

:func:`speed_up_training` (``train/precision.py`` for ``trainer.precision=bf16``) and
:func:`speed_up_inference` (``inference_dtype.cast_for_inference``) apply it in place: a module
is swapped by changing its class to a fast subclass, so parameters, buffers, hooks and
state-dict keys stay as they are (checkpoints, DDP's parameter list); apply it before
``compile_dense``. :func:`plain_modules` swaps them back. A float32 forward of a swapped model
takes the plain modules' paths: the same numbers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from wav2vec2_lite.modules.context import SelfAttention
from wav2vec2_lite.modules.feature_encoder import ConvLayer, FeatureEncoder
from wav2vec2_lite.tools import hardware

__all__ = [
    "SpeedPlan",
    "CPU_BF16_PLANS",
    "plan_for",
    "cpu_bf16_kind",
    "choose_plan",
    "speed_up_training",
    "speed_up_inference",
    "plain_modules",
    "TrainingSpeedup",
    "FlatWeights",
    "low_precision_attention",
    "unfold_windows",
    "unfolded_conv1d",
    "UnfoldedConvs",
]

_LOW = (torch.bfloat16, torch.float16)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SpeedPlan:
    """Which fast paths a run takes."""

    flat_weights: bool = True
    """Training: weights cast in one op per forward, gradients gathered in one (autocast's numbers)."""
    unfolded_convs: bool = False
    """The feature encoder's convs in the low dtype as unfolded matmuls (else float32 on CPU)."""
    attention: bool = False
    """Attention with dropout in the low dtype on CPU (else torch's SDPA, float32 inside)."""


#: The plan for CPU bf16 per :func:`~wav2vec2_lite.tools.hardware.bf16_kind`: with bf16 dot products,
#: AMX or not, every fast path (without AMX the unfolded convs run as fast as oneDNN's bf16 convs, and
#: bf16 matmuls are 4x float32 ones on the AMD EPYC without AMX); with emulated bf16 (AVX2) the flat
#: weights only. Measured: docs/benchmarks.md, "The bf16 speed path, chosen per CPU".
CPU_BF16_PLANS = {
    "amx": SpeedPlan(flat_weights=True, unfolded_convs=True, attention=True),
    "avx512_bf16": SpeedPlan(flat_weights=True, unfolded_convs=True, attention=True),
    "emulated": SpeedPlan(flat_weights=True),
}


def plan_for(device_type: str, dtype: torch.dtype, cpu_bf16: str | None) -> SpeedPlan:
    """The plan for ``dtype`` on ``device_type``, a CPU whose bf16 is ``cpu_bf16`` (``"amx"``,
    ``"avx512_bf16"``, ``"emulated"``: :func:`~wav2vec2_lite.tools.hardware.bf16_kind`); a pure
    function. Other devices and dtypes (CUDA, CPU fp16): flat weights only."""
    if device_type != "cpu" or dtype != torch.bfloat16:
        return SpeedPlan(flat_weights=True)
    if cpu_bf16 not in CPU_BF16_PLANS:
        raise ValueError(f"cpu_bf16: expected one of {sorted(CPU_BF16_PLANS)}, got {cpu_bf16!r}")
    return CPU_BF16_PLANS[cpu_bf16]


def cpu_bf16_kind() -> str:
    """This CPU's bf16 as oneDNN may run it: /proc/cpuinfo's flags, lowered by ``ONEDNN_MAX_CPU_ISA``
    (or ``DNNL_MAX_CPU_ISA``) when set below AMX or bf16; without /proc/cpuinfo, torch's capability
    says native bf16 or not, never AMX."""
    kind = hardware.bf16_kind(hardware.cpu_kind()["flags"], hardware.onednn_isa_cap())
    if kind is None:
        kind = "avx512_bf16" if hardware.native_bf16("cpu") else "emulated"
    return kind


def choose_plan(device_type: str, dtype: torch.dtype = torch.bfloat16) -> SpeedPlan:
    """The faster plan for ``dtype`` on this machine's ``device_type``, read at run time:
    :func:`plan_for` of :func:`cpu_bf16_kind` (:data:`CPU_BF16_PLANS`)."""
    kind = cpu_bf16_kind() if device_type == "cpu" and dtype == torch.bfloat16 else None
    return plan_for(device_type, dtype, kind)


# ----------------------------------------------------------------------------- fast modules


class FastLinear(nn.Linear):
    """``nn.Linear`` that uses the weights :class:`FlatWeights` cast, inside its ``cast()``."""

    cast_weights: tuple[Tensor, Tensor | None] | None = None

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.cast_weights or (self.weight, self.bias)
        return F.linear(x, weight, bias)


class CastConv1d(nn.Conv1d):
    """A feature-encoder conv whose weights :class:`FlatWeights` casts (read by the fast encoder)."""

    cast_weights: tuple[Tensor, Tensor | None] | None = None


def _weights(layer: nn.Module) -> tuple[Tensor, Tensor | None]:
    return getattr(layer, "cast_weights", None) or (layer.weight, layer.bias)


def _unfolded_dtype(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The low dtype a CPU conv over ``x`` runs unfolded in: CPU autocast's, or that of low-precision
    weights without autocast (a ``cast_for_inference`` model); None: the plain conv."""
    if x.device.type != "cpu":
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return dtype if dtype in _LOW else None
    return weight.dtype if weight.dtype in _LOW else None


def unfold_windows(x: Tensor, k: int, stride: int) -> Tensor:
    """``(B, C, S) -> (B, C k, T)``: each output frame's receptive window, channel-major (the
    order of ``weight.reshape(C_out, C k)``); the im2col both directions of the matmul conv read."""
    windows = x.unfold(2, k, stride)  # (B, C, T, k), a view
    b, c, t, _ = windows.shape
    return windows.permute(0, 1, 3, 2).reshape(b, c * k, t)


def unfolded_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int) -> Tensor:
    """``F.conv1d`` (no padding) as one matmul over the unfolded windows (im2col).

    ``x (B, C_in, S), weight (C_out, C_in, k) -> (B, C_out, T)``, channels-first throughout
    (no transposes: the norms and the next layer read it as it is): the convolution's
    numbers up to rounding, in any dtype.
    """
    c_out, c_in, k = weight.shape
    windows = unfold_windows(x, k, stride)  # (B, C_in k, T)
    batch = windows.shape[0]
    # bmm on the broadcast weight: torch.matmul would fold the batch into a matrix by transposing
    y = torch.bmm(weight.reshape(c_out, c_in * k).expand(batch, c_out, c_in * k), windows)  # (B, C_out, T)
    return y if bias is None else y + bias[:, None]


class UnfoldedConvs:
    """:class:`LeanConvStack`'s convolutions as :func:`unfolded_conv1d` and its two-matmul backward."""

    forward = staticmethod(unfolded_conv1d)

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
        """(input, weight, bias) gradients, all in ``cdt``: two matmuls over the unfolded windows,
        the input gradient's overlapping windows summed in place (as a low-precision convolution's
        backward rounds them). ``chunk_elements`` is not used (the matmuls need no workspace)."""
        c_out, c_in, k = weight.shape
        w = weight.to(cdt).reshape(c_out, c_in * k)
        s = conv.stride[0]
        batch, _, length = x_in.shape
        frames = g.shape[-1]
        windows = unfold_windows(x_in, k, s)
        gw = torch.bmm(g, windows.transpose(1, 2)).sum(0).reshape(c_out, c_in, k)
        del windows
        gb = g.sum(dim=(0, 2)) if conv.bias is not None else None
        gx = None
        if need_input:
            gwin = torch.bmm(w.t().expand(batch, c_in * k, c_out), g).reshape(batch, c_in, k, frames)
            gx = torch.zeros(batch, c_in, length, dtype=cdt, device=g.device)
            for j in range(k):  # window offset j of frame t reads sample t * s + j
                gx[:, :, j : j + s * (frames - 1) + 1 : s] += gwin[:, :, j]
        return gx, gw, gb


class FastConvLayer(ConvLayer):
    """:class:`ConvLayer` whose conv runs as a low-precision unfolded matmul on CPU (the norm on its
    bf16 output with float32 statistics, no cast of the longest tensors); otherwise the plain path."""

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        cdt = _unfolded_dtype(x, self.conv.weight)
        if cdt is None:
            return super().forward(x, lengths)
        weight, bias = _weights(self.conv)
        with torch.autocast("cpu", enabled=False):
            bias = None if bias is None else bias.to(cdt)
            y = unfolded_conv1d(x.to(cdt), weight.to(cdt), bias, self.conv.stride[0])
            return self._norm_and_gelu(y, lengths)


class FastFeatureEncoder(FeatureEncoder):
    """:class:`FeatureEncoder` whose :class:`LeanConvStack` runs :class:`UnfoldedConvs` in the low
    dtype on CPU, with the weights :class:`FlatWeights` cast; otherwise the plain path."""

    def stack_parameters(self) -> list[Tensor]:
        swap = {}
        for layer in self.conv_layers:
            cast = getattr(layer.conv, "cast_weights", None)
            if cast is not None:
                swap[id(layer.conv.weight)] = cast[0]
                if cast[1] is not None:
                    swap[id(layer.conv.bias)] = cast[1]
        return [swap.get(id(p), p) for p in self.parameters()]

    def stack_convs(self, wave: Tensor) -> tuple[torch.dtype, type]:
        cdt = _unfolded_dtype(wave, self.conv_layers[0].conv.weight)
        return super().stack_convs(wave) if cdt is None else (cdt, UnfoldedConvs)


def low_precision_attention(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0
) -> Tensor:
    """Scaled dot-product attention with dropout that stays in q's dtype (bf16/fp16) on CPU.

    ``(B, H, T, d) x3, key mask (B, 1, 1, T) bool True=attend -> (B, H, T, d)``. torch's CPU
    SDPA has no low-precision kernel with dropout: its math fallback casts q, k, v up and runs
    both matmuls in float32 (five casts per layer, none of the bf16 speed). Here both matmuls
    run in q's dtype (float32 accumulation inside the kernel) and the softmax reduces in
    float32 internally, as CUDA's flash attention does; every query has at least one valid key.
    """
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))  # (B, H, T, T)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        probs = F.dropout(torch.softmax(scores, dim=-1), dropout_p, training=dropout_p > 0)
        return torch.matmul(probs, v)


class FastSelfAttention(SelfAttention):
    """:class:`SelfAttention` whose core with dropout stays in q's low dtype on CPU."""

    def core(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float) -> Tensor:
        if dropout_p > 0 and q.device.type == "cpu" and q.dtype in _LOW:
            return low_precision_attention(q, k, v, attn_mask, dropout_p)
        return super().core(q, k, v, attn_mask, dropout_p)


_FAST = (FastLinear, CastConv1d, FastConvLayer, FastFeatureEncoder, FastSelfAttention)
_PLAIN = {fast: fast.__bases__[0] for fast in _FAST}


def _swap(module: nn.Module, fast: type) -> None:
    """``module`` becomes a ``fast`` (its plain class's subclass) in place, if it is that plain class."""
    if type(module) is _PLAIN[fast]:
        module.__class__ = fast


def plain_modules(model: nn.Module) -> nn.Module:
    """Swap every fast module of ``model`` back to its plain class (in place) and return ``model``."""
    for module in model.modules():
        if type(module) in _PLAIN:
            module.__dict__.pop("cast_weights", None)
            module.__class__ = _PLAIN[type(module)]
    return model


# ----------------------------------------------------------------------------- flat weights

Span = tuple[int, int, torch.Size]


def _storage_users(t: Tensor) -> int | None:
    """How many tensors share ``t``'s storage (views, autograd's saved tensors, ``.grad``s), as
    torch counts them; None where this torch does not say (then nothing is reused)."""
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    return None if use_count is None else use_count(t.untyped_storage()._cdata)


class _Reused:
    """A buffer handed out again while nothing but this holder uses it, else a fresh one: a large
    buffer allocated anew each step page-faults on first touch, which halved the speed of the cast
    and the gather (docs/benchmarks/2026-12-06c_bf16_finetune_gap.md). Reused only when torch
    counts no other user of the storage (no view of an earlier step, no tensor autograd saved, no
    ``.grad`` pointing into it); otherwise a fresh buffer."""

    def __init__(self) -> None:
        self.buffer: Tensor | None = None
        self.alone: int | None = None  # the use count of a buffer only this holds

    def get(self, numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        buf = self.buffer
        same = buf is not None and (buf.numel(), buf.dtype, buf.device) == (numel, dtype, device)
        if same and self.alone is not None and _storage_users(buf) == self.alone:
            return buf
        self.buffer = torch.empty(numel, dtype=dtype, device=device)
        self.alone = _storage_users(self.buffer)
        return self.buffer


class _CastFlat(torch.autograd.Function):
    """``(flat float32 buffer, owner, *params) -> one low-precision view per param``.

    The params are the buffer's views, passed so that autograd routes their gradients; the
    forward casts the buffer in one op into ``owner.cast_buffer``, the backward concatenates the
    incoming gradients into ``owner.grad_buffer``, float32 (one op that casts: 3x faster than
    ``cat`` then a cast), and returns its views, one per param.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, owner: "FlatWeights", *params: Tensor):  # type: ignore[override]
        low = owner.cast_buffer.get(flat.numel(), owner.dtype, flat.device)
        low.copy_(flat)
        ctx.owner, ctx.high = owner, flat.dtype
        return tuple(low[a:b].view(shape) for a, b, shape in owner.spans)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        need = ctx.needs_input_grad[2:]
        used = [i for i, (g, n) in enumerate(zip(grads, need)) if n and g is not None]
        out: list[Tensor | None] = [None] * len(grads)
        if used:  # packed in order (frozen and skipped params take no room): a prefix of the buffer
            owner = ctx.owner
            parts = [grads[i].reshape(-1) for i in used]
            size = sum(p.numel() for p in parts)
            buffer = owner.grad_buffer.get(owner.flat.numel(), ctx.high, parts[0].device)
            gathered = torch.cat(parts, out=buffer[:size])
            offset = 0
            for i in used:
                n = grads[i].numel()
                out[i] = gathered[offset : offset + n].view(owner.spans[i][2])
                offset += n
        return (None, None, *out)


class FlatWeights:
    """The parameters of ``layers`` (fast layers with a ``cast_weights`` slot) in one flat buffer;
    :meth:`cast` hands them to the layers in ``dtype`` for the forward passes inside it.

    Binding replaces each parameter's storage by a slice of the buffer (``p.data``), so do it
    after the model is on its device and before anything copies the parameters' storage
    (DDP keeps the Parameter objects, which are unchanged). A parameter whose storage was
    replaced later (e.g. ``load_state_dict(assign=True)``) is noticed and bound again.
    """

    def __init__(self, layers: list[nn.Module], dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.layers = layers
        params = self._current()
        if any(p.dtype != torch.float32 for p in params):
            raise ValueError(
                "FlatWeights needs float32 parameters "
                "(mixed precision keeps the weights float32 and casts them)"
            )
        if len({p.device for p in params}) > 1:
            raise ValueError("FlatWeights needs every layer's parameters on one device")
        self.params = params
        self.spans: list[Span] = []
        offset = 0
        for p in params:
            self.spans.append((offset, offset + p.numel(), p.shape))
            offset += p.numel()
        self.flat = torch.empty(offset, dtype=torch.float32, device=params[0].device if params else "cpu")
        self.cast_buffer = _Reused()  # where cast() writes the low-precision copy of flat
        self.grad_buffer = _Reused()  # where the backward gathers the float32 gradients, as flat
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
            raise ValueError("FlatWeights: the layers' parameter shapes changed since binding")
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
        low = _CastFlat.apply(self.flat, self, *self.params)
        it = iter(low)
        try:
            for layer in self.layers:
                layer.cast_weights = (next(it), next(it) if layer.bias is not None else None)
            yield
        finally:
            for layer in self.layers:
                layer.cast_weights = None


# ----------------------------------------------------------------------------- the transform


@dataclass
class TrainingSpeedup:
    """What :func:`speed_up_training` did: its plan, and the flat weights to cast per forward."""

    plan: SpeedPlan
    weights: FlatWeights | None

    def cast(self) -> contextlib.AbstractContextManager:
        """Enter around each forward pass (inside autocast): the one-op weight cast, if any."""
        return self.weights.cast() if self.weights is not None else contextlib.nullcontext()


def _feature_encoders(model: nn.Module) -> list[FeatureEncoder]:
    return [m for m in model.modules() if isinstance(m, FeatureEncoder)]


def speed_up_training(
    model: nn.Module, dtype: torch.dtype = torch.bfloat16, plan: SpeedPlan | None = None, **overrides
) -> TrainingSpeedup:
    """Swap ``model``'s fast modules in for mixed-precision training in ``dtype`` (in place), as
    ``plan`` (default :func:`choose_plan` for the model's device) with ``overrides`` says; run
    each forward inside ``torch.autocast`` and the returned handle's :meth:`~TrainingSpeedup.cast`.
    Call once the model is on its device; float32 parameters stay float32."""
    device = next(model.parameters()).device.type
    plan = replace(plan or choose_plan(device, dtype), **overrides)
    if plan.unfolded_convs:
        for encoder in _feature_encoders(model):
            _swap(encoder, FastFeatureEncoder)
            for layer in encoder.conv_layers:
                _swap(layer, FastConvLayer)
                if plan.flat_weights:
                    _swap(layer.conv, CastConv1d)
    if plan.attention:
        for module in model.modules():
            _swap(module, FastSelfAttention)
    weights = None
    if plan.flat_weights:
        for module in model.modules():
            _swap(module, FastLinear)
        layers = [m for m in model.modules() if isinstance(m, (FastLinear, CastConv1d))]
        weights = FlatWeights(layers, dtype)
    return TrainingSpeedup(plan, weights)


def speed_up_inference(model: nn.Module, dtype: torch.dtype, plan: SpeedPlan | None = None) -> SpeedPlan:
    """Swap the fast modules of a model whose weights ``inference_dtype`` stores in ``dtype`` (in
    place): with unfolded convs in the plan, the feature encoder's convs are stored in ``dtype`` too
    and run as unfolded matmuls; otherwise they stay float32. Returns the plan taken."""
    device = next(model.parameters()).device.type
    plan = plan or choose_plan(device, dtype)
    if plan.unfolded_convs and device == "cpu":
        for encoder in _feature_encoders(model):
            _swap(encoder, FastFeatureEncoder)
            for layer in encoder.conv_layers:
                _swap(layer, FastConvLayer)
                layer.conv.to(dtype)
    return plan
