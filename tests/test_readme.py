"""The README's Python examples run as written (the GPU one where a GPU with CuPy exists)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_readme_examples_run():
    ns: dict = {}
    for block in BLOCKS:
        if "cupy" in block:
            continue
        exec(compile(block, str(README), "exec"), ns)  # noqa: S102 - the README is ours
    assert ns["out"].shape == (64,) and ns["value"].shape == (64,)
    assert ns["seg_out"].shape == (8,) and ns["dlogits"].shape == (8, 21, 16, 16)
    assert (ns["dlogits"][:, :, :2] == 0).all()  # the ignored pixels


def test_readme_gpu_example_runs_with_cupy():
    cupy = pytest.importorskip("cupy")
    from tests.conftest import SIMULATED

    if SIMULATED:
        pytest.skip("needs a real GPU")
    ns: dict = {}
    for block in BLOCKS:
        exec(compile(block, str(README), "exec"), ns)  # noqa: S102
    assert isinstance(ns["dpred"], cupy.ndarray)


def test_ci_runs_exactly_the_readme_commands():
    """`.ci/run` calls the README's install and test commands, word for word."""
    setup = re.search(r"## Set up and run\n\n```bash\n(.*?)```", README.read_text(), re.S)
    assert setup is not None
    commands = [line.split("  #")[0].strip() for line in setup.group(1).splitlines() if line.strip()]
    ci_lines = [line.strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()]
    assert len(commands) == 2
    for command in commands:
        assert command in ci_lines, command
