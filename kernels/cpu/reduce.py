"""Vectorised, deterministic block sum for the CPU kernels.

Compiled on its own with ``SUM_FASTMATH`` (``reassoc``) so LLVM can split the
sum into SIMD lanes; the flag stays on these instructions only, even when the
function is inlined into a kernel whose scalar math must not be reassociated.
The lane pattern is fixed by the compiled code, not by the thread count.
Like the kernels (see :mod:`.compile`), compiled without the C wrapper that only
first-class function values use.
"""

import numpy as np

from .._options import ERROR_MODEL, NO_WRAPPERS, SUM_FASTMATH
from ..cache import njit_cached


@njit_cached(fastmath=set(SUM_FASTMATH), error_model=ERROR_MODEL, **NO_WRAPPERS)
def block_sum(buf, n):
    """Sum of ``buf[:n]`` (float32 or float64) in float64 SIMD lanes."""
    s = 0.0
    for i in range(n):
        s += buf[i]
    return s


@njit_cached(fastmath=set(SUM_FASTMATH), error_model=ERROR_MODEL, **NO_WRAPPERS)
def range_sum(a, j0, j1):
    """Sum of ``a[j0:j1]`` (float32 or float64, any 1-D layout) in float64 SIMD lanes."""
    s = 0.0
    for i in range(j0, j1):
        s += a[np.uint64(i)]  # unsigned: no negative-index wraparound, so the loop vectorises
    return s
