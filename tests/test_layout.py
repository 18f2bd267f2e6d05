"""The rules of the house, read from the imports of every module (ast, nothing is imported), and the sizes
of modules and functions. The folder tree is the architecture: each folder one concept, imports run one way."""

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "mosnas"
# Low to high: a module imports from its own layer or lower ones, never from a higher one (lazy imports count).
LAYERS = (
    ("mosnas.errors",),  # the one-line user errors
    ("mosnas.workspace", "mosnas.hardware"),  # files on disk (run and model folders, records); the machine
    ("mosnas.environment", "mosnas.config"),  # what a run ran with; the run config
    ("mosnas.core",),  # the MoS idea: space, weight generators, supernet
    ("mosnas.search", "mosnas.latency"),  # pure search algorithms; latency measurement and predictors
    ("mosnas.mt", "mosnas.bert"),  # the model families
    ("mosnas.family",),  # the seam: the families the engine knows, and what it asks of them
    ("mosnas.engine",),  # the training engine, the run folder's guards, loading a run
    ("mosnas.pipeline",),  # mosnas run's stages
    ("mosnas.study",),  # the study harness: runs of the pipeline
    ("mosnas.cli", "mosnas.__main__", "mosnas.autodistil"),  # the command line (and a deprecated alias of it)
)
FAMILIES = ("mosnas.mt", "mosnas.bert")
# what the engine alone owns: a family gets it through the engine's calls (a loaded run's task_state), never reads it
ENGINE_FILES = ("optimizer.safetensors", "state.json", "ckpt-", "train_log.jsonl")
MAX_ROOT_MODULES, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 8, 300, 80


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


@functools.cache
def _modules(root: Path = PACKAGE) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(root.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(name: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if _within(name, layer)), None)


def _edges(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (an imported name resolves to the longest module prefix)."""
    edges = defaultdict(set)
    for module, imports in modules.items():
        for name in imports:
            parts = name.split(".")
            target = next(
                (".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None
            )
            if target and target != module and target != "mosnas":  # `import mosnas`: the package's own face
                edges[module].add(target)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm): every import circle."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def _room(module: str) -> str:
    """The folder a module lives in, as one room (mosnas.bert.glue.data -> mosnas.bert); a root module is its own."""
    return ".".join(module.split(".")[:2])


def test_every_module_has_a_layer():
    missing = sorted(m for m in _modules() if m != "mosnas" and _layer(m) is None)
    assert not missing, f"modules in no layer of LAYERS: {missing}"


def test_imports_run_down_the_layers_only():
    """No module imports a higher layer: the core never imports the engine, the engine never a family, the
    pipeline or the study; a family never the engine, a stage or the CLI."""
    modules = _modules()
    bad = []
    for module, targets in _edges(modules).items():
        for target in targets:
            if module != "mosnas" and _layer(target) > _layer(module):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports that climb: " + ", ".join(sorted(bad))


def test_no_import_circles_between_modules_or_folders():
    modules = _modules()
    edges = _edges(modules)
    assert not _circles(edges), f"import circles: {_circles(edges)}"
    rooms = defaultdict(set)
    for module, targets in edges.items():
        rooms[_room(module)].update(_room(t) for t in targets if _room(t) != _room(module))
    assert not _circles(rooms), f"circles between folders: {_circles(rooms)}"


def test_the_circle_detector_finds_circles():
    """The detector itself: a real two-module circle and a three-folder one are found, a chain is not."""
    assert _circles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert _circles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]
    assert _circles({"a": {"b"}, "b": {"c"}}) == []


def test_the_core_and_the_engine_name_no_family_stage_or_study():
    modules = _modules()
    for module, imports in modules.items():
        if _within(module, ("mosnas.core", "mosnas.engine")):
            above = FAMILIES + ("mosnas.pipeline", "mosnas.study", "mosnas.cli")
            bad = sorted(i for i in imports if _within(i, above))
            assert not bad, f"{module} imports {bad}"
        if _within(module, ("mosnas.core",)):  # the MoS idea needs nothing of mosnas but errors and config types
            bad = sorted(
                i
                for i in imports
                if i.startswith("mosnas.") and not _within(i, ("mosnas.errors", "mosnas.config", "mosnas.core"))
            )
            assert not bad, f"{module} imports {bad}"


def test_families_never_read_engine_internals():
    """A family gets what the engine stores (checkpoints, the training log) through the engine's calls, never by
    importing the engine or opening its files."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if not _within(module, FAMILIES):
            continue
        bad = sorted(i for i in _imports(path) if _within(i, ("mosnas.engine",)))
        assert not bad, f"{module} imports {bad}"
        text = path.read_text(encoding="utf-8")
        named = [f for f in ENGINE_FILES if f in text]
        assert not named, f"{module} names the engine's files {named}"


def test_a_family_imports_no_other_family():
    for module, imports in _modules().items():
        own = next((f for f in FAMILIES if _within(module, (f,))), None)
        if own:
            others = tuple(f for f in FAMILIES if f != own)
            bad = sorted(i for i in imports if _within(i, others))
            assert not bad, f"{module} imports another family: {bad}"


def test_search_is_pure():
    """search is a function of space, fitness, budget and seed: no training loop, model, data or torch."""
    for module, imports in _modules().items():
        if _within(module, ("mosnas.search",)):
            ours = {i for i in imports if i.startswith("mosnas.")}
            assert all(_within(i, ("mosnas.errors", "mosnas.core.space", "mosnas.search")) for i in ours), sorted(ours)
            assert not any(_within(i, ("torch",)) for i in imports)


def test_nothing_imports_the_cli():
    everything = _modules() | _modules(ROOT / "benchmarks")
    users = sorted(m for m, imports in everything.items() if any(_within(i, ("mosnas.cli",)) for i in imports))
    users = [m for m in users if not _within(m, ("mosnas.cli",))]
    assert users == ["mosnas.__main__", "mosnas.autodistil"], users


def test_the_root_is_small_and_shows_no_prefix_families():
    """At most 8 root modules, and no two that share a prefix (latency_*, glue_*): a prefix is a folder."""
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root
    prefixes = defaultdict(list)
    for name in root:
        if "_" in name.strip("_"):
            prefixes[name.strip("_").split("_")[0]].append(name)
    shared = {p: names for p, names in prefixes.items() if len(names) > 1}
    assert not shared, shared
    folders = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert set(folders) >= {"config", "core", "engine", "workspace", "latency", "search", "pipeline", "cli"}, folders


def test_the_package_face_imports_nothing_at_import_time():
    """`import mosnas` stays cheap (the CLI sets the allocator before torch loads): the public names of
    mosnas/__init__.py resolve lazily, and each one resolves."""
    import mosnas

    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert all(not (getattr(n, "module", "") or "").startswith("mosnas") for n in top)
    assert all(not a.name.startswith("mosnas") for n in top if isinstance(n, ast.Import) for a in n.names)
    for name in mosnas.__all__:
        assert getattr(mosnas, name) is not None, name
    with pytest.raises(AttributeError):
        mosnas.no_such_name  # noqa: B018


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
