"""The package's imports run one way: entry points -> application packages -> core -> helpers.

Read from the source (`ast`), nothing is imported. An edge A -> B is any `import` of B in A:
at module level, inside a function, or under `if TYPE_CHECKING`. A lazy import defers the
cost of B, not the dependency on it, so it counts: two modules that import each other, even
from inside functions, are one module split in two. What does not count is the implicit
import of a module's parent packages (`fnst_jax.stylize` runs before `fnst_jax.stylize.run`)
unless the module names the package itself (`from fnst_jax.deploy import INPUT_NAME`).
`from P import name` is an edge to `P.name` when that is a module, else to `P`.

Checked:
  * no cycles anywhere in the package;
  * the core (the model, its losses and loss network, the model file format, image I/O)
    reaches nothing of the application packages, directly or through other modules;
  * the model file format reaches no JAX (reading a model's metadata or style names must not
    load XLA).
`find_cycles` is itself tested on a package with a cycle, so the first check can fail.

And importing a module has no effect on absl's global flag state: every command defines its
flags on a fresh `FlagValues` inside `main` (`fnst_jax.cli`), so importing all of fnst_jax
(in a fresh process) defines no flag on `absl.flags.FLAGS` and disclaims no module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "fnst_jax"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

# The core: nothing here may reach an application module.
CORE_MODULES = (
    "fnst_jax.transformer_net",
    "fnst_jax.losses",
    "fnst_jax.vgg",
    "fnst_jax.model_file",
    "fnst_jax.image_io",
)
# The application packages and modules (a name's first part after `fnst_jax.`; `evaluate`
# covers its siblings `evaluate_video` etc.).
APPLICATION_PARTS = ("stylize", "serve", "deploy", "evaluate", "train_lib", "bench")
JAX_PACKAGES = frozenset({"jax", "jaxlib", "flax", "optax", "orbax"})


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its __init__.py)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _base(module: str, path: Path, level: int, name: str | None) -> str:
    """The absolute module a relative `from` import starts from."""
    if level == 0:
        return name or ""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts.pop()  # a module's relative imports start at its package
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, name] if name else parts)


def imports_of(module: str, path: Path, modules: Iterable[str]) -> tuple[set[str], set[str]]:
    """(the package's modules that `module` imports, the top-level names of everything else
    it imports), from every import statement in the file."""
    known = set(modules)
    package = module.split(".")[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node.level, node.module)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != package:
                external.add(target.split(".")[0])
                continue
            while target not in known:  # `import fnst_jax.a.b` of a name inside a module
                target = target.rpartition(".")[0]
            if target != module:
                internal.add(target)
    return internal, external


def import_graph(package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(package_dir, package)
    return {name: imports_of(name, path, modules)[0] for name, path in modules.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def reachable(graph: Mapping[str, Iterable[str]], start: str) -> dict[str, str]:
    """Every module `start` reaches -> the module that imports it on one path there."""
    via: dict[str, str] = {}
    pending = [start]
    while pending:
        node = pending.pop()
        for target in graph.get(node, ()):
            if target not in via and target != start:
                via[target] = node
                pending.append(target)
    return via


def _path(via: Mapping[str, str], start: str, end: str) -> str:
    chain = [end]
    while chain[-1] != start:
        chain.append(via[chain[-1]])
    return " -> ".join(reversed(chain))


def _is_application(module: str) -> bool:
    part = module.split(".")[1] if "." in module else ""
    return any(part == name or part.startswith(f"{name}_") for name in APPLICATION_PARTS)


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("core", CORE_MODULES)
def test_core_reaches_no_application_module(core):
    graph = import_graph()
    assert core in graph, f"{core}: no such module"
    via = reachable(graph, core)
    reached = sorted(module for module in via if _is_application(module))
    assert not reached, "\n".join(_path(via, core, module) for module in reached)


def test_model_file_reaches_no_jax():
    """The model file format loads with numpy and Pillow alone, through every module it
    imports."""
    modules = module_names(PACKAGE_DIR, PACKAGE)
    graph = import_graph()
    start = "fnst_jax.model_file"
    via = reachable(graph, start)
    offenders = []
    for module in [start, *via]:
        jax_imports = imports_of(module, modules[module], modules)[1] & JAX_PACKAGES
        if jax_imports:
            where = module if module == start else _path(via, start, module)
            offenders.append(f"{where} imports {', '.join(sorted(jax_imports))}")
    assert not offenders, "\n".join(offenders)


def test_find_cycles_finds_a_lazy_cycle(tmp_path):
    """The checks above can fail: a package whose modules import each other (one of them
    only inside a function, one through a relative import) is reported, and a one-way
    package is not."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from .c import g\n")
    (package / "sub" / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import a\n")
    graph = {
        name: imports_of(name, path, module_names(package, "pkg"))[0]
        for name, path in module_names(package, "pkg").items()
    }
    assert graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
    (package / "sub" / "c.py").write_text("import numpy\n")
    graph["pkg.sub.c"] = set()
    assert find_cycles(graph) == []
    chain = _path(reachable(graph, "pkg.d"), "pkg.d", "pkg.sub.c")
    assert chain == "pkg.d -> pkg.a -> pkg.sub.b -> pkg.sub.c"


def test_importing_the_package_leaves_absl_flags_alone():
    """Every module is imported (those whose optional dependencies are missing are skipped);
    the absl global state is read afterwards. `disclaim_module_ids` is absl's private record
    of `flags.disclaim_key_flags()` calls: none may happen at import."""
    modules = sorted(name for name in module_names(PACKAGE_DIR, PACKAGE) if name != PACKAGE)
    script = textwrap.dedent(
        f"""
        import importlib, sys
        from absl import flags
        from absl.flags import _helpers

        for name in {modules!r}:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as error:
                if (error.name or "").split(".")[0] == "fnst_jax":
                    raise
        ours = [m for m in flags.FLAGS.flags_by_module_dict() if m.startswith("fnst_jax")]
        disclaimed = getattr(_helpers, "disclaim_module_ids", set())
        ours += [name for name, module in sys.modules.items()
                 if name.startswith("fnst_jax") and id(module) in disclaimed]
        print(" ".join(ours))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE_DIR.parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"absl flag state changed at import by {result.stdout}"
