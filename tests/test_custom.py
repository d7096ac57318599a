"""User-made losses (elementwise_loss) on the CPU and CUDA (MakeLoss around them: test_makeloss.py).

The CUDA half runs on device arrays: a real GPU when there is one, else Numba's
simulator (see conftest.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import numba_losses as nl
from tests.test_cuda import dev, host
from tests.user_losses import huber_grad, huber_value, l1_grad, l1_value


def xent_value(out, label):  # the cross-entropy of MXNet's MakeLoss page
    return -(label * math.log(out) + (1 - label) * math.log(1 - out))


def xent_grad(out, label):
    return -(label / out - (1 - label) / (1 - out))


RNG = np.random.default_rng(3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_user_l1_is_bit_identical_to_the_builtin(dtype, target):
    MyL1 = nl.elementwise_loss(l1_value, l1_grad)
    x = RNG.standard_normal((5, 7)).astype(dtype)
    y = RNG.standard_normal((5, 7)).astype(dtype)
    sw = RNG.random((5, 1)).astype(dtype)
    args = [x, y, sw] if target == "cpu" else [dev(x), dev(y), dev(sw)]
    mine = MyL1(weight=0.5).forward_backward(*args)
    ref = nl.L1Loss(weight=0.5).forward_backward(*args)
    np.testing.assert_array_equal(host(mine[0]), host(ref[0]))
    np.testing.assert_array_equal(host(mine[1][0]), host(ref[1][0]))


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_user_loss_with_a_parameter_matches_the_builtin_huber(target):
    MyHuber = nl.elementwise_loss(huber_value, huber_grad, name="MyHuber", params={"rho": 1.0})
    assert MyHuber.__name__ == "MyHuber"
    x = RNG.standard_normal((4, 6))
    y = RNG.standard_normal((4, 6))
    args = [x, y] if target == "cpu" else [dev(x), dev(y)]
    out, (g,) = MyHuber(rho=0.7, batch_axis=1).forward_backward(*args)
    r_out, (r_g,) = nl.HuberLoss(rho=0.7, batch_axis=1).forward_backward(x, y)
    np.testing.assert_allclose(host(out), r_out, rtol=1e-14)
    np.testing.assert_allclose(host(g), r_g, rtol=1e-14)


def test_user_loss_passes_the_gradient_check_and_a_wrong_derivative_is_caught():
    MyHuber = nl.elementwise_loss(huber_value, huber_grad, params=("rho",))
    x, y = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    assert max(nl.check_gradient(MyHuber(rho=0.5), x, y).values()) < 1e-6
    Wrong = nl.elementwise_loss(huber_value, lambda p, lab, rho: 2.0 * huber_grad(p, lab, rho), params=("rho",))
    with pytest.raises(nl.GradientCheckError):
        nl.check_gradient(Wrong(rho=0.5), x, y)


def test_parameters_are_checked():
    P = nl.elementwise_loss(huber_value, huber_grad, params=("rho",))
    with pytest.raises(TypeError, match="needs the parameter 'rho'"):
        P()
    with pytest.raises(TypeError, match="unexpected parameter"):
        P(rho=1.0, margin=2.0)
    with pytest.raises(ValueError, match="at most 2"):
        nl.elementwise_loss(l1_value, l1_grad, params=("a", "b", "c"))


def test_a_function_numba_cannot_compile_is_named_at_first_use():
    def bad_value(pred, label):
        return {"not": pred}  # a dict of floats: not a number

    Bad = nl.elementwise_loss(bad_value, l1_grad)
    with pytest.raises(nl.UserCompileError, match="bad_value"):
        Bad()(np.ones((2, 3)), np.zeros((2, 3)))
