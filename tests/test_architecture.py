"""The shape of huihua/: one-way floors, no import cycle, no import hidden inside a function.

The floors are the import-linter contract in pyproject.toml (``[tool.importlinter]``); grimp, which
import-linter uses, counts every import statement, those inside functions and ``TYPE_CHECKING`` blocks
included. The cycle and function-level checks below parse the sources with ``ast``. Each check is also
run on a copy of the package with one planted fault, to show that it can fail.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "huihua"

# Imports allowed inside a function: heavy optional dependencies that most commands never need.
LAZY_ALLOWED = {("huihua.adapters.preprocessors", "cv2")}
# The only TYPE_CHECKING block: huihua/__init__.py names its lazily loaded attributes for type checkers.
TYPE_CHECKING_ALLOWED = {"huihua"}


@dataclass(frozen=True)
class ImportSite:
    module: str  # the importing module, dotted
    target: str  # the imported module (the longest dotted prefix that is a module of the package, if ours)
    line: int
    in_function: bool
    in_type_checking: bool


def _module_names(package: Path) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, names: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        raw = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join([*base, node.module] if node.module else base)
        else:
            prefix = node.module or ""
        raw = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in names else prefix for a in node.names]
    out = []
    for target in raw:
        while target not in names and "." in target and target.split(".")[0] in names:
            target = target.rsplit(".", 1)[0]
        out.append(target)
    return out


def _visit(module: str, is_package: bool, names: dict[str, Path], node: ast.AST, in_function: bool,
           in_tc: bool) -> Iterator[ImportSite]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(module, is_package, child, names):
                yield ImportSite(module, target, child.lineno, in_function, in_tc)
        func = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        tc = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
        yield from _visit(module, is_package, names, child, in_function or func, in_tc or tc)


def import_sites(package: Path) -> Iterator[ImportSite]:
    names = _module_names(package)
    for module, path in sorted(names.items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        yield from _visit(module, path.name == "__init__.py", names, tree, False, False)


def import_cycles(package: Path) -> list[list[str]]:
    """Strongly connected components (more than one module, or a self-import) of the package's graph."""
    names = _module_names(package)
    graph: dict[str, set[str]] = {m: set() for m in names}
    for site in import_sites(package):
        if site.target in names and site.target != site.module:
            graph[site.module].add(site.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def hidden_imports(package: Path) -> list[str]:
    """Imports inside functions or TYPE_CHECKING blocks that are not on the allow-lists."""
    found = []
    for site in import_sites(package):
        if site.in_function and (site.module, site.target.split(".")[0]) not in LAZY_ALLOWED:
            found.append(f"{site.module}:{site.line} imports {site.target} inside a function")
        if site.in_type_checking and site.module not in TYPE_CHECKING_ALLOWED:
            found.append(f"{site.module}:{site.line} imports {site.target} under TYPE_CHECKING")
    return found


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Runs import-linter's contract from root/pyproject.toml on the package found in root."""
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )


def _copy_package(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "huihua", ignore=shutil.ignore_patterns("*.safetensors", "*.gz", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(root: Path, relative: str, text: str) -> None:
    path = root / "huihua" / relative
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_floors_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "huihua floors KEPT" in result.stdout


def test_floors_contract_catches_an_upward_import(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    # nn/ is a low floor: a function there that reaches up into the pipelines breaks the contract.
    upward = "\n\ndef _upward() -> object:\n    from huihua.pipelines import txt2img\n\n    return txt2img\n"
    _plant(root, "nn/layers.py", upward)
    result = lint_imports(root)
    assert result.returncode != 0
    assert "huihua floors BROKEN" in result.stdout
    assert "huihua.nn.layers" in result.stdout and "huihua.pipelines.txt2img" in result.stdout


def test_every_floor_is_a_package_or_module_that_exists() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (contract,) = config["contracts"]
    floors = [name.strip() for layer in contract["layers"] for name in layer.split("|")]
    names = _module_names(PACKAGE)
    assert [f for f in floors if f not in names] == []
    # Every top-level module or subpackage of huihua sits on a floor (except the package itself).
    top = {n for n in names if n.count(".") == 1}
    assert sorted(top - set(floors)) == []


def test_no_import_cycle() -> None:
    assert import_cycles(PACKAGE) == []


def test_cycle_check_catches_a_cycle(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    _plant(root, "errors.py", "\nfrom huihua import atomic as _atomic  # noqa\n")
    cycles = import_cycles(root / "huihua")
    assert any({"huihua.errors", "huihua.atomic"} <= set(c) for c in cycles), cycles


def test_no_import_inside_functions_or_type_checking() -> None:
    assert hidden_imports(PACKAGE) == []


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ("\n\ndef _late() -> None:\n    import json\n", "huihua.errors:"),
        ("\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n", "under TYPE_CHECKING"),
    ],
)
def test_hidden_import_check_catches_one(tmp_path: Path, planted: str, expected: str) -> None:
    root = _copy_package(tmp_path)
    _plant(root, "errors.py", planted)
    found = hidden_imports(root / "huihua")
    assert len(found) == 1 and expected in found[0], found


def test_parser_builds_without_torch() -> None:
    code = (
        "import sys; from huihua.cli.parser import build_parser; build_parser().parse_args(['generate', 'x']); "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'safetensors') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
