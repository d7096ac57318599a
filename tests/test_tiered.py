"""Background compiles of the parallel kernels (``numba_losses.kernels.cpu.tiered``).

A parallel kernel's first call in a process runs its serial twin while the parallel
kernel compiles in a background thread. That is only sound if the twin gives the
same bits, so the first test checks every built-in kernel set, forward, forward+
backward and backward, in both dtypes, serial against parallel. The others check
the mechanism in processes of their own with the default mode on (the suite itself
compiles in the call: see conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numba_losses as nl
from numba_losses._catalogue import CASES
from numba_losses._core import weighting
from numba_losses._cpu import ctc as cpu_ctc
from numba_losses._cpu import pairwise as cpu_pairwise
from numba_losses._cpu import sdml as cpu_sdml
from numba_losses._cpu import softmax as cpu_softmax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(20261205)


def _serial_everywhere(monkeypatch) -> None:
    """Every family takes its serial kernel whatever the input size."""
    for module in (weighting, cpu_pairwise, cpu_ctc, cpu_softmax):
        monkeypatch.setattr(module, "SERIAL_BELOW", 1 << 62)
    monkeypatch.setattr(cpu_sdml, "PARALLEL_CELLS", 1 << 62)


def _all_results(loss, inputs, head):
    """Forward, forward+backward and backward (with head gradient ``head``) as one flat list of arrays."""
    out, grads = loss.forward_backward(*inputs)
    return [np.asarray(loss(*inputs)), np.asarray(out), *grads, *loss.backward(*inputs, out_grad=head)]


def _extra_cases():
    """Kernel sets the catalogue's sample inputs do not reach: class axis not last, per-element weights."""
    x = RNG.standard_normal((4, 21, 32, 32))
    labels = RNG.integers(0, 21, (4, 32, 32)).astype(np.float64)
    yield "SoftmaxCELoss(axis=1)", nl.SoftmaxCELoss(axis=1), (x, labels)
    dense = RNG.random(x.shape)
    yield "SoftmaxCELoss(axis=1, dense)", nl.SoftmaxCELoss(axis=1, sparse_label=False), (x, dense)
    a, b = RNG.standard_normal((64, 1024)), RNG.standard_normal((64, 1024))
    yield "HuberLoss(sample_weight per element)", nl.HuberLoss(), (a, b, RNG.random((64, 1024)))


def _cases():
    for label, make, sample in CASES:
        shape = (512, 16) if "SDML" in label else (64, 1024)  # above every family's serial threshold
        yield label, make(), sample(np.random.default_rng(1), shape)
    yield from _extra_cases()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_serial_twins_are_bit_identical_to_the_parallel_kernels(monkeypatch, dtype):
    cases = list(_cases())
    parallel = []
    for _, loss, inputs in cases:
        inputs = tuple(a.astype(dtype) if a.dtype.kind == "f" else a for a in inputs)
        head = RNG.uniform(0.5, 1.5, loss.result_shapes(*inputs)[0].shape).astype(dtype)
        parallel.append((inputs, head, _all_results(loss, inputs, head)))
    _serial_everywhere(monkeypatch)
    for (label, loss, _), (inputs, head, want) in zip(cases, parallel, strict=True):
        got = _all_results(loss, inputs, head)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.dtype == w.dtype and g.shape == w.shape, (label, i)
            assert np.array_equal(g, w, equal_nan=True), f"{label}: result {i} differs between serial and parallel"


def _python(code: str, cache_dir, *args: str, background: str = "1") -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), NUMBA_LOSSES_BACKGROUND_COMPILE=background)
    env.pop("NUMBA_LOSSES_CACHE", None)
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


FIRST_CALLS = """
    import sys
    import numpy as np
    import numba_losses as nl
    from numba_losses.kernels.cpu import tiered
    from numba_losses.kernels.cpu.elementwise import build_rowmean_kernel
    from numba_losses.kernels.registry import ELEMENTWISE

    x = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
    kernel = build_rowmean_kernel(*ELEMENTWISE["l2"], False, False, True, True)  # the one this call takes
    assert isinstance(kernel, tiered.TieredKernel)
    out, (dx,) = nl.L2Loss().forward_backward(x, 0 * x)
    twin = kernel._serial()
    print("twin-ran" if twin.signatures else "parallel-loaded", "background" if kernel._thread else "none")
    assert np.allclose(out, (x.astype(np.float64) ** 2).mean(1) / 2, rtol=1e-6)
    assert np.allclose(dx, x / 1024, rtol=1e-6)
    np.savez(sys.argv[1], out=out, dx=dx)
    # no wait: the process waits for the background compile at exit
"""


def test_first_call_runs_the_serial_twin_then_the_parallel_kernel_is_cached(tmp_path):
    first = _python(FIRST_CALLS, tmp_path / "cache", str(tmp_path / "first.npz")).split()
    assert first == ["twin-ran", "background"]
    # The first process waited for its background compile at exit and cached it: the next one loads it.
    second = _python(FIRST_CALLS, tmp_path / "cache", str(tmp_path / "second.npz")).split()
    assert second == ["parallel-loaded", "none"]
    a, b = np.load(tmp_path / "first.npz"), np.load(tmp_path / "second.npz")
    for name in ("out", "dx"):
        np.testing.assert_array_equal(a[name], b[name])  # serial twin and parallel kernel: the same bits


LATER_CALLS = """
    import os
    import numpy as np
    import numba_losses as nl
    from numba_losses.kernels.cpu import tiered
    from numba_losses.kernels.cpu.softmax import build_softmax_ce_kernel

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 1000)).astype(np.float32)
    y = rng.integers(0, 1000, 256).astype(np.float32)
    loss = nl.SoftmaxCELoss()
    kernel = build_softmax_ce_kernel(True, False, False, True, True, True, False, False)
    first = loss.forward_backward(x, y)
    thread = kernel._thread
    assert thread is not None and thread.is_alive() and not kernel.parallel.signatures
    later = loss.forward_backward(x, y)  # waits for the background compile, then runs the parallel kernel
    assert not thread.is_alive() and kernel._ready and len(kernel.parallel.signatures) == 1
    assert sum(kernel.parallel.stats.cache_misses.values()) == 1  # compiled once, in the background
    assert np.array_equal(later[0], first[0]) and np.array_equal(later[1][0], first[1][0])
    forward = build_softmax_ce_kernel(True, False, False, False, True, True, False, False)
    loss(x, y)  # the forward-only kernel's first call: its background compile starts
    assert forward._thread.is_alive()
    loss.forward_backward(x, y)  # a ready kernel's call waits for every background compile
    assert not forward._thread.is_alive() and forward._ready
    with tiered.synchronous():  # another dtype: compiled in the call, no background thread
        loss.forward_backward(x.astype(np.float64), y)
    assert len(kernel.parallel.signatures) == 2 and kernel._thread is thread
    # A fork waits for running background compiles: start one, fork, and the child finds it done.
    from numba_losses.kernels.cpu.pairwise import build_cosine_kernel
    a = rng.standard_normal((300, 200)).astype(np.float32)
    label = np.sign(rng.standard_normal(300)).astype(np.float32)
    nl.CosineEmbeddingLoss().forward_backward(a, a[::-1].copy(), label)
    cosine = build_cosine_kernel(True)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if cosine._ready else 3)
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_calls_during_the_background_compile_and_after(tmp_path):
    assert _python(LATER_CALLS, tmp_path / "cache").split() == ["child", "0"]


def test_off_switch_compiles_in_the_call(tmp_path):
    out = _python(FIRST_CALLS, tmp_path / "cache", str(tmp_path / "x.npz"), background="0")
    assert out.split() == ["parallel-loaded", "none"]  # the parallel kernel compiled in the call


TORCH_STEPS = """
    import torch
    import numba_losses.torch as nlt
    from numba_losses.kernels.cpu import tiered

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1000, generator=g, requires_grad=True)
    y = torch.randint(0, 1000, (256,), generator=g)
    module = nlt.SoftmaxCELoss()
    grads = []
    for step in range(3):  # twin, then waits for the background compile, then the parallel kernel
        x.grad = None
        module(x, y).mean().backward()
        grads.append(x.grad.clone())
        if step == 0:
            assert tiered._running, "the first step starts a background compile"
    assert not tiered._running
    want = x.detach().clone().requires_grad_()
    torch.nn.functional.cross_entropy(want, y).backward()
    assert all(torch.equal(grads[0], gr) for gr in grads[1:])
    torch.testing.assert_close(grads[0], want.grad, rtol=1e-5, atol=1e-8)
    print("ok")
"""


def test_pytorch_steps_across_the_background_compile(tmp_path):
    pytest.importorskip("torch")
    assert _python(TORCH_STEPS, tmp_path / "cache").split() == ["ok"]
