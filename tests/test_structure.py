"""The package's shape: imports only run down the stages, and modules and functions stay small."""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "moco_bench"
# Bottom to top. A module may import its own stage and the ones below; results is a leaf library over core.
STAGES = ["core", "results", "data", "models", "convert", "evaluators", "pretrain", "engine", "top"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if (len(parts) > 2 or len(parts) == 2) and parts[1] in STAGES else "top"


def _modules():
    return _parsed(PACKAGE)


@functools.lru_cache(maxsize=4)
def _parsed(package: Path) -> tuple:
    """(module name, path, syntax tree) of every module of ``package``, parsed once per test session."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        out.append((name, path, ast.parse(path.read_text(), filename=str(path))))
    return tuple(out)


def _imports(tree: ast.AST):
    for node in ast.walk(tree):  # module level and inside functions alike
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def test_no_import_runs_up_the_stages():
    upward = []
    for name, _, tree in _modules():
        own = STAGES.index(_stage(name))
        for target in _imports(tree):
            if not target.startswith("moco_bench.") or target.count(".") < 1:
                continue
            stage = _stage(target)
            if stage in STAGES and STAGES.index(stage) > own:
                upward.append(f"{name} ({_stage(name)}) imports {target} ({stage})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_results_is_a_leaf_over_core():
    for name, _, tree in _modules():
        if _stage(name) == "results":
            assert {_stage(t) for t in _imports(tree) if t.startswith("moco_bench.")} <= {"core", "results"}, name


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path, tree in _modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


# Protocol families (subpackages of moco_bench.evaluators) share what lies directly in moco_bench/evaluators (the
# evaluator contract, feature extraction and its cache, the neighbour search and vote) and import each other only
# where declared here, with why.
FAMILY_IMPORTS = {
    "segmentation": {"detection"},  # the FCN transfer reuses the detectron2 transfer's trials, hooks and schema
}
# Stages above the evaluators that may use a family directly (everything else uses moco_bench.evaluators.catalog).
FAMILY_USERS = {"engine", "gpucheck", "top"}
# Strings that name modules of the package on purpose: entry points of new processes (``python -m``) and the
# package holding the report's templates. A registration by module name is never one of them.
MODULE_STRINGS = {"moco_bench.gpucheck.ddp_child", "moco_bench.results", "moco_bench"}  # and the distribution


def _family(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 3 and parts[1] == "evaluators" and (PACKAGE / "evaluators" / parts[2]).is_dir():
        return parts[2]
    return None


def _module_names() -> set[str]:
    return {name for name, _, _ in _modules()}


def _resolve(target: str, names: set[str]) -> str | None:
    """The package module an import names (``from a.b import c`` may name module ``a.b.c`` or a name in ``a.b``)."""
    while target and target not in names:
        target = target.rpartition(".")[0]
    return target or None


def test_imports_between_protocol_families_are_declared():
    undeclared = []
    for name, _, tree in _modules():
        own = _family(name)
        for target in _imports(tree):
            other = _family(target) if target.startswith("moco_bench.") else None
            if other is None or other == own:
                continue
            if own is None and _stage(name) in FAMILY_USERS:
                continue
            if name == "moco_bench.evaluators.catalog" and target.endswith(".schema"):
                continue  # the one place that lists the families (each registers its evaluators in its schema)
            if own is None or other not in FAMILY_IMPORTS.get(own, set()):
                undeclared.append(f"{name} imports {target} (family {other})")
    assert not undeclared, "\n".join(sorted(set(undeclared)))


def test_no_import_cycle_hides_in_a_function():
    """Imports inside functions count: a deferred import keeps a cycle out of import time, not out of the design."""
    import networkx as nx

    names = _module_names()
    graph = nx.DiGraph()
    for name, _, tree in _modules():
        for target in _imports(tree):
            module = _resolve(target, names) if target.startswith("moco_bench.") else None
            # a package's own __init__ is no edge: importing a submodule runs it first anyway
            if module and module != name and not name.startswith(module + ".") and module != "moco_bench":
                graph.add_edge(name, module)
    cycles = [c for c in nx.simple_cycles(graph) if len(c) <= 8]
    assert not cycles, "\n".join(" -> ".join(c + c[:1]) for c in cycles[:10])


def test_no_registration_names_a_module_by_string():
    """Registries hold objects; the implementation behind a name is reached by an import the code shows."""
    names = _module_names()
    found = []
    for name, _, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names \
                    and node.value not in MODULE_STRINGS:
                found.append(f"{name}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_the_structure_checks_catch_what_they_are_for(tmp_path, monkeypatch):
    """Each check above fails on a package that breaks its rule (a copy of two tiny modules)."""
    pkg = tmp_path / "moco_bench"
    (pkg / "evaluators" / "frozen").mkdir(parents=True)
    (pkg / "evaluators" / "linear").mkdir(parents=True)
    for init in (pkg, pkg / "evaluators", pkg / "evaluators" / "frozen", pkg / "evaluators" / "linear"):
        (init / "__init__.py").write_text("")
    (pkg / "evaluators" / "frozen" / "a.py").write_text(
        "def f():\n    from moco_bench.evaluators.linear import b\n\n\nREG = 'moco_bench.evaluators.linear.b'\n")
    (pkg / "evaluators" / "linear" / "b.py").write_text("from moco_bench.evaluators.frozen import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    for check in (test_imports_between_protocol_families_are_declared, test_no_import_cycle_hides_in_a_function,
                  test_no_registration_names_a_module_by_string):
        with pytest.raises(AssertionError):
            check()
