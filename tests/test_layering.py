"""The package's layout, read from its source with ``ast`` (nothing imported).

Imports run one way: public classes -> per-backend execution (``_cpu``, ``_cuda``)
-> planning (``_plan``) -> shared helpers (``_core``) -> kernels. No import cycle,
no import from ``_cpu`` into ``_cuda`` or the reverse, every family has the same
file stem in every layer, and ``import numba_losses`` loads no CUDA code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "numba_losses"
KERNELS = ROOT / "kernels"

# Higher imports lower, never the reverse; equal ranks may import each other (acyclically)
# only inside one layer (``_cpu.softmax`` composes ``_cpu.elementwise``).
RANK = {"public": 5, "_cpu": 4, "_cuda": 4, "_plan": 3, "_core": 2, "kernels": 1}


def _module_name(path: Path) -> str:
    if path.is_relative_to(KERNELS):
        parts = ("numba_losses", "kernels", *path.relative_to(KERNELS).with_suffix("").parts)
    else:
        parts = ("numba_losses", *path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("_cpu", "_cuda", "_plan", "_core", "kernels"):
        return parts[1]
    return "public"


def _imports(path: Path, module: str) -> set[str]:
    """Every numba_losses module ``path`` imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("numba_losses"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("numba_losses"):
                continue
            for alias in node.names:  # ``from . import elementwise`` names a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {m for m in found if m in MODULES}


SOURCES = {_module_name(p): p for p in [*PACKAGE.rglob("*.py"), *KERNELS.rglob("*.py")]}
MODULES = set(SOURCES)
GRAPH = {m: _imports(p, m) for m, p in SOURCES.items()}


def test_the_graph_is_read():
    assert "numba_losses._cpu.softmax" in MODULES
    assert "numba_losses._core.weighting" in GRAPH["numba_losses._cpu.softmax"]
    assert "numba_losses.kernels.cpu.softmax" in GRAPH["numba_losses._cpu.softmax"]


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_one_way(module):
    layer = _layer(module)
    for target in GRAPH[module]:
        if target == "numba_losses" or target == module:
            continue
        other = _layer(target)
        assert {layer, other} != {"_cpu", "_cuda"}, f"{module} imports {target}: host and device stay apart"
        same_layer_ok = layer == other
        assert RANK[other] < RANK[layer] or same_layer_ok, f"{module} ({layer}) imports {target} ({other})"


def test_every_family_has_one_stem_in_every_layer():
    stems = {p.stem for p in (PACKAGE / "_plan").glob("*.py") if p.stem != "__init__"}
    assert stems >= {"elementwise", "softmax", "ctc", "pairwise", "sdml", "makeloss"}
    for stem in stems:
        for layer in ("_cpu", "_cuda"):
            assert (PACKAGE / layer / f"{stem}.py").exists(), f"{layer}/{stem}.py is missing"
        assert (KERNELS / "cpu" / f"{stem}.py").exists() or (KERNELS / "cuda" / f"{stem}.py").exists()
        kernel_imports = {m for m in GRAPH[f"numba_losses._cpu.{stem}"] if m.startswith("numba_losses.kernels.cpu.")}
        assert kernel_imports <= {f"numba_losses.kernels.cpu.{stem}"}, f"_cpu/{stem}.py runs another family's kernels"


def test_planning_and_core_know_no_backend_module():
    for module, targets in GRAPH.items():
        if _layer(module) in ("_plan", "_core"):
            assert not any(_layer(t) in ("_cpu", "_cuda") for t in targets), module


def test_import_loads_no_cuda_code_and_a_cpu_call_none_either():
    code = (
        "import sys, numpy as np, numba_losses as nl\n"
        "nl.SoftmaxCELoss().forward_backward(np.ones((2, 3)), np.zeros(2))\n"
        "bad = [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda', 'numba_losses._cuda'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_package_directory_is_shipped():
    """pyproject's package list names every directory with an ``__init__.py`` (a wheel has them all)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(config["packages"])
    packages = {_module_name(p) for p in [*PACKAGE.rglob("__init__.py"), *KERNELS.rglob("__init__.py")]}
    assert packages - shipped == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert shipped - packages == set()
