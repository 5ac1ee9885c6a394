"""No import cycle inside maggy_core, counting imports inside functions too (they
are deferred, not gone) and leaving out those only a type checker sees."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import maggy_core

ROOT = Path(maggy_core.__file__).parent


def module_name(path: Path) -> str:
    parts = ["maggy_core", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The maggy_core modules ``path`` imports, anywhere but in TYPE_CHECKING blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(n) for block in ast.walk(tree) if _type_checking_only(block) for n in ast.walk(block)
    }
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != here:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    # A package's __init__ is imported on the way to any of its modules; its own
    # edges count, but importing ``maggy_core.x`` does not make ``x`` depend on
    # ``maggy_core`` (whose __init__ here imports nothing at run time).
    return {name: imports_of(path, modules) for name, path in paths.items()}


def test_no_import_cycle_inside_maggy_core():
    deps = graph()
    assert "maggy_core.spec" in deps and "maggy_core.coordinator" in deps
    try:
        list(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_the_checker_sees_deferred_imports():
    deps = graph()
    # runner imports the coordinator at the top, cli imports the runner in a function
    assert "maggy_core.coordinator" in deps["maggy_core.runner"]
    assert "maggy_core.runner" in deps["maggy_core.cli"]
