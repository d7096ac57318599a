"""A running maximum (and minimum) that ignores NaN and that LLVM vectorises, for the CPU kernels.

Numba lowers ``m = v if v > m else m`` to a compare and a select, which LLVM's
loop vectoriser does not turn into a SIMD maximum (Numba sets no function-wide
fast-math attribute, and its SLP vectoriser is off), so such a loop runs one
element per cycle. LLVM's ``llvm.maxnum`` intrinsic is IEEE 754's maxNum: the
larger operand, the other one when one of them is NaN. With the ``nnan`` and
``nsz`` flags on the call the vectoriser does turn a running ``maxnum`` into
SIMD maxima and one horizontal maximum at the end (about 5x faster here).
Those flags promise that no operand is NaN (and that the sign of a zero
result does not matter), so :func:`range_max` first maps NaN to ``-inf``
with a flagless ``maxnum`` (an elementwise, vectorisable step): the promise
holds for every input, and NaN is ignored exactly as the scalar loop does.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, register_jitable

from .._options import HELPER
from ..vmath import like


def _maxnum_intrinsic(flags, name="llvm.maxnum"):
    def typer(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            lt = context.get_value_type(a)
            fn = builder.module.declare_intrinsic(name, [lt], ir.FunctionType(lt, [lt, lt]))
            return builder.call(fn, args, fastmath=flags)

        return a(a, b), codegen

    return typer


maxnum = intrinsic(_maxnum_intrinsic(()))
maxnum.__doc__ = """``max(a, b)`` of two floats of one type; NaN is ignored (the other operand), both NaN give NaN."""

maxnum_no_nan = intrinsic(_maxnum_intrinsic(("nnan", "nsz")))
maxnum_no_nan.__doc__ = """:func:`maxnum` for operands that are never NaN (the result of a NaN operand is undefined)."""


minnum = intrinsic(_maxnum_intrinsic((), "llvm.minnum"))
minnum.__doc__ = """``min(a, b)`` of two floats of one type; NaN is ignored (the other operand), both NaN give NaN."""

minnum_no_nan = intrinsic(_maxnum_intrinsic(("nnan", "nsz"), "llvm.minnum"))
minnum_no_nan.__doc__ = """:func:`minnum` for operands that are never NaN (the result of a NaN operand is undefined)."""


@register_jitable(**HELPER)
def range_max(a, j0, j1, m):
    """``max(m, a[j0:j1])`` with NaN elements ignored (``m`` not NaN); vectorised.

    Maximum is exact and order-free apart from the sign of a zero result, so
    the SIMD order gives the scalar loop's value (up to ``+0`` / ``-0``).
    """
    ninf = like(m, -np.inf)
    for i in range(j0, j1):
        m = maxnum_no_nan(m, maxnum(a[np.uint64(i)], ninf))
    return m


@register_jitable(**HELPER)
def range_min(a, j0, j1, m):
    """``min(m, a[j0:j1])`` with NaN elements ignored (``m`` not NaN); vectorised like :func:`range_max`."""
    inf = like(m, np.inf)
    for i in range(j0, j1):
        m = minnum_no_nan(m, minnum(a[np.uint64(i)], inf))
    return m
