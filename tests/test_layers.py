"""The package's folders are its layers: every import points down, and no modules import each other.

Imports are read from the source (module level and inside functions alike), so a lazy import
cannot hide a dependency that runs the wrong way.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyro_zforcing"

# Lowest first: a module may import its own layer's unit (the same module or folder) and lower layers.
LAYERS = [
    ("config", "files", "cache", "steps"),
    ("data",),
    ("distributions",),
    ("emissions",),
    ("nets",),
    ("models",),
    ("guides",),
    ("infer",),
    ("graphs",),
    ("checkpoint",),
    ("build",),
    ("memory",),
    ("evaluation",),
    ("training",),
    ("studies",),
    ("cli",),
    ("__main__",),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, *, package: str):
    """Every ``pyro_zforcing`` module that ``source`` (a module of ``package``) imports, as absolute names."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("pyro_zforcing"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("pyro_zforcing"):
                continue
            for alias in node.names:  # ``from . import memory`` imports a module
                candidate = f"{target}.{alias.name}"
                yield candidate if module_path(candidate) is not None else target


def module_path(name: str):
    relative = Path(*name.split(".")[1:])
    if not relative.parts:
        return PACKAGE / "__init__.py"
    for path in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if path.is_file():
            return path
    return None


def unit_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph():
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = imported_modules(path.read_text(), package=package)
        edges[name] = sorted({m for m in found if module_path(m) is not None})
    return edges


def test_every_unit_of_the_package_has_a_layer():
    units = {unit_of(name) for name in graph()} - {""}
    assert units <= set(RANK), f"modules without a layer in LAYERS: {sorted(units - set(RANK))}"


@pytest.mark.parametrize("name, imports", sorted(graph().items()))
def test_imports_point_down_the_layers(name, imports):
    if not unit_of(name):
        return  # the package's face imports nothing of its own
    here = RANK[unit_of(name)]
    upward = [m for m in imports if unit_of(m) and unit_of(m) != unit_of(name) and RANK[unit_of(m)] >= here]
    assert not upward, f"{name} imports {upward}, which are not below its layer"


def test_no_modules_import_each_other():
    edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in edges.get(node, ()):
            if nxt == node or nxt == "pyro_zforcing":
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_the_reader_resolves_lazy_relative_and_module_imports():
    """Imports inside functions (the kind that hid the old memory <-> train cycle), relative ones and
    ``from . import module`` are all seen."""
    source = ("def f():\n    from ..training.trainer import Trainer\n"
              "from . import base\nfrom ..nets import GaussianHead\nimport pyro_zforcing.files\n")
    found = list(imported_modules(source, package="pyro_zforcing.models"))
    assert sorted(found) == ["pyro_zforcing.files", "pyro_zforcing.models.base", "pyro_zforcing.nets",
                             "pyro_zforcing.training.trainer"]
