"""Every scalar loss term compiles to PTX through numba-cuda, unchanged.

This proves the target-neutral claim of ``kernels/scalar.py`` and
``kernels/vmath.py`` (the CUDA backend issue builds its kernels from the same
definitions). It needs the ``cuda`` extra (numba-cuda with NVVM from PyPI) but
no GPU; without numba-cuda installed it is skipped.
"""

from __future__ import annotations

from unittest import mock

import pytest

from numba_losses.kernels.registry import ELEMENTWISE

cuda = pytest.importorskip("numba.cuda")
numba_cuda_dispatcher = pytest.importorskip("numba.cuda.dispatcher")
if cuda.config.ENABLE_CUDASIM:
    pytest.skip("compile_ptx is unavailable under the CUDA simulator", allow_module_level=True)


class _Device:
    """Stands in for the current device (DESIGN.md: compile_device asks for it)."""

    def __init__(self, cc):
        self.compute_capability = cc


def _term_kernel(value, grad):
    def kernel(x, y, a, out, p0, p1):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = value(x[i], y[i], a[i], p0, p1) + grad(x[i], y[i], a[i], p0, p1)

    return kernel


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("term", sorted(ELEMENTWISE))
def test_term_compiles_to_ptx(term, dtype, cc):
    from numba import types

    ty = getattr(types, dtype)
    arr = ty[::1]
    with mock.patch.object(numba_cuda_dispatcher, "get_current_device", return_value=_Device(cc)):
        ptx, _ = cuda.compile_ptx(_term_kernel(*ELEMENTWISE[term]), (arr, arr, arr, arr, ty, ty), cc=cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    if dtype == "float32":  # precision is preserved on the device: no float64 arithmetic
        assert ".f64" not in ptx
