"""Products rounded on their own, as MXNet rounds every operation of a loss's formula.

The CPU kernels allow FMA contraction (``CPU_FASTMATH``) and NVVM contracts by
default: a product followed by an addition becomes one fused multiply-add,
rounded once. That is more accurate, but it is not what MXNet computes, and
the difference is not always at the level of rounding:

* at a kink, ``relu(m - x * y)`` with ``x * y`` rounding to exactly ``m``
  (``x = 1/3``, ``y = 3``): MXNet gives 0 and a zero gradient, the fused form
  a residue of about ``1e-17`` and the full gradient ``-y``;
* in a cancellation that MXNet makes exact: ``u * u - v * v`` with ``u == v``
  (TripletLoss with ``positive == negative``) is 0, fused it is the rounding
  error of ``v * v``, which also decides the sign of the row and so whether
  its gradient is zero;
* at an overflow: ``x - x * z`` gives ``-inf`` when ``x * z`` overflows, fused
  a finite number.

Loss terms therefore multiply with :func:`rounded_mul` wherever a product of
the formula is then added to something. On the CPU it is a separate function
compiled without fast-math flags, which LLVM inlines keeping its plain
``fmul`` (an instruction without the ``contract`` flag is never fused); on a
GPU it is libdevice's ``__fmul_rn`` / ``__dmul_rn``, which NVVM never fuses
(registered by :mod:`.cuda`). In Python (the CUDA simulator) it is ``a * b``.
"""

import numpy as np
from numba import types
from numba.extending import overload

from ._options import ERROR_MODEL, NO_WRAPPERS
from .cache import njit_cached

_FLOATS = (types.float32, types.float64)


def rounded_mul(a, b):
    """``a * b`` rounded to the arguments' precision, never fused with a later addition.

    Compiled, both arguments are float32 or float64; a float32 and a float64 multiply in float64.
    """
    return a * b


@njit_cached(fastmath=False, error_model=ERROR_MODEL, **NO_WRAPPERS)
def _unfused_mul(a, b):
    return a * b


@overload(rounded_mul, target="cpu")
def _rounded_mul_cpu(a, b):
    if a in _FLOATS and a == b:
        return lambda a, b: _unfused_mul(a, b)
    if a in _FLOATS and b in _FLOATS:  # float32 and float64: in float64, as ``a * b``
        return lambda a, b: _unfused_mul(np.float64(a), np.float64(b))
    return None
