"""The package's shape: imports only run down the stages, and modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moco_bench"
# Bottom to top. A module may import its own stage and the ones below; results is a leaf library over core.
STAGES = ["core", "results", "data", "models", "convert", "evaluators", "pretrain", "engine", "top"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if (len(parts) > 2 or len(parts) == 2) and parts[1] in STAGES else "top"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        yield name, path, ast.parse(path.read_text(), filename=str(path))


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
