"""Properties of the CPU kernels and the package that no single loss test shows.

Determinism across thread counts, float32 accuracy of long rows, serial vs
parallel agreement, lazy compilation, the on-disk cache and the central
compile options.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numba_losses as nl
from numba_losses.kernels import _options
from numba_losses.kernels.cpu.elementwise import build_rowmean_kernel, scratch_shapes, task_layout
from numba_losses.kernels.registry import ELEMENTWISE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, **env):
    full_env = dict(os.environ, **env)
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_import_compiles_nothing():
    out = _python("""
        import numba_losses
        from numba_losses.kernels.cpu import elementwise, reduce
        print(elementwise.build_rowmean_kernel.cache_info().currsize, len(reduce.block_sum.signatures))
    """)
    assert out.split() == ["0", "0"]


def test_import_needs_no_cuda():
    """The CUDA stack (numba.cuda, the driver) is imported on the first device array only."""
    out = _python("""
        import sys
        import numpy as np
        import numba_losses as nl
        nl.L2Loss()(np.ones((2, 3)), np.zeros((2, 3)))
        print(sorted(m for m in sys.modules if m.startswith(("numba.cuda", "cupy", "torch"))))
    """)
    assert out.strip() == "[]"


_DETERMINISM = """
    import numpy as np, numba_losses as nl
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 300_001)).astype(np.float32)
    y = rng.standard_normal((3, 300_001)).astype(np.float32)
    out, (g,) = nl.L2Loss().forward_backward(x, y)
    out2 = nl.SigmoidBCELoss()(x, (y > 0).astype(np.float32))
    import hashlib
    print(out.tobytes().hex(), out2.tobytes().hex(), hashlib.sha256(g.tobytes()).hexdigest())
"""


def test_bit_identical_whatever_the_thread_count():
    one = _python(_DETERMINISM, NUMBA_NUM_THREADS="1")
    two = _python(_DETERMINISM, NUMBA_NUM_THREADS="2")
    assert one == two


def test_float32_long_row_matches_float64():
    n = 1 << 24  # one row of 16M elements: chunked across threads, summed in float64
    rng = np.random.default_rng(3)
    x64 = rng.standard_normal((1, n))
    y64 = rng.standard_normal((1, n))
    x32, y32 = x64.astype(np.float32), y64.astype(np.float32)
    loss = nl.L2Loss()
    got = loss(x32, y32)[0]
    ref = loss(x32.astype(np.float64), y32.astype(np.float64))[0]
    assert abs(float(got) - ref) <= 1e-6 * abs(ref)
    exact = 0.5 * np.mean((y32.astype(np.float64) - x32) ** 2)
    assert abs(ref - exact) <= 1e-12 * exact


def _scratch(shape3, rowwise=False):
    """Fresh scratch arrays (NaN-filled: never read before written) and the task layout for a row
    kernel call on ``shape3`` inputs."""
    buf_shape, partial_shape = scratch_shapes(shape3, rowwise)
    return np.full(buf_shape, np.nan), np.full(partial_shape, np.nan), task_layout(*shape3)


@pytest.mark.parametrize("term", ["l2", "bce_logit", "huber"])
def test_serial_and_parallel_kernels_agree(term):
    value, grad = ELEMENTWISE[term]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7001))
    y = rng.standard_normal((2, 5, 7001))
    dummy = np.ones((1, 1, 1))
    fscale = rng.random(5)
    coef = rng.random(5)
    results = []
    for parallel in (False, True):
        out, dx = np.empty(5), np.empty_like(x)
        build_rowmean_kernel(value, grad, False, False, True, parallel)(
            x, y, dummy, dummy, 1.0, 0.5, fscale, coef, out, dx, *_scratch(x.shape)
        )
        results.append((out, dx))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-14)
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize("parallel", [False, True])
def test_rowwise_variant_matches_independent_math(parallel):
    # One element per row (1-D losses) runs the map variant; the general variant must agree with it.
    value, grad = ELEMENTWISE["l2"]
    rng = np.random.default_rng(1)
    n = 70_001
    x, y = rng.standard_normal((1, n, 1)), rng.standard_normal((1, n, 1))
    fscale, coef = rng.random(n), rng.random(n)
    dummy = np.ones((1, 1, 1))
    for rowwise in (True, False):
        out, dx = np.empty(n), np.empty_like(x)
        build_rowmean_kernel(value, grad, False, False, True, parallel, rowwise)(
            x, y, dummy, dummy, 0.0, 0.0, fscale, coef, out, dx, *_scratch(x.shape, rowwise)
        )
        d = (y - x).reshape(n)
        np.testing.assert_allclose(out, fscale * d * d, rtol=1e-15)
        np.testing.assert_allclose(dx.reshape(n), coef * -2.0 * d, rtol=1e-15)


def test_second_process_loads_kernels_from_cache(tmp_path):
    code = """
        import numpy as np, numba_losses as nl
        from numba_losses.kernels.cpu.elementwise import build_rowmean_kernel
        from numba_losses.kernels.registry import ELEMENTWISE
        nl.HuberLoss().forward_backward(np.ones((4, 3)), np.zeros((4, 3)))
        kern = build_rowmean_kernel(*ELEMENTWISE["huber"], False, False, True, False)  # the one just used
        print(sum(kern.stats.cache_hits.values()), sum(kern.stats.cache_misses.values()))
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = _python(code, **env).split()
    second = _python(code, **env).split()
    assert first == ["0", "1"]
    assert second == ["1", "0"]


def test_row_kernels_loaded_from_the_cache_run_first_in_a_fresh_process(tmp_path):
    # The parallel row kernel picks its block buffer by Numba's thread id, whose symbol is resolved
    # when the threading layer is up. Loaded from the on-disk cache as the first thing a process
    # runs (serial first, then parallel, and parallel alone), both must run and be right.
    code = """
        import sys
        import numpy as np, numba_losses as nl
        rng = np.random.default_rng(3)
        small = rng.standard_normal((4, 3))
        big = rng.standard_normal((3, 70_000))
        order = [small, big] if sys.argv[1] == "serial-first" else [big]
        for x in order:
            out, (dx,) = nl.L2Loss().forward_backward(x, 0 * x)
            assert np.allclose(out, (x * x).mean(axis=1) / 2, rtol=1e-12), out
            assert np.allclose(dx, x / x.shape[1], rtol=1e-12)
        print("ok")
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    for order in ("serial-first", "serial-first", "parallel-first"):  # compiles, then loads twice
        full = dict(os.environ, **env)
        res = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), order], capture_output=True, text=True, env=full, timeout=600
        )
        assert res.returncode == 0 and res.stdout.strip() == "ok", (order, res.returncode, res.stderr[-2000:])


def test_kernels_use_the_central_options():
    value, grad = ELEMENTWISE["l1"]
    kern = build_rowmean_kernel(value, grad, False, False, True, False)
    assert kern.targetoptions["fastmath"] == set(_options.CPU_FASTMATH)
    assert kern.targetoptions["error_model"] == _options.ERROR_MODEL
    assert "reassoc" not in _options.CPU_FASTMATH and "nnan" not in _options.CPU_FASTMATH
    assert _options.source_fingerprint() * 2 in [c.cell_contents for c in kern.py_func.__closure__]


def test_serial_and_parallel_variants_have_their_own_cache_entries(tmp_path):
    # Numba's cache key ignores compile options; a shared entry once loaded the
    # serial kernel for large inputs (single-threaded) or the parallel one for tiny inputs.
    code = """
        import numpy as np, numba_losses as nl
        from numba_losses.kernels.cpu.elementwise import build_rowmean_kernel
        from numba_losses.kernels.registry import ELEMENTWISE
        from numba_losses.kernels.cpu import tiered
        loss = nl.L1Loss()
        loss.forward_backward(np.ones((4, 3)), np.zeros((4, 3)))          # serial variant
        loss.forward_backward(np.ones((64, 1024)), np.zeros((64, 1024)))  # parallel variant
        tiered.wait()  # with background compiles on, the parallel kernel may still be compiling
        for parallel in (False, True):
            k = build_rowmean_kernel(*ELEMENTWISE["l1"], False, False, True, parallel)
            print(k.targetoptions.get("parallel", False), sum(k.stats.cache_hits.values()),
                  sum(k.stats.cache_misses.values()), end=" ")
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    assert _python(code, **env).split() == ["False", "0", "1", "True", "0", "1"]
    assert _python(code, **env).split() == ["False", "1", "0", "True", "1", "0"]
