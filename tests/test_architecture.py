"""The package's floor plan, read from its source with ``ast``.

Every import counts, wherever it sits: at the top, under ``if TYPE_CHECKING:``
or inside a function. The rules:

- no import cycle among learnkit's own modules;
- nothing below the kit imports it (only the public API, the CLI, the demo and
  the views, which show a kit, may);
- ``sqlite3`` and ``aiosqlite`` only in the SQLite backend;
- no module-level mutable containers in storage or tracking: per-store state
  belongs to a store or a kit, not to a module.

Each checker is also run on small synthetic sources, so that it is seen to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "learnkit"

KIT = "learnkit._kit"
#: May import the kit: the public API, the command line and what shows a kit.
KIT_IMPORTERS = ("learnkit", "learnkit._cli", "learnkit.__main__", "learnkit.demo",
                 "learnkit.testing", "learnkit._views", "learnkit._views.*",
                 # integrations: public entry points that take or open a kit
                 "learnkit.otel", "learnkit.pytest_plugin",
                 # the MCP server, like the command line, is a front end to an open kit
                 "learnkit._mcp")
#: The only files that may import a SQLite driver.
SQLITE_FILES = ("learnkit/_storage/sqlite.py", "learnkit/_storage/schema.py")
SQLITE_MODULES = ("sqlite3", "aiosqlite")
#: Where module-level mutable state is not allowed.
STATELESS = ("learnkit/_storage/", "learnkit/_tracking.py")
#: Class attributes that are process-wide on purpose, with the reason.
STATE_ALLOWED = {
    # The stack of open kits: which kit a bare @tracked call records into is
    # process-wide by nature (a kit pushes itself on open, pops on close).
    ("learnkit/_tracking.py", "_State.kits"),
}

Source = tuple[str, bool]  # (text, is a package's __init__)


# -- reading the package ---------------------------------------------------------------


def module_name(rel: str) -> str:
    """``learnkit/_storage/sqlite.py`` -> ``learnkit._storage.sqlite``."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_sources() -> dict[str, tuple[str, Source]]:
    """module name -> (path relative to the repository, (source, is package))."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        out[module_name(rel)] = (rel, (path.read_text(encoding="utf-8"),
                                       path.name == "__init__.py"))
    return out


def imports_of(module: str, source: Source, known: Iterable[str]) -> list[tuple[str, int]]:
    """Every module ``module`` imports, as (absolute name, line), relative ones resolved.

    ``from .pkg import name`` names the submodule ``pkg.name`` when there is one,
    else ``pkg``. Names inside learnkit that are not modules fall back to the
    longest known prefix.
    """
    text, is_package = source
    known = set(known)
    tree = ast.parse(text)
    found: list[tuple[str, int]] = []

    def resolve(name: str) -> str:
        if not (name == "learnkit" or name.startswith("learnkit.")):
            return name
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        return name

    for node in ast.walk(tree):  # every node: TYPE_CHECKING blocks and functions too
        if isinstance(node, ast.Import):
            found += [(resolve(a.name), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub if sub in known else resolve(base), node.lineno))
    return found


def import_graph(sources: Mapping[str, Source]) -> dict[str, set[str]]:
    """module -> the package's own modules it imports (itself excluded)."""
    graph: dict[str, set[str]] = {}
    for name, src in sources.items():
        graph[name] = {t for t, _ in imports_of(name, src, sources)
                       if t in sources and t != name}
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the package is small enough to recurse
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for comp in components:
        start = min(comp)
        if len(comp) == 1 and start not in graph.get(start, ()):
            continue
        # breadth-first from start back to start, inside the component
        prev: dict[str, str] = {}
        frontier = [start]
        end = None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, ())):
                    if w == start:
                        end = v
                        break
                    if w in comp and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        assert end is not None
        path = [end]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def _allowed(module: str, patterns: Iterable[str]) -> bool:
    return any(module == p or (p.endswith(".*") and module.startswith(p[:-1]))
               for p in patterns)


def kit_violations(sources: Mapping[str, Source]) -> list[str]:
    """Modules below the kit that import it, directly or through the package root."""
    out = []
    for name, src in sources.items():
        if name == KIT or _allowed(name, KIT_IMPORTERS):
            continue
        for target, line in imports_of(name, src, sources):
            # `import learnkit` reaches the kit too: the root re-exports Kit.
            if target in (KIT, "learnkit"):
                out.append(f"{name}:{line} imports {target}")
    return out


def driver_violations(files: Mapping[str, Source]) -> list[str]:
    """SQLite driver imports outside the backend (``files``: path -> source)."""
    out = []
    for rel, src in files.items():
        if rel in SQLITE_FILES:
            continue
        for target, line in imports_of(module_name(rel), src, ()):
            if target.split(".")[0] in SQLITE_MODULES:
                out.append(f"{rel}:{line} imports {target}")
    return out


_MUTABLE_CALLS = frozenset({
    "dict", "list", "set", "bytearray", "defaultdict", "OrderedDict", "Counter", "deque",
    "ChainMap", "WeakValueDictionary", "WeakKeyDictionary", "WeakSet",
})
_MUTABLE_NODES = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


def _is_mutable(value: ast.expr | None) -> bool:
    """A dict/list/set display or comprehension, or a call that builds one."""
    if isinstance(value, _MUTABLE_NODES):
        return True
    if isinstance(value, ast.Call):
        f = value.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        return name in _MUTABLE_CALLS
    return False


def _targets(node: ast.stmt) -> list[tuple[str, ast.expr | None]]:
    if isinstance(node, ast.Assign):
        return [(ast.unparse(t), node.value) for t in node.targets]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [(ast.unparse(node.target), node.value)]
    return []


def _module_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements run at import time: the body and its if/try/with blocks, not defs."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                yield from _module_level(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def mutable_state(source: str) -> list[str]:
    """Module-level (and class-level) names bound to mutable containers.

    ``__all__`` is exempt; tuples, frozensets, typing aliases (``X = dict[str, int]``
    is a subscript, not a call) and type variables are not containers.
    Class bodies count: a ``ClassVar`` dict is module state under another name.
    """
    out = []
    tree = ast.parse(source)
    for node in _module_level(tree.body):
        for name, value in _targets(node):
            if name != "__all__" and _is_mutable(value):
                out.append(name)
        if isinstance(node, ast.ClassDef):
            for stmt in _module_level(node.body):
                out += [f"{node.name}.{name}" for name, value in _targets(stmt)
                        if _is_mutable(value)]
    return out


def state_violations(files: Mapping[str, str]) -> list[str]:
    out = []
    for rel, text in files.items():
        if not rel.startswith(STATELESS):
            continue
        out += [f"{rel}: {name}" for name in mutable_state(text)
                if (rel, name) not in STATE_ALLOWED]
    return out


# -- the package -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources() -> dict[str, Source]:
    return {name: src for name, (_, src) in package_sources().items()}


@pytest.fixture(scope="module")
def files() -> dict[str, Source]:
    return dict(package_sources().values())


def test_the_graph_is_read(sources: dict[str, Source]) -> None:
    """The reader sees the package's modules and imports, TYPE_CHECKING ones included."""
    graph = import_graph(sources)
    assert {KIT, "learnkit._storage.sqlite", "learnkit._views.render"} <= set(graph)
    assert "learnkit._storage.factory" in graph[KIT]  # which store: SQLite or PostgreSQL
    assert "learnkit._storage.sqlite" in graph["learnkit._storage.factory"]
    assert "learnkit._storage.writer" in graph[KIT]
    # render.py imports the kit only under `if TYPE_CHECKING:`
    assert KIT in graph["learnkit._views.render"]
    assert sum(map(len, graph.values())) > 50


def test_no_import_cycle(sources: dict[str, Source]) -> None:
    cycles = find_cycles(import_graph(sources))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_below_the_kit_imports_it(sources: dict[str, Source]) -> None:
    bad = kit_violations(sources)
    assert not bad, "below the kit, importing it:\n" + "\n".join(bad)


def test_sqlite_only_in_the_backend(files: dict[str, Source]) -> None:
    bad = driver_violations(files)
    assert not bad, "SQLite outside learnkit/_storage/sqlite.py:\n" + "\n".join(bad)


def test_no_module_state_in_storage_or_tracking(files: dict[str, Source]) -> None:
    bad = state_violations({rel: text for rel, (text, _) in files.items()})
    assert not bad, "module-level mutable state:\n" + "\n".join(bad)
    # the allowance names something that exists (else it would hide a rename)
    for rel, name in STATE_ALLOWED:
        assert name in mutable_state(files[rel][0])


# -- the checkers fail when they should ------------------------------------------------


def _pkg(files: dict[str, str]) -> dict[str, Source]:
    """A synthetic package from path -> source, keyed by module name."""
    return {module_name(rel): (text, rel.endswith("/__init__.py")) for rel, text in files.items()}


def test_relative_imports_resolve() -> None:
    src = _pkg({
        "learnkit/__init__.py": "from ._kit import Kit\n",
        "learnkit/_kit.py": "",
        "learnkit/_storage/__init__.py": "",
        "learnkit/_storage/rollup.py": ("from .. import _model\nfrom . import sqlite\n"
                                        "from .sqlite import SQLiteStore\n"),
        "learnkit/_storage/sqlite.py": "",
        "learnkit/_model.py": "",
    })
    assert set(src) == {"learnkit", "learnkit._kit", "learnkit._storage",
                        "learnkit._storage.rollup", "learnkit._storage.sqlite", "learnkit._model"}
    graph = import_graph(src)
    assert graph["learnkit._storage.rollup"] == {"learnkit._model", "learnkit._storage.sqlite"}
    assert graph["learnkit"] == {"learnkit._kit"}


def test_a_cycle_is_found_and_reported() -> None:
    src = _pkg({
        "learnkit/__init__.py": "",
        "learnkit/_a.py": "from ._b import x\n",
        "learnkit/_b.py": ("from typing import TYPE_CHECKING\n"
                           "if TYPE_CHECKING:\n    from ._c import y\n"),
        "learnkit/_c.py": "def f():\n    from . import _a\n",
        "learnkit/_d.py": "from ._a import z\n",
    })
    cycles = find_cycles(import_graph(src))
    assert cycles == [["learnkit._a", "learnkit._b", "learnkit._c", "learnkit._a"]]
    assert find_cycles({"m": {"m"}}) == [["m", "m"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_importing_the_kit_below_it_is_found() -> None:
    src = _pkg({
        "learnkit/__init__.py": "from ._kit import Kit\n",
        "learnkit/_kit.py": "from ._analytics import A\n",
        "learnkit/_analytics.py": ("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n    from ._kit import Kit\n"),
        "learnkit/_thresholds/__init__.py": "",
        "learnkit/_thresholds/loop.py": "def f():\n    import learnkit\n",
        "learnkit/_views/__init__.py": "",
        "learnkit/_views/render.py": "from .._kit import Kit\n",
        "learnkit/_cli.py": "import learnkit._kit\n",
    })
    assert kit_violations(src) == [
        "learnkit._analytics:3 imports learnkit._kit",
        "learnkit._thresholds.loop:2 imports learnkit",
    ]


def test_a_driver_import_outside_the_backend_is_found() -> None:
    files = {
        "learnkit/_storage/sqlite.py": ("import sqlite3\nimport aiosqlite\n", False),
        "learnkit/_cli.py": ("def count(path):\n    import sqlite3\n", False),
        "learnkit/_storage/writer.py": ("if True:\n    from aiosqlite import Error\n", False),
        "learnkit/_analytics.py": ("import sqlite3x\n", False),
    }
    assert driver_violations(files) == [
        "learnkit/_cli.py:2 imports sqlite3",
        "learnkit/_storage/writer.py:2 imports aiosqlite",
    ]


def test_module_state_is_found() -> None:
    # what learnkit/_rollup.py and learnkit/_store.py held before per-store encoders
    old_rollup = ("_MAX_STRINGS = 50\n"
                  "_seen_strings: dict[tuple[str, str], set[str]] = {}\n"
                  "_signatures: dict[str, str] = {}\n"
                  "_context_cache: dict[Any, tuple[str | None, bool]] = {}\n")
    assert mutable_state(old_rollup) == ["_seen_strings", "_signatures", "_context_cache"]
    assert state_violations({"learnkit/_storage/rollup.py": old_rollup}) == [
        "learnkit/_storage/rollup.py: _seen_strings",
        "learnkit/_storage/rollup.py: _signatures",
        "learnkit/_storage/rollup.py: _context_cache",
    ]
    sneaky = ("import collections\n"
              "cache = collections.OrderedDict()\n"
              "try:\n    seen = set()\nexcept ImportError:\n    pass\n"
              "names = [n for n in 'ab']\n"
              "class _Memo:\n    hits: ClassVar[dict[str, int]] = dict()\n"
              "    def f(self):\n        local = {}\n")
    assert mutable_state(sneaky) == ["cache", "seen", "names", "_Memo.hits"]
    # only storage and tracking are held to it
    assert state_violations({"learnkit/_cli.py": old_rollup}) == []
    assert state_violations({"learnkit/_tracking.py": sneaky}) == [
        "learnkit/_tracking.py: cache", "learnkit/_tracking.py: seen",
        "learnkit/_tracking.py: names", "learnkit/_tracking.py: _Memo.hits",
    ]


def test_constants_and_aliases_are_not_state() -> None:
    fine = ('__all__ = ["A", "B"]\n'
            "FIELDS = ('a', 'b')\n"
            "_CODES = frozenset({5, 6})\n"
            "ExportRow = tuple[Any, ...]\n"
            "Mapping_ = dict[str, int]\n"
            "T = TypeVar('T')\n"
            "OTHER = '<other>'\n"
            "_dumps = json.JSONEncoder().encode\n"
            "_current: ContextVar[int | None] = ContextVar('x', default=None)\n"
            "def f():\n    seen = {}\n")
    assert mutable_state(fine) == []
