"""Safe evaluation of fairseq's config literals (``conv_feature_layers``, ``loss_weights``, ...).

fairseq stores them as Python expression strings; they are parsed here without ``eval``.
"""

from __future__ import annotations

import ast
from typing import Any

from wav2vec2_lite.config import ConfigError

__all__ = ["parse_fairseq_literal", "parse_conv_layers", "parse_floats"]

_MAX_ITEMS = 10_000


def parse_fairseq_literal(text: str, *, what: str = "value") -> Any:
    """Evaluate a fairseq config string such as ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``.

    Only numbers, lists, tuples, unary minus, ``+`` and ``*`` are allowed (never ``eval``);
    anything else raises :class:`ConfigError` naming ``what``.
    """

    def bad(node: ast.AST, why: str) -> ConfigError:
        return ConfigError(
            f"fairseq {what}={text!r}: {why} ({type(node).__name__} at column "
            f"{getattr(node, 'col_offset', 0)}); only numbers, lists, tuples, + and * are allowed"
        )

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            if type(v) not in (int, float):
                raise bad(node, "a sign applies to numbers only")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                if type(a) is not type(b) and not (type(a) in (int, float) and type(b) in (int, float)):
                    raise bad(node, f"cannot add {type(a).__name__} and {type(b).__name__}")
                out = a + b
            else:
                if isinstance(a, int) and isinstance(b, (list, tuple)):
                    a, b = b, a
                if isinstance(a, (list, tuple)):
                    if type(b) is not int or b < 0 or len(a) * b > _MAX_ITEMS:
                        raise bad(node, f"a sequence repeats by a count in 0..{_MAX_ITEMS // max(len(a), 1)}")
                elif type(a) not in (int, float) or type(b) not in (int, float):
                    raise bad(node, f"cannot multiply {type(a).__name__} and {type(b).__name__}")
                out = a * b
            if isinstance(out, (list, tuple)) and len(out) > _MAX_ITEMS:
                raise bad(node, f"more than {_MAX_ITEMS} items")
            return out
        raise bad(node, "not allowed")

    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"fairseq {what}={text!r} is not a Python literal expression: {e.msg}") from None
    return ev(tree)


def parse_conv_layers(value: Any) -> list[tuple[int, int, int]]:
    layers = parse_fairseq_literal(value, what="conv_feature_layers") if isinstance(value, str) else value
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ConfigError(
            f"fairseq conv_feature_layers={value!r}: expected a non-empty list of (dim, kernel, stride)"
        )
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, (list, tuple)) or len(layer) != 3 or not all(type(v) is int for v in layer):
            raise ConfigError(
                f"fairseq conv_feature_layers={value!r}: entry {i} is {layer!r}, "
                "expected (dim, kernel, stride) ints"
            )
        out.append(tuple(layer))
    return out


def parse_floats(value: Any, n: int | None, what: str) -> list[float]:
    seq = parse_fairseq_literal(value, what=what) if isinstance(value, str) else value
    if (
        not isinstance(seq, (list, tuple))
        or (n is not None and len(seq) != n)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seq)
    ):
        raise ConfigError(
            f"fairseq {what}={value!r}: expected " + (f"{n} numbers" if n else "a list of numbers")
        )
    return [float(v) for v in seq]
