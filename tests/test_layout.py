"""The package's shape: no import cycles, small files, a short pretraining forward, configs shipped inside."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import wav2vec2_lite
from wav2vec2_lite.models import Wav2Vec2ForPreTraining

PACKAGE = Path(wav2vec2_lite.__file__).resolve().parent
REPO = PACKAGE.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Package module -> package modules it imports, at any level of the file (functions included)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `from pkg.mod import name` -> pkg.mod
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_finds_a_cycle_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "wav2vec2_lite.config" in graph["wav2vec2_lite.models"]  # it does see imports


def test_no_import_cycles_function_level_imports_included():
    assert find_cycle(import_graph()) is None


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long


def test_the_trainer_and_the_pretraining_forward_stay_short():
    assert len((PACKAGE / "train" / "trainer.py").read_text().splitlines()) <= 400
    lines, _ = inspect.getsourcelines(Wav2Vec2ForPreTraining.forward)
    assert len(lines) <= 45


def test_configs_ship_inside_the_package_and_the_top_level_folder_is_the_same():
    from wav2vec2_lite.cli import CONFIG_DIR

    inside = PACKAGE / "configs"
    assert {"pretrain.yaml", "finetune.yaml", "model", "data"} <= {p.name for p in inside.iterdir()}
    if "W2V2_CONFIG_DIR" not in os.environ:
        assert Path(CONFIG_DIR).resolve() == inside.resolve()
    top = REPO / "configs"  # the design card's top-level configs/: a symlink to the package's
    assert top.is_symlink() and top.resolve() == inside.resolve()
