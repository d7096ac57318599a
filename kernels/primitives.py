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
* ``rounded_mul(a, b)``, a product rounded on its own as MXNet rounds it
  (never fused into a multiply-add);
* ``like(x, c)``, the number ``c`` converted to the precision of ``x``.

Compiled, they accept float32 and float64 (int32 / int64 for ``bits_float``) and
keep the precision of their argument.
"""

import numpy as np
from llvmlite import ir as llvm_ir
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
    if kf != kf:  # NaN (a NaN input passes the callers' clamps): NaN, as the callers then return
        return kf
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


# ---------------------------------------------------------------------------- rounded products
def _is_cuda(context) -> bool:
    return type(context).__module__.startswith(("numba.cuda", "numba_cuda"))


def _rounded_mul_codegen(context, builder, signature, args):
    """An ``fmul`` the fast-math pass leaves alone (CPU), or libdevice's ``mul.rn`` (CUDA).

    Numba adds the kernels' fast-math flags (``contract``) to every float instruction that has
    none; one with a flag of its own keeps it. ``arcp`` (approximate reciprocals) changes nothing
    for a product, and without ``contract`` LLVM does not fuse it into a multiply-add. NVVM and
    ptxas contract any plain multiply; ``mul.rn`` never.
    """
    ty = signature.return_type
    a, b = (context.cast(builder, v, t, ty) for v, t in zip(args, signature.args, strict=True))
    if _is_cuda(context):
        from numba.core import cgutils

        name = "__nv_fmul_rn" if ty == types.float32 else "__nv_dmul_rn"
        fnty = llvm_ir.FunctionType(a.type, [a.type, a.type])
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [a, b])
    return builder.fmul(a, b, flags=("arcp",))


def rounded_mul(a, b):
    """``a * b`` rounded on its own, never fused with a later addition into a multiply-add.

    MXNet rounds every product of a loss formula before the next operation uses it, and the
    difference shows where it matters most: at a kink (``relu(m - x y)`` with ``x y`` rounding to
    exactly ``m``, ``1/3 * 3``: MXNet's loss and gradient are 0, a fused form leaves a residue and
    the full gradient), in a cancellation MXNet makes exact (``u u - v v`` with ``u == v``), and at
    an overflow (``x - x z`` is ``-inf`` when ``x z`` overflows). Compiled, float32 and float64
    (a float32 and a float64 multiply in float64), written straight into the caller; in Python
    (the CUDA simulator) it is ``a * b``.
    """
    return a * b


@type_callable(rounded_mul)
def _rounded_mul_typing(context):
    def typer(a, b):
        if a in _FLOATS and b in _FLOATS:
            return types.float64 if types.float64 in (a, b) else types.float32
        return None

    return typer


for _a in _FLOATS:
    for _b in _FLOATS:
        lower_builtin(rounded_mul, _a, _b)(_rounded_mul_codegen)


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
