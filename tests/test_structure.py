"""The package's shape: stages do not read the run's config, and no code reaches into another object's privates."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "selfstab"
FILES = sorted(SRC.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _imports_config(tree: ast.AST, path: Path) -> bool:
    package = ".".join(("selfstab", *path.relative_to(SRC).parent.parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if any(n == "selfstab.config" or n.startswith("selfstab.config.") for n in names):
            return True
    return False


STAGES = ("processes/", "spectrum/", "problem/", "records/")


@pytest.mark.parametrize("path", [p for p in FILES if _rel(p).startswith(STAGES)], ids=_rel)
def test_stages_do_not_import_the_config(path):
    if _rel(path) == "problem/build.py":   # the one place in problem/ that turns a config into a problem
        return
    assert not _imports_config(ast.parse(path.read_text()), path), f"{_rel(path)} imports selfstab.config"


def test_the_check_sees_a_config_import(tmp_path):
    fake = SRC / "processes" / "fake.py"
    assert _imports_config(ast.parse("from ..config import TrackConfig"), fake)
    assert _imports_config(ast.parse("import selfstab.config"), fake)
    assert not _imports_config(ast.parse("from ..configure import x"), fake)


def _foreign_privates(tree: ast.AST) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls`` and not a third-party module (``nn.modules._X``)."""
    external = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            external |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("selfstab")}
        elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith("selfstab"):
            external |= {a.asname or a.name for a in node.names}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in ("self", "cls"):
                if isinstance(node.value, ast.Name):   # self._x is the object's own
                    continue
            elif isinstance(root, ast.Name) and root.id in external:
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_no_access_to_another_objects_underscored_attributes(path):
    assert _foreign_privates(ast.parse(path.read_text())) == []


def test_the_check_sees_private_access():
    assert _foreign_privates(ast.parse("def f(tracker):\n    tracker._history.clear()\n"))
    assert _foreign_privates(ast.parse("class A:\n    def f(self):\n        self.point._loss = 1\n"))
    assert not _foreign_privates(ast.parse("import torch\nclass A:\n    def f(self):\n"
                                           "        return self._x, torch.nn.modules.batchnorm._BatchNorm\n"))


# ----------------------------------------------------------------------------- import cycles

def _module_name(path: Path) -> str:
    parts = ("selfstab", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


MODULES = {_module_name(p): p for p in FILES}


def _imported_modules(tree: ast.AST, name: str, is_package: bool, modules=MODULES) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source: at the top, inside functions and
    under ``if TYPE_CHECKING`` alike (a lazy or type-only import still ties the two modules together)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:   # `from .pkg import sub` imports the submodule, `from .mod import f` the module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other():
    graph = {name: _imported_modules(ast.parse(path.read_text()), name, path.name == "__init__.py")
             for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_check_sees_an_import_cycle():
    modules = {"selfstab.a", "selfstab.b", "selfstab.c", "selfstab.p", "selfstab.p.x"}
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    assert _imported_modules(typed, "selfstab.a", False, modules) == {"selfstab.b"}
    lazy = ast.parse("def f():\n    from ..a import g\n    import selfstab.c\n")
    assert _imported_modules(lazy, "selfstab.p.x", False, modules) == {"selfstab.a", "selfstab.c"}
    assert _imported_modules(ast.parse("from .p import x"), "selfstab.a", False, modules) == {"selfstab.p.x"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


# ----------------------------------------------------------------------------- the benchmarks

BENCHMARKS = sorted((SRC.parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmarks_use_only_public_api(path):
    assert _foreign_privates(ast.parse(path.read_text())) == []


# ----------------------------------------------------------------------------- figures draw, they do not read

FILE_READERS = {"h5py", "json", "tomllib", "pickle", "csv", "sqlite3", "torch"}
READING_CALLS = {"open", "read_text", "read_bytes", "load", "loadtxt", "genfromtxt", "read_csv", "read_hdf",
                 "read_json", "read_parquet", "read_pickle", "File"}


def _file_reading(tree: ast.AST) -> list[str]:
    """Imports of file readers (h5py, json, tomllib, …) and calls that read a file (``open``, ``.read_text``,
    ``np.load``, ``pd.read_csv``, …): a figure gets its series from :mod:`selfstab.records` instead."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in FILE_READERS]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in FILE_READERS:
            found.append(f"line {node.lineno}: from {node.module} import …")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in READING_CALLS:
                found.append(f"line {node.lineno}: {ast.unparse(f)}(…)")
    return found


@pytest.mark.parametrize("path", [p for p in FILES if _rel(p).startswith("figures/")], ids=_rel)
def test_figures_do_not_read_files(path):
    assert _file_reading(ast.parse(path.read_text())) == []


def test_the_check_sees_a_figure_reading_a_file():
    assert _file_reading(ast.parse("import h5py"))
    assert _file_reading(ast.parse("from json import loads"))
    assert _file_reading(ast.parse("def f(p):\n    return open(p).read()\n"))
    assert _file_reading(ast.parse("def f(p):\n    return p.read_text()\n"))
    assert _file_reading(ast.parse("import numpy as np\nx = np.load('a.npy')\n"))
    assert not _file_reading(ast.parse("from ..records.series import column\nfrom .style import save\n"))
