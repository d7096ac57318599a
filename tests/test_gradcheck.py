"""``nl.check_gradient`` accepts right gradients and reports wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

import numba_losses as nl


class _Cube(nl.Loss):
    """mean(x**3) per row, with a derivative that can be made wrong on purpose."""

    def __init__(self, factor: float = 3.0) -> None:
        super().__init__(None, 0)
        self._factor = factor

    def _run(self, call):
        x = np.asarray(call.inputs["pred"], dtype=np.float64)
        out_grad = call.out_grad
        k = x[0].size
        value = (x**3).reshape(len(x), -1).mean(axis=1)
        head = np.ones(len(x)) if out_grad is None else np.asarray(out_grad, dtype=np.float64)
        grad = self._factor * x**2 * head.reshape((-1,) + (1,) * (x.ndim - 1)) / k
        return value, (grad,)


def test_correct_gradient_passes():
    rng = np.random.default_rng(0)
    errors = nl.check_gradient(_Cube(), rng.standard_normal((3, 4)), np.zeros((3, 4)))
    assert set(errors) == {"pred"} and errors["pred"] < 1e-7


def test_wrong_gradient_is_reported():
    rng = np.random.default_rng(0)
    with pytest.raises(nl.GradientCheckError, match="pred: error"):
        nl.check_gradient(_Cube(factor=2.9), rng.standard_normal((3, 4)), np.zeros((3, 4)))


def test_builtin_loss_with_keyword_inputs():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    errors = nl.check_gradient(nl.HuberLoss(rho=0.7), x, label=y, sample_weight=rng.random((4, 1)))
    assert errors["pred"] < 1e-6


def test_makeloss_is_refused_with_a_pointer_to_its_loss():
    x, y = np.ones((2, 3)), np.zeros((2, 3))
    wrapped = nl.MakeLoss(nl.L1Loss(), grad_scale=0.5)
    with pytest.raises(TypeError, match=r"check_gradient\(m\.loss"):
        nl.check_gradient(wrapped, x, y)
    assert nl.check_gradient(wrapped.loss, x + 0.5, y)["pred"] < 1e-6
    with pytest.raises(TypeError, match="needs a numba_losses Loss, got function"):
        nl.check_gradient(lambda a, b: a, x, y)
