"""The tiers of the package, read from its imports: who may import whom, and no circles.

Every module of ``abp_np`` is parsed with :mod:`ast` (nothing is imported), and every import it
holds is collected, those inside functions included: a lazy import is a dependency too. Relative
imports are resolved, and the old module names that ``abp_np/__init__.py`` maps to their new
places (``abp_np.bench`` -> ``abp_np.tools.bench`` ...) count as the module they load.

The tiers, from the ground up: ``backend`` -> ``fast/`` (the speed routes) -> the method
(functional, layers, generator, observation, optim, abp, training, gradcheck) -> ``io/`` ->
``tools/``. The rules below are what that order means; the expected edges are written here, not
read from the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import abp_np

PACKAGE = Path(abp_np.__file__).resolve().parent
METHOD = {
    "abp_np.functional",
    "abp_np.layers",
    "abp_np.generator",
    "abp_np.observation",
    "abp_np.optim",
    "abp_np.abp",
    "abp_np.training",
    "abp_np.gradcheck",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def moved_names() -> dict[str, str]:
    """``abp_np/__init__.py``'s ``_MOVED`` table (old name -> new place), read with ast."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_MOVED" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            return {f"abp_np.{old}": f"abp_np.{new}" for old, new in table.items()}
    return {}


MOVED = moved_names()


def _known(name: str) -> str | None:
    """``name`` as a module of the package (through the moved names), or None."""
    name = MOVED.get(name, name)
    return name if name in MODULES else None


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _nodes(tree: ast.AST):
    """Every node of ``tree``, function bodies included, but not the body of an
    ``if TYPE_CHECKING:`` block (imports for annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imports_in(source: str, name: str, is_package: bool = False) -> dict[str, int]:
    """The package's modules that the code ``source`` of module ``name`` imports, each with the
    first line doing so."""
    package = name if is_package else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target is not None and target != name:
            found[target] = min(line, found.get(target, line))

    for node in _nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "abp_np" or alias.name.startswith("abp_np."):
                    add(_known(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source_module = ".".join(base + ([node.module] if node.module else []))
            else:
                source_module = node.module or ""
            if source_module != "abp_np" and not source_module.startswith("abp_np."):
                continue
            for alias in node.names:  # ``from .fast import cpu``: the module abp_np.fast.cpu
                sub = _known(f"{source_module}.{alias.name}")
                add(sub if sub is not None else _known(source_module), node.lineno)
    return found


def imports_of(name: str) -> dict[str, int]:
    """:func:`imports_in` for the module ``name`` of the package."""
    path = MODULES[name]
    return imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")


EDGES = {name: imports_of(name) for name in MODULES}


def offending(modules, forbidden) -> list[str]:
    """'a imports b (line n)' for every import of a module in ``forbidden`` by one in
    ``modules``; ``forbidden`` is a predicate on the imported module's name."""
    return [
        f"{m} imports {target} (line {line})"
        for m in sorted(modules)
        for target, line in sorted(EDGES[m].items())
        if forbidden(target)
    ]


def test_every_module_is_read():
    """The parse sees the tiers (a guard against a test that passes by reading nothing)."""
    for name in ("abp_np.backend", "abp_np.fast.routes", "abp_np.tools.bench", "abp_np.io.data"):
        assert name in MODULES
    assert METHOD <= set(MODULES)
    assert EDGES["abp_np.layers"]["abp_np.functional"] > 0
    assert "abp_np.fast.cuda" in EDGES["abp_np.fast.routes"]
    assert "abp_np.fast.cpu" in EDGES["abp_np.fast.winograd"]


def test_lazy_moved_and_annotation_only_imports():
    """An import inside a function and an old module name count like any other import; one
    under ``if TYPE_CHECKING:`` (annotations only) does not."""
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .abp import ABP\n"
        "else:\n"
        "    from . import optim\n"
        "def f():\n"
        "    from . import bench\n"
        "    import abp_np.functional\n"
        "    from .fast import cpu, routes\n"
        "    from ..backend import Array\n"
    )
    assert imports_in(code, "abp_np.probe") == {
        "abp_np.optim": 5,
        "abp_np.tools.bench": 7,
        "abp_np.functional": 8,
        "abp_np.fast.cpu": 9,
        "abp_np.fast.routes": 9,
    }
    # in a package's __init__, "." is the package itself
    assert imports_in("from . import cpu\n", "abp_np.fast", is_package=True) == {
        "abp_np.fast.cpu": 1
    }
    assert imports_in("from ..backend import Array\n", "abp_np.fast.cuda") == {"abp_np.backend": 1}


def test_backend_imports_nothing_of_the_package():
    assert offending(["abp_np.backend"], lambda t: True) == []


def test_the_speed_routes_never_import_the_method_or_what_is_above_it():
    fast = [m for m in MODULES if m.startswith("abp_np.fast")]
    allowed = {"abp_np.backend"} | set(fast)
    assert offending(fast, lambda t: t not in allowed) == []


def test_layers_and_functional_never_import_the_algorithm_or_the_generator():
    above = {"abp_np.abp", "abp_np.training", "abp_np.generator"}
    assert offending(["abp_np.layers", "abp_np.functional"], lambda t: t in above) == []


def test_nothing_below_the_tools_imports_them():
    below = [m for m in MODULES if not m.startswith("abp_np.tools") and m != "abp_np"]
    assert offending(below, lambda t: t.startswith("abp_np.tools")) == []


def test_the_method_imports_io_only_from_abp_and_training_for_checkpoints():
    takers = METHOD - {"abp_np.abp", "abp_np.training"}
    assert offending(takers, lambda t: t.startswith("abp_np.io")) == []
    # and from abp / training, only the checkpoint module (and what it is made of)
    allowed = {"abp_np.io", "abp_np.io.checkpoint", "abp_np.io.atomic"}
    loaders = ["abp_np.abp", "abp_np.training"]
    assert offending(loaders, lambda t: t.startswith("abp_np.io") and t not in allowed) == []


def cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), or a self-import.

    The package's own ``__init__`` is left out: it imports every tier to re-export names, and
    importing any submodule runs it first; that is not a dependency of the submodule.
    """
    graph = {m: [t for t in EDGES[m] if t != "abp_np"] for m in MODULES if m != "abp_np"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


def test_no_import_circle():
    assert cycles() == []


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"]]),
        ({"a": ["b"], "b": [], "c": ["a", "b"]}, []),
    ],
)
def test_the_circle_finder_finds_circles(monkeypatch, edges, expected):
    """The finder itself, on graphs whose circles are known."""
    names = {f"abp_np.{k}": None for k in edges}
    monkeypatch.setattr(f"{__name__}.MODULES", names)
    monkeypatch.setattr(
        f"{__name__}.EDGES",
        {f"abp_np.{k}": {f"abp_np.{t}": 1 for t in v} for k, v in edges.items()},
    )
    assert cycles() == [[f"abp_np.{m}" for m in group] for group in expected]
