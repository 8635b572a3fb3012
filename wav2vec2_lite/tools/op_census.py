"""Count what a step does, by dtype: dtype casts (calls and bytes) and matmul/conv FLOPs.

:class:`OpCensus` is a ``TorchDispatchMode``: it sees every aten op below autocast, so the
casts autocast inserts are counted with the ones the model makes. A cast is a ``_to_copy``
or ``copy_`` whose output dtype differs from its input's. FLOPs use torch's own formulas
(``torch.utils.flop_counter``) for matmuls, convolutions (and their backward) and attention,
attributed to the dtype the op computes in (a ``cat`` into a buffer of another dtype counts
as a cast too); the CPU flash-attention kernels, which that
registry lacks, use its attention formulas. Counts do not depend on the machine's speed or
load, so they can be compared across runs (the benchmark and tests/test_op_census.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCensus", "CensusResult", "census"]

_aten = torch.ops.aten
_CASTS = {_aten._to_copy.default, _aten.copy_.default}


def _shape(x: Any) -> Any:
    return x.shape if isinstance(x, torch.Tensor) else x


def _cpu_sdpa(q, k, v, *args, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q.shape, k.shape, v.shape)


def _cpu_sdpa_backward(grad, q, k, v, *args, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad.shape, q.shape, k.shape, v.shape)


_EXTRA: dict[Any, Callable[..., int]] = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


@dataclass
class CensusResult:
    """What one region ran: casts and FLOPs per dtype."""

    cast_calls: int = 0
    cast_bytes: int = 0
    casts_by_kind: Counter = field(default_factory=Counter)
    """``"float32->bfloat16"`` etc. -> calls."""
    flops: Counter = field(default_factory=Counter)
    """dtype name -> FLOPs of matmuls, convolutions and attention computed in it."""

    def flop_share(self, dtype: str = "bfloat16") -> float:
        """The fraction of counted FLOPs done in ``dtype`` (0 when none were counted)."""
        total = sum(self.flops.values())
        return self.flops.get(dtype, 0) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cast_calls": self.cast_calls,
            "cast_mb": round(self.cast_bytes / 2**20, 2),
            "casts_by_kind": dict(self.casts_by_kind),
            "gflops": {k: v / 1e9 for k, v in self.flops.items()},
            "bf16_flop_share": round(self.flop_share("bfloat16"), 4),
        }


class OpCensus(TorchDispatchMode):
    """``with OpCensus() as c: step()`` then ``c.result``."""

    def __init__(self) -> None:
        super().__init__()
        self.result = CensusResult()

    def _cast(self, src: torch.dtype, dst: torch.Tensor) -> None:
        self.result.cast_calls += 1
        self.result.cast_bytes += dst.numel() * dst.element_size()
        self.result.casts_by_kind[f"{_name(src)}->{_name(dst.dtype)}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if func in _CASTS:
            src = args[1] if func is _aten.copy_.default else args[0]
            dst = out if isinstance(out, torch.Tensor) else args[0]
            if isinstance(src, torch.Tensor) and src.dtype != dst.dtype:
                self._cast(src.dtype, dst)
        elif func is _aten.cat.out:  # a gather into a buffer of another dtype casts too
            tensors = [t for t in args[0] if t.numel()]
            if tensors and tensors[0].dtype != out.dtype:
                self._cast(tensors[0].dtype, out)
        elif packet in _EXTRA or packet in flop_counter.flop_registry:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None:
                if packet in _EXTRA:
                    flops = _EXTRA[packet](*args, **kwargs)
                else:
                    flops = flop_counter.flop_registry[packet](*args, **kwargs, out_val=out)
                self.result.flops[_name(first.dtype)] += int(flops)
        return out


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def census(fn: Callable[[], Any]) -> CensusResult:
    """Run ``fn()`` once under :class:`OpCensus` and return its counts."""
    with OpCensus() as c:
        fn()
    return c.result
