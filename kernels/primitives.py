"""Scalar primitives lowered straight to LLVM instructions, CPU and CUDA.

Numba compiles every ``register_jitable`` helper, and every NumPy-style scalar
``.view``, as a function of its own at a process's first use (10-40 ms each on a
2-core machine) before LLVM inlines it into the kernel. The functions here are
plain Python functions (so they also run in Python, as the CUDA simulator runs
kernels) whose compiled form is registered with ``type_callable`` and
``lower_builtin``: a few instructions written straight into the caller, with no
compile of their own. The kernels' smallest and most shared operations are
written this way:

* bit casts: ``float_bits(x)``, the IEEE-754 bits of a float32 / float64 as an
  int32 / int64, and ``bits_float(i)``, its inverse;
* ``pow2_integral(k)``, ``2**k`` for an integral float ``k``, built from bits;
* MXNet's ``relu``, its backward ``relu_grad``, ``sign`` and the step ``[v > 0]``,
  as ordered comparisons and selects (NaN handling as documented on each);
* ``like(x, c)``, the number ``c`` converted to the precision of ``x``.

Compiled, they accept float32 and float64 (int32 / int64 for ``bits_float``) and
keep the precision of their argument.
"""

import numpy as np
from numba import types
from numba.extending import lower_builtin, type_callable

_FLOATS = (types.float32, types.float64)
_SAME = {t: t for t in _FLOATS}
_INT_OF_FLOAT = {types.float32: types.int32, types.float64: types.int64}
_FLOAT_OF_INT = {v: k for k, v in _INT_OF_FLOAT.items()}
# float type -> (int type, mantissa bits, exponent bias)
_POW2_FORMAT = {types.float32: (types.int32, 23, 127), types.float64: (types.int64, 52, 1023)}


def _lowered(result_of, codegen):
    """Register ``codegen(context, builder, arg_type, arg)`` as the compiled form of a one-argument function.

    ``result_of`` maps each accepted argument type to the result type.
    """

    def register(python_impl):
        @type_callable(python_impl)
        def _typing(context):
            def typer(v):
                return result_of.get(v)

            return typer

        def _lowering(context, builder, signature, args):
            return codegen(context, builder, signature.args[0], args[0])

        for arg_type in result_of:
            lower_builtin(python_impl, arg_type)(_lowering)
        return python_impl

    return register


def _select_chain(builder, v, cases, default):
    """``cases``: ``(op, value)`` pairs tested in order as ordered compares of ``v`` with 0; else ``default``."""
    res = default
    for op, value in reversed(cases):
        res = builder.select(builder.fcmp_ordered(op, v, v.type(0.0)), value, res)
    return res


# ---------------------------------------------------------------------------- bits
def _bitcast(context, builder, arg_type, arg, table):
    return builder.bitcast(arg, context.get_value_type(table[arg_type]))


@_lowered(_INT_OF_FLOAT, lambda c, b, t, x: _bitcast(c, b, t, x, _INT_OF_FLOAT))
def float_bits(x):
    """The bits of float32 / float64 ``x`` as an int32 / int64."""
    x = x if isinstance(x, np.floating) else np.float64(x)
    return x.view(np.int32 if x.dtype == np.float32 else np.int64)


@_lowered(_FLOAT_OF_INT, lambda c, b, t, x: _bitcast(c, b, t, x, _FLOAT_OF_INT))
def bits_float(i):
    """The float32 / float64 whose bits are the int32 / int64 ``i``."""
    i = i if isinstance(i, np.integer) else np.int64(i)
    return i.view(np.float32 if i.dtype == np.int32 else np.float64)


def _pow2_codegen(context, builder, arg_type, kf):
    int_type, mant_bits, bias = _POW2_FORMAT[arg_type]
    lifted = builder.fadd(kf, kf.type(float(bias + 2**mant_bits)))
    bits = builder.bitcast(lifted, context.get_value_type(int_type))
    shifted = builder.shl(bits, bits.type(mant_bits))
    return builder.bitcast(shifted, kf.type)


@_lowered(_SAME, _pow2_codegen)
def pow2_integral(kf):
    """``2**kf`` for an integral float32 / float64 ``kf`` whose power is a normal number.

    ``kf + bias + 2**m`` (``m`` mantissa bits) holds the biased exponent in its low
    mantissa bits; shifting them into the exponent field builds the power without a
    float-to-int conversion (which AVX2 lacks for 64-bit lanes and would scalarise
    a loop). Compiled, out-of-range ``kf`` gives garbage, not an error: callers clamp.
    """
    kf = kf if isinstance(kf, np.floating) else np.float64(kf)
    return kf.dtype.type(np.ldexp(1.0, int(kf)))


# ---------------------------------------------------------------------------- MXNet's piecewise ops
@_lowered(_SAME, lambda c, b, t, x: _select_chain(b, x, [("<=", x.type(0.0))], x))
def relu(v):
    """MXNet relu: ``v`` if ``v > 0`` or ``v`` is NaN, else 0."""
    return v if not v <= 0 else type(v)(0)


@_lowered(
    _SAME,
    lambda c, b, t, x: b.select(
        b.fcmp_unordered("uno", x, x), x, _select_chain(b, x, [(">", x.type(1.0))], x.type(0.0))
    ),
)
def relu_grad(r):
    """MXNet relu backward from its output ``r``: 1 if ``r > 0``, 0 if ``r == 0``, NaN if NaN."""
    return r if r != r else type(r)(1 if r > 0 else 0)


@_lowered(_SAME, lambda c, b, t, x: _select_chain(b, x, [("<", x.type(-1.0)), (">", x.type(1.0))], x.type(0.0)))
def sign(v):
    """MXNet sign: -1, 0 or 1; ``sign(0) = sign(NaN) = 0``."""
    return type(v)(1 if v > 0 else -1 if v < 0 else 0)


@_lowered(_SAME, lambda c, b, t, x: _select_chain(b, x, [(">", x.type(1.0))], x.type(0.0)))
def step(v):
    """``[v > 0]`` as 0.0 / 1.0 (NaN gives 0)."""
    return type(v)(1 if v > 0 else 0)


# ---------------------------------------------------------------------------- conversion
def like(x, c):
    """The number ``c`` in the floating-point precision of ``x`` (float32 or float64)."""
    return np.float32(c) if isinstance(x, np.float32) else np.float64(c)


@type_callable(like)
def _like_typing(context):
    def typer(x, c):
        if x in _FLOATS and isinstance(c, (types.Number, types.Boolean, types.Literal)):
            return x

    return typer


@lower_builtin(like, types.Float, types.Any)
def _like_lowering(context, builder, signature, args):
    return context.cast(builder, args[1], signature.args[1], signature.return_type)
