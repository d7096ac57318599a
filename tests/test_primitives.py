"""The scalar primitives lowered to LLVM instructions (``kernels/primitives.py``).

Compiled results and the Python fallbacks (which the CUDA simulator runs) are
checked against NumPy on ordinary and special values of both precisions, and a
first use checks that they compile nothing of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from numba import njit

from numba_losses.kernels.primitives import (
    bits_float,
    float_bits,
    like,
    pow2_integral,
    relu,
    relu_grad,
    rounded_mul,
    sign,
    step,
)

SPECIALS = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-30, -1e-30, 3e38, np.inf, -np.inf, np.nan]


@njit
def _apply_all(x, out):
    for i in range(x.size):
        v = x[i]
        out[0, i] = relu(v)
        out[1, i] = relu_grad(v)
        out[2, i] = sign(v)
        out[3, i] = step(v)
        out[4, i] = bits_float(float_bits(v))


def _reference(x):
    with np.errstate(invalid="ignore"):
        return np.stack(
            [
                np.where(x <= 0, 0, x),  # NaN compares false: kept
                np.where(np.isnan(x), x, (x > 0).astype(x.dtype)),
                np.where(np.isnan(x), 0, np.sign(x)),
                (x > 0).astype(x.dtype),
                x,
            ]
        ).astype(x.dtype)


def _values(dtype):
    rng = np.random.default_rng(7)
    return np.concatenate([np.array(SPECIALS, dtype=dtype), rng.standard_normal(200).astype(dtype)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_piecewise_ops_and_bit_casts_match_numpy(dtype):
    x = _values(dtype)
    out = np.empty((5, x.size), dtype=dtype)
    _apply_all(x, out)
    ref = _reference(x)
    np.testing.assert_array_equal(out, ref)
    # the result keeps the argument's precision, and relu of -0.0 is +0.0 as MXNet's max(v, 0)
    assert out.dtype == dtype and not np.signbit(out[0, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_fallbacks_match_numpy(dtype):
    x = _values(dtype)
    got = np.array(
        [[f(v) for v in x] for f in (relu, relu_grad, sign, step, lambda v: bits_float(float_bits(v)))], dtype=dtype
    )
    np.testing.assert_array_equal(got, _reference(x))


@pytest.mark.parametrize(
    ("dtype", "itype", "lo", "hi"), [(np.float32, np.int32, -126, 127), (np.float64, np.int64, -1022, 1023)]
)
def test_bits_and_powers_of_two(dtype, itype, lo, hi):
    @njit
    def powers(k, bits, out, floats):
        for i in range(k.size):
            out[i] = pow2_integral(k[i])
        for i in range(bits.size):
            floats[i] = bits_float(bits[i])

    k = np.arange(lo, hi + 1).astype(dtype)
    x = _values(dtype)
    bits = x.view(itype)
    out, floats = np.empty_like(k), np.empty_like(x)
    powers(k, bits, out, floats)
    np.testing.assert_array_equal(out, np.ldexp(dtype(1), k.astype(int)))
    np.testing.assert_array_equal(floats.view(itype), bits)  # NaN payloads too
    assert all(pow2_integral(v) == np.ldexp(dtype(1), int(v)) for v in k[::37])
    assert [float_bits(v) for v in x[:5]] == list(bits[:5])


def test_first_use_compiles_no_primitive_and_few_helpers(tmp_path):
    # A loss built on exp and log1p compiles its kernel plus each helper function at its first use
    # (each one costs tens of milliseconds: the compile latency a newcomer meets); the primitives
    # compile nothing, and the float32 exp is one function over its clamp.
    code = textwrap.dedent(
        """
        import numpy as np
        from numba.core import event
        import numba_losses as nl

        names = []

        class Names(event.Listener):
            def on_start(self, ev):
                names.append(ev.data["dispatcher"].py_func.__name__)

            def on_end(self, ev):
                pass

        event.register("numba:compile", Names())
        x = np.linspace(-3, 3, 40, dtype=np.float32).reshape(4, 10)
        nl.SigmoidBinaryCrossEntropyLoss().forward_backward(x, (x > 0).astype(np.float32))
        print(" ".join(names))
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    names = names.stdout.split()
    primitives = {"relu", "relu_grad", "sign", "step", "float_bits", "bits_float", "pow2_integral", "like", "impl"}
    assert not primitives & set(names), names
    assert len(names) <= 9, names  # 8 in December 2026, 18 before (kernel, loss terms, exp, log, block sum)


@njit(fastmath={"contract"})  # the kernels' flags: a plain product would be fused into the subtraction
def _margin_minus_products(x, y, out):
    for i in range(x.size):  # a loop LLVM vectorises
        out[i] = 1.0 - rounded_mul(x[i], y[i])


@pytest.mark.parametrize(("dtype", "k"), [(np.float64, 3), (np.float32, 25)])
def test_rounded_mul_is_rounded_before_the_subtraction(dtype, k):
    """``1 - fl(x y)`` with ``fl(x y) == 1`` although ``x y < 1`` exactly: 0 (a fused multiply-add gives
    the exact residue), in a vectorised loop, in Python, and with a float32 times a float64 (float64)."""
    x, y = np.full(64, 1 / k, dtype), np.full(64, k, dtype)
    assert Fraction(float(x[0])) * k < 1 and x[0] * y[0] == 1
    out = np.empty(64, dtype)
    _margin_minus_products(x, y, out)
    np.testing.assert_array_equal(out, 0)
    assert 1.0 - rounded_mul(x[0], y[0]) == 0
    mixed = njit(lambda a, b: rounded_mul(a, b))
    assert mixed(np.float32(0.1), 3.0) == np.float64(np.float32(0.1)) * 3.0
    assert isinstance(mixed(np.float32(0.5), np.float32(2.0)), float)  # typed float32, boxed as a float


def test_like_rounds_to_the_precision_of_its_first_argument():
    @njit
    def constants(x32, x64, i):
        return like(x32, 0.1), like(x64, 0.1), like(x32, np.float64(1e300)), like(x64, i), like(x32, True)

    got = constants(np.float32(1.0), 1.0, np.int64(-3))
    want = (np.float32(0.1), 0.1, np.float32(np.inf), -3.0, 1.0)
    assert got == want
    assert [type(v) for v in got[:2]] == [float, float]  # boxed; the values above carry the rounding
    assert like(np.float32(2.0), 0.1) == np.float32(0.1) and like(2.0, 0.1) == 0.1
