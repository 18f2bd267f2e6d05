"""The rules of the house, read from the imports of every module (ast, nothing is imported), and the sizes
of modules and functions."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "mosnas"
CORE = ("mosnas.elastic", "mosnas.supernet", "mosnas.space")  # the MoS idea: generators, supernet, space
FAMILIES = ("mosnas.mt", "mosnas.bert")  # model family packages
STAGES = (  # the engine's stages and the run folder, above the core
    "mosnas.run",
    "mosnas.train",
    "mosnas.latency",
    "mosnas.latency_stage",
    "mosnas.winner",
    "mosnas.search",
    "mosnas.export",
    "mosnas.finetune",
    "mosnas.pipeline",
    "mosnas.report",
    "mosnas.rebuild",
    "mosnas.autodistil",
    "mosnas.family",
    "mosnas.study",  # the study harness: above every stage
)
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (lazy imports in functions too), as dotted names; a name
    imported from a package counts as its submodule (`from mosnas import mt` imports mosnas.mt)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _modules(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(root.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_core_never_imports_a_stage_a_family_or_the_cli():
    for module, imports in _modules().items():
        if _within(module, CORE):
            bad = {i for i in imports if _within(i, STAGES + FAMILIES + ("mosnas.cli",))}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_search_is_pure():
    """search is a function of space, fitness, budget and seed: no training loop, model, data or torch."""
    imports = _modules()["mosnas.search"]
    ours = {i.split(".")[1] for i in imports if i.startswith("mosnas.")}
    assert ours <= {"errors", "space"}, sorted(ours)
    assert not any(_within(i, ("torch",)) for i in imports)


def test_nothing_imports_the_cli():
    everything = _modules() | _modules(ROOT / "benchmarks")
    users = sorted(m for m, imports in everything.items() if any(_within(i, ("mosnas.cli",)) for i in imports))
    assert users == ["mosnas.__main__"], users


def test_the_engine_names_no_family_and_families_stay_below_the_stages():
    """Only mosnas.family (the dict of families) and the CLI's family commands (mosnas.commands: translate,
    evaluate) import a family package; a family may use the core and the latency protocol, never the stages
    above it or the CLI (that would be a cycle through mosnas.family)."""
    for module, imports in _modules().items():
        if _within(module, FAMILIES):
            above = tuple(s for s in STAGES if s != "mosnas.latency")  # latency.measure times its workload
            bad = {i for i in imports if _within(i, above + ("mosnas.cli",))}
            assert not bad, f"{module} imports {sorted(bad)}"
        elif module not in ("mosnas.family", "mosnas.cli", "mosnas.commands"):  # commands: the CLI's model commands
            bad = {i for i in imports if _within(i, FAMILIES)}
            assert not bad, f"{module} imports a family: {sorted(bad)} (ask mosnas.family for it)"


def test_benchmarks_use_public_names_only():
    for module, imports in _modules(ROOT / "benchmarks").items():
        private = sorted(i for i in imports if i.startswith("mosnas") and any(p.startswith("_") for p in i.split(".")))
        assert not private, f"{module} imports private names {private}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_short(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_MODULE_LINES, f"{path.name}: {len(lines)} lines"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name}() is {size} lines"
