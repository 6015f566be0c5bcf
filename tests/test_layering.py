"""Layering rules for ``jaxstage``, checked on the import graph computed from the source.

The graph is built with ``ast`` only (the package is never imported, and neither is jax), from every
import statement anywhere in a file: module level, inside functions and methods, under
``if TYPE_CHECKING:``, in ``try`` blocks. Rules (see ``violations``):

1. no import cycle among jaxstage modules;
2. ``jaxstage.diffusion.*`` / ``jaxstage.stage.*`` import only jax, flax, optax, numpy, math, the pure
   language-support stdlib modules in ``PURE_STDLIB`` and each other;
3. ``jaxstage.models.*`` import no training, data, evaluation, inference, tools or CLI module;
4. nothing imports ``jaxstage.cli``.

Besides the checks on the real tree, each rule is shown to be breakable: on a small fake package
written to ``tmp_path``, and by adding a forbidden edge to the real graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "jaxstage"

# Third-party / numeric modules that the pure math layers (diffusion, stage) may import.
PURE_EXTERNAL = frozenset({"jax", "flax", "optax", "numpy", "math"})
# Stdlib modules that only support the language (annotations, dataclasses, typing, functools). They do
# no I/O and read no process state; os, pathlib, json, io, ... are deliberately absent, and so is
# jaxstage.config (configuration is resolved by callers and passed in as plain values).
PURE_STDLIB = frozenset({"__future__", "dataclasses", "typing", "functools"})
# jaxstage packages the pure layers consist of; they may import each other and themselves.
PURE_LAYERS = ("jaxstage.diffusion", "jaxstage.stage")
# What jaxstage.models.* must not import: training, data, evaluation, inference, tools and the CLI.
MODELS_FORBIDDEN = (
    "jaxstage.train",
    "jaxstage.posttrain",
    "jaxstage.run",
    "jaxstage.data",
    "jaxstage.eval",
    "jaxstage.inference",
    "jaxstage.tools",
    "jaxstage.cli",
)
CLI = "jaxstage.cli"

RULE_CYCLE = "rule 1 (no import cycles)"
RULE_PURE = "rule 2 (diffusion/stage import only jax/flax/optax/numpy/math/pure stdlib/each other)"
RULE_MODELS = "rule 3 (models must not import train/posttrain/run/data/eval/inference/tools/cli)"
RULE_CLI = "rule 4 (nothing imports jaxstage.cli)"


# --------------------------------------------------------------------------------------------------
# graph builder


def _module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file for every .py file under the package directory ``root``."""
    root = Path(root)
    modules = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """Import graph of the package whose directory is ``root`` (e.g. ``.../jaxstage``).

    Keys are the package's modules (``x/y.py`` -> ``pkg.x.y``, ``x/__init__.py`` -> ``pkg.x``).
    Values hold, for every import statement anywhere in the file, the package module it loads
    (``from pkg.a import b`` -> ``pkg.a.b`` if that is a module, else ``pkg.a``; relative imports
    resolved) or, for an external import, its top-level name (``import jax.numpy`` -> ``jax``).
    """
    root = Path(root)
    pkg = root.name
    files = _module_files(root)

    def is_module(name: str) -> bool:
        return name in files

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_init = path.name == "__init__.py"
        # The package a relative import of level 1 is relative to.
        own_package = module if is_init else module.rpartition(".")[0]
        targets: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.name
                    targets.add(name if name.split(".")[0] == pkg else name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = own_package.split(".")
                    if node.level - 1 >= len(base_parts):
                        raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                    base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    source = node.module
                if source.split(".")[0] != pkg:
                    targets.add(source.split(".")[0])
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if alias.name != "*" and is_module(sub) else source)
        graph[module] = targets
    return graph


# --------------------------------------------------------------------------------------------------
# rule checker


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _within_any(name: str, prefixes) -> bool:
    return any(_within(name, p) for p in prefixes)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's SCCs over the internal nodes (the graph's keys); iterative, deterministic order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0

    def succ(v):
        return sorted(w for w in graph[v] if w in graph)

    for start in sorted(graph):
        if start in index:
            continue
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(succ(start)))]
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(succ(w))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                sccs.append(sorted(scc))
    return sccs


def _cycle_through(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest cycle ``start -> ... -> start`` staying inside the SCC ``members`` (BFS)."""
    parent: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in seen:
                    seen.add(w)
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in SCC {sorted(members)}")  # unreachable for an SCC


def cycle_violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per distinct shortest cycle through each module of each non-trivial SCC."""
    out = set()
    for scc in _strongly_connected(graph):
        if len(scc) == 1 and scc[0] not in graph[scc[0]]:
            continue
        members = set(scc)
        for start in scc:
            cycle = _cycle_through(graph, members, start)[:-1]
            i = cycle.index(min(cycle))  # rotate to a canonical start, so each cycle is listed once
            cycle = cycle[i:] + cycle[:i]
            out.add(f"{RULE_CYCLE}: {' -> '.join(cycle + [cycle[0]])}")
    return sorted(out)


def purity_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module in sorted(graph):
        if not _within_any(module, PURE_LAYERS):
            continue
        for target in sorted(graph[module]):
            if _within_any(target, PURE_LAYERS) or target in PURE_EXTERNAL or target in PURE_STDLIB:
                continue
            out.append(f"{RULE_PURE}: {module} imports {target}")
    return out


def models_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module in sorted(graph):
        if not _within(module, "jaxstage.models"):
            continue
        for target in sorted(graph[module]):
            if _within_any(target, MODELS_FORBIDDEN):
                out.append(f"{RULE_MODELS}: {module} imports {target}")
    return out


def cli_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module in sorted(graph):
        if _within(module, CLI):  # the CLI's own modules (should it become a package)
            continue
        for target in sorted(graph[module]):
            if _within(target, CLI):
                out.append(f"{RULE_CLI}: {module} imports {target}")
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every layering violation in ``graph``, one readable line each, naming the rule and modules."""
    return (
        cycle_violations(graph)
        + purity_violations(graph)
        + models_violations(graph)
        + cli_violations(graph)
    )


def _report(lines: list[str]) -> str:
    return "\n".join(["", *lines])


# --------------------------------------------------------------------------------------------------
# the real tree


@pytest.fixture(scope="module")
def real_graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_DIR)


def test_real_graph_is_built_from_the_source(real_graph):
    assert set(real_graph) == set(_module_files(PACKAGE_DIR))
    assert "jaxstage" in real_graph and "jaxstage.stage.regime" in real_graph
    internal = sum(1 for targets in real_graph.values() for t in targets if _within(t, "jaxstage"))
    assert internal > 50, "suspiciously few internal imports found"


def test_no_import_cycles(real_graph):
    found = cycle_violations(real_graph)
    assert not found, _report(found)


def test_diffusion_and_stage_are_pure(real_graph):
    found = purity_violations(real_graph)
    assert not found, _report(found)


def test_models_do_not_import_training_data_eval_or_cli(real_graph):
    found = models_violations(real_graph)
    assert not found, _report(found)


def test_nothing_imports_the_cli(real_graph):
    found = cli_violations(real_graph)
    assert not found, _report(found)


def test_forbidden_edge_added_to_real_graph_is_reported(real_graph):
    graph = {m: set(t) for m, t in real_graph.items()}
    before = set(violations(graph))
    assert "jaxstage.config" not in graph["jaxstage.diffusion.noise"]
    graph["jaxstage.diffusion.noise"].add("jaxstage.config")
    added = set(violations(graph)) - before
    assert added == {f"{RULE_PURE}: jaxstage.diffusion.noise imports jaxstage.config"}


# --------------------------------------------------------------------------------------------------
# the rules can fail: a fake package in tmp_path

FAKE_FILES = {
    "__init__.py": "",
    "config.py": "X = 1\n",
    "cli.py": "def main():\n    pass\n",
    # rule 2: I/O in a pure layer, hidden inside a function; plus imports that are all allowed
    "stage/__init__.py": "",
    "stage/x.py": (
        "from __future__ import annotations\n"
        "import dataclasses, functools, math\n"
        "from typing import TYPE_CHECKING\n"
        "import jax.numpy as jnp\n"
        "from flax import nnx\n"
        "import optax, numpy as np\n"
        "from jaxstage.diffusion import sched\n"  # the other pure layer: allowed
        "from . import y\n"  # relative, own layer: allowed
        "\n"
        "def save(path):\n"
        "    import os\n"
        "    return os.path.exists(path)\n"
    ),
    "stage/y.py": "from ..diffusion.sched import f\n",  # relative, level 2: allowed
    # rule 2 via a relative import of a forbidden jaxstage module, under TYPE_CHECKING
    "diffusion/__init__.py": "",
    "diffusion/sched.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .. import config\n"
        "def f():\n"
        "    pass\n"
    ),
    # rule 1: a two-module cycle, closed by a function-level import
    "util/__init__.py": "",
    "util/a.py": "from jaxstage.util.b import g\n",
    "util/b.py": "def g():\n    from jaxstage.util import a\n    return a\n",
    # rule 3: models importing training (a module that need not exist)
    "models/__init__.py": "from jaxstage.config import X\n",  # config is allowed
    "models/m.py": (
        "from jaxstage.models import n\n"  # another model: allowed
        "from jaxstage.stage import x\n"  # stage: allowed
        "class M:\n"
        "    def fit(self):\n"
        "        from jaxstage.train.trainer import train\n"
        "        return train\n"
    ),
    "models/n.py": "",
    # rule 4: importing the CLI, as a plain `import` in a method
    "tools/__init__.py": "",
    "tools/launch.py": "class L:\n    def go(self):\n        import jaxstage.cli\n",
    # rule 1: a package __init__ and its own submodule importing each other
    "pkg/__init__.py": "from .sub import thing\n",
    "pkg/sub.py": "import jaxstage.pkg as p\nthing = 1\n",
}


def _write_fake(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "jaxstage"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_graph_builder_on_fake_package(tmp_path):
    graph = import_graph(_write_fake(tmp_path, FAKE_FILES))
    assert set(graph) == {
        "jaxstage", "jaxstage.config", "jaxstage.cli",
        "jaxstage.stage", "jaxstage.stage.x", "jaxstage.stage.y",
        "jaxstage.diffusion", "jaxstage.diffusion.sched",
        "jaxstage.util", "jaxstage.util.a", "jaxstage.util.b",
        "jaxstage.models", "jaxstage.models.m", "jaxstage.models.n",
        "jaxstage.tools", "jaxstage.tools.launch",
        "jaxstage.pkg", "jaxstage.pkg.sub",
    }  # fmt: skip
    assert graph["jaxstage.stage.x"] == {
        "__future__", "dataclasses", "functools", "math", "typing", "jax", "flax", "optax", "numpy",
        "jaxstage.diffusion.sched", "jaxstage.stage.y", "os",
    }  # fmt: skip
    assert graph["jaxstage.stage.y"] == {"jaxstage.diffusion.sched"}  # `from ..diffusion.sched import f`
    assert graph["jaxstage.diffusion.sched"] == {"typing", "jaxstage.config"}  # `from .. import config`
    assert graph["jaxstage.util.a"] == {"jaxstage.util.b"}  # `g` is not a module: edge to util.b
    assert graph["jaxstage.util.b"] == {"jaxstage.util.a"}
    assert graph["jaxstage.models"] == {"jaxstage.config"}
    assert graph["jaxstage.models.m"] == {"jaxstage.models.n", "jaxstage.stage.x", "jaxstage.train.trainer"}
    assert graph["jaxstage.tools.launch"] == {"jaxstage.cli"}
    assert graph["jaxstage.pkg"] == {"jaxstage.pkg.sub"}  # relative import in an __init__
    assert graph["jaxstage.pkg.sub"] == {"jaxstage.pkg"}


def test_each_rule_fails_on_fake_package(tmp_path):
    graph = import_graph(_write_fake(tmp_path, FAKE_FILES))
    assert violations(graph) == [
        f"{RULE_CYCLE}: jaxstage.pkg -> jaxstage.pkg.sub -> jaxstage.pkg",
        f"{RULE_CYCLE}: jaxstage.util.a -> jaxstage.util.b -> jaxstage.util.a",
        f"{RULE_PURE}: jaxstage.diffusion.sched imports jaxstage.config",
        f"{RULE_PURE}: jaxstage.stage.x imports os",
        f"{RULE_MODELS}: jaxstage.models.m imports jaxstage.train.trainer",
        f"{RULE_CLI}: jaxstage.tools.launch imports jaxstage.cli",
    ]


def test_clean_fake_package_has_no_violations(tmp_path):
    files = dict(FAKE_FILES)
    files["stage/x.py"] = files["stage/x.py"].replace("    import os\n    return os.path.exists(path)\n", "    return path\n")
    files["diffusion/sched.py"] = "def f():\n    pass\n"
    files["util/b.py"] = "def g():\n    pass\n"
    files["models/m.py"] = "from jaxstage.models import n\nfrom jaxstage.stage import x\n"
    files["tools/launch.py"] = ""
    files["pkg/sub.py"] = "thing = 1\n"
    assert violations(import_graph(_write_fake(tmp_path, files))) == []


def test_longer_cycle_and_self_import_are_reported():
    graph = {
        "jaxstage.a": {"jaxstage.b", "os"},
        "jaxstage.b": {"jaxstage.c"},
        "jaxstage.c": {"jaxstage.a", "jaxstage.d"},
        "jaxstage.d": set(),
        "jaxstage.e": {"jaxstage.e"},
    }
    assert cycle_violations(graph) == [
        f"{RULE_CYCLE}: jaxstage.a -> jaxstage.b -> jaxstage.c -> jaxstage.a",
        f"{RULE_CYCLE}: jaxstage.e -> jaxstage.e",
    ]
