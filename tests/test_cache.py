"""The on-disk kernel cache can never break the package.

Every scenario runs a fresh Python process as a non-root user (``nobody``,
see ``_unprivileged``; root ignores file permissions) that imports the package and computes
L2Loss's values and gradient, and checks the results against values computed here, and how many
warnings the process printed (at most one, naming what to do).

Scenarios: no writable location at all (read-only install, no writable
``$HOME``), ``NUMBA_CACHE_DIR`` read-only (empty, and filled in advance, which
is then used), ``NUMBA_CACHE_DIR`` a regular file, and cache files truncated,
emptied or overwritten with random bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import numba_losses as nl

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300

_SCRIPT = textwrap.dedent(
    """
    import json, warnings
    warnings.simplefilter("always")
    caught = []
    warnings.showwarning = lambda message, category, *rest: caught.append(f"{category.__name__}: {message}")
    import numpy as np, numba_losses as nl
    x = np.linspace(-2, 2, 40).reshape(4, 10)
    y = np.linspace(1, -1, 40).reshape(4, 10)
    out, (grad,) = nl.L2Loss().forward_backward(x, y)
    import os
    print(json.dumps({"l2": out.tolist(), "grad": grad.tolist(), "warnings": caught, "uid": os.getuid()}))
    """
)


def _expected():
    x = np.linspace(-2, 2, 40).reshape(4, 10)
    y = np.linspace(1, -1, 40).reshape(4, 10)
    return {
        "l2": (0.5 * ((x - y) ** 2).mean(1)).tolist(),
        "grad": ((x - y) / 10).tolist(),
    }


NOBODY = 65534  # the unprivileged account of Debian and most Linux systems


def _unprivileged() -> list[str]:
    """A command prefix that runs the process as a non-root user, for whom file permissions hold.

    As root, ``setpriv`` switches to uid/gid 65534 (``nobody``) and keeps one
    capability, ``CAP_DAC_READ_SEARCH``, so the process can still read the
    interpreter and the packages wherever they are installed (here under
    ``/root``, mode 0700). Writing is not covered by it: a read-only directory is
    as unwritable as for any user. Not root: the current user already is one.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): cannot run the process as another user")
    return [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--",
    ]


def _run(env: dict[str, str], *, as_user: bool = True) -> dict:
    """Run the script in a fresh process; ``as_user``: one that obeys file permissions (see _unprivileged)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "HOME", "XDG_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    command = [*(_unprivileged() if as_user else []), sys.executable, "-c", _SCRIPT]
    done = subprocess.run(
        command, env={**base, **env}, capture_output=True, text=True, timeout=TIMEOUT, cwd="/", check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if as_user and os.geteuid() == 0:
        assert result["uid"] == NOBODY  # the scenario really ran as a non-root user
    for key, value in _expected().items():
        np.testing.assert_allclose(result[key], value, rtol=1e-12, err_msg=key)
    return result


def _read_only_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def _writable_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)


@pytest.fixture
def sandbox(tmp_path):
    """A temporary directory the unprivileged account can reach (pytest's are private to their owner)."""
    base = Path(os.environ.get("NL_CACHE_TEST_DIR", "/tmp")) / f"nl-cache-{os.getpid()}-{tmp_path.name}"
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    yield base
    _writable_tree(base)
    shutil.rmtree(base, ignore_errors=True)


def _installed_copy(where: Path) -> Path:
    """A read-only copy of the package (as a system install would be)."""
    site = where / "site"
    skip = shutil.ignore_patterns("__pycache__", "kernels")  # a checkout may link kernels/ in for development
    shutil.copytree(ROOT / "numba_losses", site / "numba_losses", ignore=skip)
    shutil.copytree(ROOT / "kernels", site / "numba_losses" / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    _read_only_tree(site)
    site.chmod(0o555)
    return site


def test_no_writable_location_falls_back_to_a_temporary_directory_with_one_warning(sandbox):
    site = _installed_copy(sandbox)
    home = sandbox / "home"
    home.mkdir(mode=0o555)
    result = _run({"PYTHONPATH": str(site), "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")})
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "NUMBA_CACHE_DIR" in result["warnings"][0] and "temporary directory" in result["warnings"][0]


def test_cache_dir_that_is_a_regular_file_still_computes(sandbox):
    blocker = sandbox / "not-a-dir"
    blocker.write_text("x")
    result = _run({"NUMBA_CACHE_DIR": str(blocker), "HOME": str(sandbox)})
    assert len(result["warnings"]) <= 1, result["warnings"]


def test_read_only_empty_cache_dir_computes_with_at_most_one_warning(sandbox):
    cache = sandbox / "cache"
    cache.mkdir()
    _read_only_tree(cache)
    result = _run({"NUMBA_CACHE_DIR": str(cache), "HOME": str(sandbox)})
    assert len(result["warnings"]) <= 1, result["warnings"]
    if result["warnings"]:
        assert "NUMBA_CACHE_DIR" in result["warnings"][0]


def test_a_cache_filled_in_advance_is_used_read_only(sandbox):
    cache = sandbox / "cache"
    cache.mkdir(mode=0o777)
    env = {"NUMBA_CACHE_DIR": str(cache), "HOME": str(sandbox)}
    _run(env, as_user=False)  # warm it (as the owner)
    files = sorted(p.name for p in cache.rglob("*.nbi"))
    assert files, "nothing was cached"
    _read_only_tree(cache)
    result = _run(env)  # now only readable: everything is loaded, nothing to save, no warning
    assert result["warnings"] == []
    assert sorted(p.name for p in cache.rglob("*.nbi")) == files


@pytest.mark.parametrize("damage", ["truncate", "empty", "random"])
def test_damaged_cache_files_are_recompiled_with_one_warning(sandbox, damage):
    cache = sandbox / "cache"
    cache.mkdir(mode=0o777)
    env = {"NUMBA_CACHE_DIR": str(cache), "HOME": str(sandbox)}
    _run(env, as_user=False)
    rng = np.random.default_rng(0)
    damaged = sorted([*cache.rglob("*.nbi"), *cache.rglob("*.nbc")])
    assert damaged
    for path in damaged:
        data = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "empty":
            path.write_bytes(b"")
        else:  # overwrite a stretch in the middle, keeping the size
            start = len(data) // 3
            n = max(1, min(64, len(data) - start))
            path.write_bytes(data[:start] + rng.bytes(n) + data[start + n :])
    result = _run(env, as_user=False)
    assert len(result["warnings"]) <= 1, result["warnings"]
    result = _run(env, as_user=False)  # rewritten by the previous run: clean again
    assert result["warnings"] == [], result["warnings"]


def test_in_process_results_are_unaffected():
    """The same values in this process (whatever its cache), against the same independent formulas."""
    x = np.linspace(-2, 2, 40).reshape(4, 10)
    y = np.linspace(1, -1, 40).reshape(4, 10)
    out, (grad,) = nl.L2Loss().forward_backward(x, y)
    np.testing.assert_allclose(out, _expected()["l2"], rtol=1e-12)
    np.testing.assert_allclose(grad, _expected()["grad"], rtol=1e-12)


_BOTH_DTYPES = textwrap.dedent(
    """
    import json
    import numpy as np, numba_losses as nl
    x = np.linspace(-2, 2, 40).reshape(4, 10)
    y = np.linspace(1, -1, 40).reshape(4, 10)
    result = {}
    for dtype in ("float32", "float64"):
        out, (grad,) = nl.L2Loss().forward_backward(x.astype(dtype), y.astype(dtype))
        result[dtype] = {"l2": out.tolist(), "grad": grad.tolist()}
    print(json.dumps(result))
    """
)


def _both_dtypes(env: dict[str, str]) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "HOME", "XDG_"))}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", _BOTH_DTYPES], env={**base, **env}, capture_output=True, text=True,
        timeout=TIMEOUT, cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for dtype, rtol in (("float32", 1e-6), ("float64", 1e-12)):
        for key, value in _expected().items():
            np.testing.assert_allclose(result[dtype][key], value, rtol=rtol, err_msg=f"{dtype} {key}")


def test_a_data_file_holding_another_variant_is_a_miss(sandbox):
    # Two processes compiling new variants of one kernel at once could each write the same data
    # file, leaving one variant's machine code under the other's index entry. Swapping the files of
    # the float32 and float64 variants makes that state on purpose: each variant must notice that
    # the file holds the other one and compile again (loading it gave a TypeError, or garbage).
    cache = sandbox / "cache"
    cache.mkdir(mode=0o777)
    env = {"NUMBA_CACHE_DIR": str(cache), "HOME": str(sandbox)}
    _both_dtypes(env)
    by_kernel: dict[str, list[Path]] = {}
    for path in cache.rglob("*.nbc"):
        by_kernel.setdefault(path.name.rsplit(".", 2)[0], []).append(path)
    pairs = [files for files in by_kernel.values() if len(files) == 2]
    assert pairs, sorted(by_kernel)
    for a, b in pairs:
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
    _both_dtypes(env)


_SLOW_INDEX_CHILD = textwrap.dedent(
    """
    import sys, time
    from numba.core import caching
    save_index = caching.IndexDataCacheFile._save_index

    def slow_save_index(self, overloads):  # widen the read-change-write window of an index update
        time.sleep(2.0)
        save_index(self, overloads)

    caching.IndexDataCacheFile._save_index = slow_save_index
    import numpy as np, numba_losses as nl
    x = np.linspace(-2, 2, 40).reshape(4, 10).astype(sys.argv[1])
    nl.L2Loss().forward_backward(x, x[::-1].copy())
    """
)

_COUNT_COMPILES = textwrap.dedent(
    """
    import json, logging
    import numpy as np, numba_losses as nl
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("numba_losses").addHandler(handler)
    logging.getLogger("numba_losses").setLevel(logging.INFO)
    for dtype in ("float32", "float64"):
        x = np.linspace(-2, 2, 40).reshape(4, 10).astype(dtype)
        nl.L2Loss().forward_backward(x, x[::-1].copy())
    print(json.dumps([line for line in lines if "compiling" in line]))
    """
)


def test_processes_adding_entries_at_once_keep_them_all(sandbox):
    # Two processes compile two variants of one kernel into an empty cache at the same time, with a
    # 2 s pause inside every index save. Unlocked, each would write back the index it had read and
    # one variant's entry would be lost; a third process would compile it again.
    cache = sandbox / "cache"
    cache.mkdir(mode=0o777)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "HOME", "XDG_"))}
    env = {**base, "PYTHONPATH": os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])}
    env.update(NUMBA_CACHE_DIR=str(cache), HOME=str(sandbox))
    children = [
        subprocess.Popen([sys.executable, "-c", _SLOW_INDEX_CHILD, dtype], env=env, cwd="/", stderr=subprocess.PIPE)
        for dtype in ("float32", "float64")
    ]
    for child in children:
        _, err = child.communicate(timeout=TIMEOUT)
        assert child.returncode == 0, err.decode()
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_COMPILES], env=env, cwd="/", capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
