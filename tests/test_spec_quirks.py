"""docs/semantics.rst section 17 (quirks kept on purpose) for the elementwise losses, and the call-time errors.

Every expected value is written out by hand from the formulas of docs/semantics.rst; the derivation is in the
comment next to it. Items covered here: 1, 2, 3, 4, 5 (L1 / Hinge / SquaredHinge / Huber), 8, 10,
14 and 15, plus section 0/1 errors, empty inputs and dtypes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import numba_losses as nl

LN2 = math.log(2.0)

# Every implemented loss, with a constructor and valid (pred, label) pair of shape (2, 3).
_X = np.array([[0.2, -0.4, 0.6], [0.1, 0.3, -0.5]])
_Y01 = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
_YPM = 2 * _Y01 - 1
LOSSES = {
    "L2": (nl.L2Loss, _X, _X[::-1].copy()),
    "L1": (nl.L1Loss, _X, _X[::-1].copy()),
    "BCE": (nl.SigmoidBinaryCrossEntropyLoss, _X, _Y01),
    "BCE-sigmoid": (lambda **k: nl.SigmoidBCELoss(from_sigmoid=True, **k), np.abs(_X), _Y01),
    "Huber": (nl.HuberLoss, _X, _X[::-1].copy()),
    "Hinge": (nl.HingeLoss, _X, _YPM),
    "SquaredHinge": (nl.SquaredHingeLoss, _X, _YPM),
    "Logistic": (nl.LogisticLoss, _X, _YPM),
    "Poisson": (nl.PoissonNLLLoss, _X, np.abs(_YPM) * 2),
    "KLDiv": (nl.KLDivLoss, _X - 1, np.full((2, 3), 1 / 3)),
}
LOSS_IDS = list(LOSSES)


def _fb(loss, *args, **kw):
    out, grads = loss.forward_backward(*args, **kw)
    assert isinstance(grads, tuple) and len(grads) == 1
    return out, grads[0]


# ---------------------------------------------------------------------------------------------
# Item 1: sample_weight broadcasting is right-aligned and can grow the loss
# ---------------------------------------------------------------------------------------------
def test_q1_sample_weight_grows_n1_times_n():
    x = np.array([[1.0], [3.0]])
    y = np.zeros((2, 1))
    sw = np.array([1.0, 3.0])
    # l = 0.5*(y-x)^2 = [[0.5], [4.5]]; W = l * sw (right-aligned) = [[0.5, 1.5], [4.5, 13.5]]
    # out = row means = [1.0, 9.0]
    out, dx = _fb(nl.L2Loss(), x, y, sw)
    np.testing.assert_allclose(out, [1.0, 9.0], rtol=1e-14)
    assert out.shape == (2,)
    # dx[b] = sum_j (1/K) * sw_j * (x_b - y_b) with K = 2: (1+3)/2 * x = [[2], [6]]
    np.testing.assert_allclose(dx, [[2.0], [6.0]], rtol=1e-14)
    assert dx.shape == (2, 1)


def test_q1_sample_weight_column_does_not_grow():
    x = np.array([[1.0], [3.0]])
    y = np.zeros((2, 1))
    # sw (2, 1): one weight per row: out = [0.5*1, 4.5*3] = [0.5, 13.5]; dx = sw * x = [[1], [9]]
    out, dx = _fb(nl.L2Loss(), x, y, np.array([[1.0], [3.0]]))
    np.testing.assert_allclose(out, [0.5, 13.5], rtol=1e-14)
    np.testing.assert_allclose(dx, [[1.0], [9.0]], rtol=1e-14)


def test_q1_sample_weight_adds_leading_axis():
    x = np.ones((2, 3))
    y = np.zeros((2, 3))
    sw = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1)
    # l = |y - x| = 1; W has shape (4, 2, 3), W[k] = sw_k; batch_axis 0 is W's axis 0 -> out shape (4,)
    # out = [1, 2, 3, 4]; dx = sum_k (1/6) * sw_k * sign(x - y) = 10/6 everywhere
    out, dx = _fb(nl.L1Loss(), x, y, sw)
    np.testing.assert_allclose(out, [1.0, 2.0, 3.0, 4.0], rtol=1e-14)
    np.testing.assert_allclose(dx, np.full((2, 3), 10 / 6), rtol=1e-14)


def test_q1_sample_weight_grows_with_batch_axis_1():
    x = np.array([[1.0], [2.0]])  # (2, 1)
    y = np.zeros((2, 1))
    sw = np.array([1.0, 2.0, 3.0])  # W = |x| * sw has shape (2, 3)
    # batch_axis=1: out[j] = mean_b |x_b| * sw_j = 1.5 * sw_j = [1.5, 3, 4.5]
    # dx[b] = sum_j (g_j / 2) * sw_j = (1 + 2 + 3)/2 = 3 with g = ones
    out, dx = _fb(nl.L1Loss(batch_axis=1), x, y, sw)
    np.testing.assert_allclose(out, [1.5, 3.0, 4.5], rtol=1e-14)
    np.testing.assert_allclose(dx, [[3.0], [3.0]], rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Item 2: L2Loss halves via weight/2; weight=None is a TypeError at call time
# ---------------------------------------------------------------------------------------------
def test_q2_l2_halves_the_weight():
    x, y = np.array([[2.0]]), np.array([[0.0]])
    # default weight 1: 1/2 * (0 - 2)^2 = 2; weight 2: 2/2 * 4 = 4; weight 3: 3/2 * 4 = 6
    np.testing.assert_allclose(nl.L2Loss()(x, y), [2.0])
    np.testing.assert_allclose(nl.L2Loss(weight=2)(x, y), [4.0])
    np.testing.assert_allclose(nl.L2Loss(3.0)(x, y), [6.0])
    # dx = w * (x - y) = 3 * 2 = 6
    _, dx = _fb(nl.L2Loss(weight=3.0), x, y)
    np.testing.assert_allclose(dx, [[6.0]])


def test_q2_l2_weight_none_raises_at_call():
    loss = nl.L2Loss(weight=None)  # constructing is fine
    with pytest.raises(TypeError):
        loss(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError):
        loss.forward_backward(np.ones((2, 2)), np.zeros((2, 2)))


# ---------------------------------------------------------------------------------------------
# Item 3: weight that is not a number -> AssertionError at call, not in the constructor
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["2", [1.0], np.array(2.0), 1j])
@pytest.mark.parametrize("name", [n for n in LOSS_IDS if n != "L2"])
def test_q3_weight_not_a_number(name, bad):
    ctor, x, y = LOSSES[name]
    loss = ctor(weight=bad)  # no error here
    with pytest.raises(AssertionError, match="weight must be a number"):
        loss(x, y)
    with pytest.raises(AssertionError, match="weight must be a number"):
        loss.backward(x, y)


def test_q3_l2_weight_not_a_number():
    # L2Loss divides first: "2" / 2 is a TypeError in MXNet, before the assertion
    loss = nl.L2Loss(weight="2")
    with pytest.raises(TypeError):
        loss(np.ones((1, 2)), np.zeros((1, 2)))


@pytest.mark.parametrize("weight", [2, 2.0, np.float32(2), np.float64(2), np.int64(2)])
def test_q3_numeric_weights_accepted(weight):
    # L1: |0 - 1| * 2 = 2
    np.testing.assert_allclose(nl.L1Loss(weight=weight)(np.ones((1, 2)), np.zeros((1, 2))), [2.0])


def test_q3_bool_weight_accepted():
    # True is a number (1), False scales to 0
    np.testing.assert_allclose(nl.L1Loss(weight=True)(np.ones((1, 2)), np.zeros((1, 2))), [1.0])
    np.testing.assert_allclose(nl.L1Loss(weight=False)(np.ones((1, 2)), np.zeros((1, 2))), [0.0])
    # NumPy booleans too (MXNet's check accepts any NumPy scalar), in every loss alike
    for loss in (nl.L1Loss, nl.L2Loss, nl.HuberLoss, nl.HingeLoss):
        np.testing.assert_allclose(loss(weight=np.True_)(np.ones((1, 2)), np.zeros((1, 2))), loss()(
            np.ones((1, 2)), np.zeros((1, 2))))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Item 4: BCE / Logistic gradient at x == 0 is -z (no pos_weight) / 1 - z (pos_weight)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_q4_bce_gradient_at_zero(dtype):
    x = np.zeros((1, 2), dtype)
    z = np.array([[0.25, 1.0]], dtype)
    # l = relu(0) - 0 + softrelu(-0) = log 2 per element -> out = log 2
    # dx = -z / K = [-0.125, -0.5]   (sigma(0) - z would give [0.125, -0.25])
    out, dx = _fb(nl.SigmoidBinaryCrossEntropyLoss(), x, z)
    np.testing.assert_allclose(out, [LN2], rtol=1e-6)
    np.testing.assert_array_equal(dx, np.array([[-0.125, -0.5]], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_q4_bce_pos_weight_gradient_at_zero(dtype):
    x = np.zeros((1, 2), dtype)
    z = np.array([[0.25, 1.0]], dtype)
    pw = np.array([[3.0, 3.0]], dtype)
    # lw = 1 + (pw - 1) z = [1.5, 3]; l = 0 - 0 + lw * (log 2 + relu(0)) -> out = mean = 2.25 log 2
    # dx = (1 - z) / K = [0.375, 0]   (1 - z - lw*sigma(0) would give [-0.375, -1.5])
    out, dx = _fb(nl.SigmoidBinaryCrossEntropyLoss(), x, z, None, pw)
    np.testing.assert_allclose(out, [2.25 * LN2], rtol=1e-6)
    np.testing.assert_array_equal(dx, np.array([[0.375, 0.0]], dtype))


def test_q4_bce_tiny_nonzero_pred_uses_sigmoid():
    # |x| = 1e-30 is not 0: sigma(x) - z = 0.5 - 0.25 = 0.25, / K = 1 -> 0.25 (docs/semantics.rst section 4)
    _, dx = _fb(nl.SigmoidBinaryCrossEntropyLoss(), np.array([[1e-30]]), np.array([[0.25]]))
    np.testing.assert_allclose(dx, [[0.25]], rtol=1e-15)
    _, dx = _fb(nl.SigmoidBinaryCrossEntropyLoss(), np.array([[-1e-30]]), np.array([[0.25]]))
    np.testing.assert_allclose(dx, [[0.25]], rtol=1e-15)


def test_q4_logistic_gradient_at_zero():
    x = np.zeros((1, 3))
    # signed: z = (y + 1)/2 = [0, 1, 0.5]; dx = -z / 3 = [0, -1/3, -1/6]; out = log 2
    out, dx = _fb(nl.LogisticLoss(), x, np.array([[-1.0, 1.0, 0.0]]))
    np.testing.assert_allclose(out, [LN2], rtol=1e-15)
    np.testing.assert_allclose(dx, [[0.0, -1 / 3, -1 / 6]], rtol=1e-15, atol=0)
    # binary: z = y = [0.25, 1, 0]; dx = -z / 3
    _, dx = _fb(nl.LogisticLoss(label_format="binary"), x, np.array([[0.25, 1.0, 0.0]]))
    np.testing.assert_allclose(dx, [[-0.25 / 3, -1 / 3, 0.0]], rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------------------------
# Item 5: L1 gradient 0 at equality; Hinge / SquaredHinge 0 at the kink; Huber continuous at rho
# ---------------------------------------------------------------------------------------------
def test_q5_l1_gradient_zero_at_equality():
    x = np.array([[1.0, 2.0, 3.0]])
    y = np.array([[1.0, 0.0, 5.0]])
    # l = [0, 2, 2] -> out = 4/3; dx = sign(x - y)/3 = [0, 1/3, -1/3]
    out, dx = _fb(nl.L1Loss(), x, y)
    np.testing.assert_allclose(out, [4 / 3], rtol=1e-15)
    np.testing.assert_array_equal(dx, [[0.0, 1 / 3, -1 / 3]])


def test_q5_hinge_gradient_zero_at_kink():
    x = np.array([[1.0, 0.5, 2.0]])
    y = np.array([[1.0, 1.0, -1.0]])
    # v = 1 - x*y = [0, 0.5, 3]; out = (0 + 0.5 + 3)/3; dx = -y*[v > 0]/3 = [0, -1/3, 1/3]
    out, dx = _fb(nl.HingeLoss(), x, y)
    np.testing.assert_allclose(out, [3.5 / 3], rtol=1e-15)
    np.testing.assert_array_equal(dx, [[0.0, -1 / 3, 1 / 3]])
    # margin 2: v = 2 - x*y = [1, 1.5, 4] -> out = 6.5/3, dx = -y/3
    out, dx = _fb(nl.HingeLoss(margin=2), x, y)
    np.testing.assert_allclose(out, [6.5 / 3], rtol=1e-15)
    np.testing.assert_allclose(dx, [[-1 / 3, -1 / 3, 1 / 3]], rtol=1e-15)


def test_q5_squared_hinge_gradient_zero_at_kink():
    x = np.array([[1.0, 0.5, 2.0, 3.0]])
    y = np.array([[1.0, 1.0, -1.0, 1.0]])
    # v = 1 - x*y = [0, 0.5, 3, -2]; relu(v)^2 = [0, 0.25, 9, 0] -> out = 9.25/4
    # dx = -2 y relu(v) / 4 = [0, -0.25, 1.5, 0]
    out, dx = _fb(nl.SquaredHingeLoss(), x, y)
    np.testing.assert_allclose(out, [9.25 / 4], rtol=1e-15)
    np.testing.assert_allclose(dx, [[0.0, -0.25, 1.5, 0.0]], rtol=1e-15, atol=0)


def test_q5_huber_continuous_at_rho():
    x = np.array([[0.5, -0.5, 0.25, 2.0, 1.0]])
    y = np.array([[0.0, 0.0, 0.0, 0.0, 1.0]])
    # rho = 0.5, a = |y - x| = [0.5, 0.5, 0.25, 2, 0]
    # a > rho? [no, no, no, yes, no]: l = [(0.5/0.5)*0.25, 0.25, 0.0625, 2 - 0.25, 0]
    #   = [0.25, 0.25, 0.0625, 1.75, 0] (at a == rho both branches give 0.25) -> out = 2.3125/5
    # dx = sign(x - y) * min(a/rho, 1) / 5 = [1, -1, 0.5, 1, 0] / 5
    out, dx = _fb(nl.HuberLoss(rho=0.5), x, y)
    np.testing.assert_allclose(out, [2.3125 / 5], rtol=1e-15)
    np.testing.assert_allclose(dx, [[0.2, -0.2, 0.1, 0.2, 0.0]], rtol=1e-15, atol=0)
    # continuity: just below / above the threshold the value and slope match
    for d in (0.5 - 1e-9, 0.5 + 1e-9):
        out, dx = _fb(nl.HuberLoss(rho=0.5), np.array([[d]]), np.array([[0.0]]))
        np.testing.assert_allclose(out, [0.25], rtol=1e-8)
        np.testing.assert_allclose(dx, [[1.0]], rtol=1e-8)


# ---------------------------------------------------------------------------------------------
# Item 8: KLDivLoss sums over non-batch axes; label broadcast, not reshaped; eps 1e-12
# ---------------------------------------------------------------------------------------------
def test_q8_kldiv_sums():
    x = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    y = np.array([[0.5, 0.5], [0.5, 0.5]])
    # row 0: 0.5*(log(.5 + 1e-12) - log .25) + 0.5*(log(.5 + 1e-12) - log .75)
    #      = log(.5 + 1e-12) - 0.5*log .25 - 0.5*log .75 (~ 0.5*log 2 + 0.5*log(2/3) + 2e-12)
    # row 1: y*(log(y + 1e-12) - log y) = 2 * 0.5 * log1p(2e-12) ~ 2e-12 (a sum, not a mean)
    out = nl.KLDivLoss()(x, y)
    expected0 = math.log(0.5 + 1e-12) - 0.5 * math.log(0.25) - 0.5 * math.log(0.75)
    np.testing.assert_allclose(out[0], expected0, rtol=1e-13)
    np.testing.assert_allclose(out[1], math.log1p(2e-12), rtol=1e-3)
    # summing: 4 copies of the same column give 4x, not the same value
    x4 = np.zeros((1, 4))
    y4 = np.full((1, 4), 0.5)
    # each element: 0.5*(log 0.5 - 0) -> sum = 2 log 0.5 = -2 log 2
    np.testing.assert_allclose(nl.KLDivLoss()(x4, y4), [-2 * LN2], rtol=1e-11)


def test_q8_kldiv_label_broadcast_not_reshaped():
    x = np.array([[0.0, -1.0], [-2.0, -3.0]])
    y = np.array([0.25, 0.75])  # (2,) broadcasts along rows (right-aligned), it is NOT reshaped
    c = 0.25 * math.log(0.25 + 1e-12) + 0.75 * math.log(0.75 + 1e-12)
    # row b: c - (0.25*x[b,0] + 0.75*x[b,1]): row 0: c + 0.75; row 1: c + 0.5 + 2.25
    out, dx = _fb(nl.KLDivLoss(), x, y)
    np.testing.assert_allclose(out, [c + 0.75, c + 2.75], rtol=1e-12)
    # dx = -g * y (no 1/K): [[-0.25, -0.75], [-0.25, -0.75]]
    np.testing.assert_allclose(dx, [[-0.25, -0.75], [-0.25, -0.75]], rtol=1e-15)
    # a label with the same number of elements but not broadcastable is an error
    with pytest.raises(ValueError):
        nl.KLDivLoss()(x, np.array([0.1, 0.2, 0.3, 0.4]))


def test_q8_kldiv_label_grows_and_gradient_unbroadcast():
    x = np.array([[-1.0], [-2.0]])  # (2, 1)
    y = np.array([0.5, 0.25, 0.25])  # W has shape (2, 3)
    c = 0.5 * math.log(0.5 + 1e-12) + 2 * 0.25 * math.log(0.25 + 1e-12)
    # row b: c - x_b * (0.5 + 0.25 + 0.25) = c - x_b
    out, dx = _fb(nl.KLDivLoss(), x, y, out_grad=np.array([2.0, 3.0]))
    np.testing.assert_allclose(out, [c + 1.0, c + 2.0], rtol=1e-12)
    # dx[b] = sum_j -g_b * y_j = -g_b
    np.testing.assert_allclose(dx, [[-2.0], [-3.0]], rtol=1e-15)


def test_q8_kldiv_epsilon():
    x = np.zeros((1, 2))
    y = np.array([[1e-12, 0.5]])
    # l = y*log(y + 1e-12): 1e-12*log(2e-12) + 0.5*log(0.5 + 1e-12)  (without eps: 1e-12*log(1e-12))
    expected = 1e-12 * math.log(2e-12) + 0.5 * math.log(0.5 + 1e-12)
    np.testing.assert_allclose(nl.KLDivLoss()(x, y), [expected], rtol=1e-14)
    # the first term alone, isolated with sample_weight [1, 0]
    out = nl.KLDivLoss()(x, y, np.array([1.0, 0.0]))
    np.testing.assert_allclose(out, [1e-12 * math.log(2e-12)], rtol=1e-10)


def test_q8_kldiv_zero_label_contributes_zero():
    x = np.array([[-50.0, -1.0]])
    y = np.array([[0.0, 1.0]])
    # y = 0: 0 * (log 1e-12 + 50) = 0 exactly; y = 1: log(1 + 1e-12) + 1 -> out = 1 + log1p(1e-12)
    out, dx = _fb(nl.KLDivLoss(), x, y)
    np.testing.assert_allclose(out, [1.0 + math.log1p(1e-12)], rtol=1e-15)
    np.testing.assert_array_equal(dx, [[0.0, -1.0]])
    out = nl.KLDivLoss()(x, y, np.array([1.0, 0.0]))
    assert out[0] == 0.0


# ---------------------------------------------------------------------------------------------
# Item 10: PoissonNLL full mean, shape (1,); epsilon a call argument; compute_full NaN at t == 0
# ---------------------------------------------------------------------------------------------
def test_q10_poisson_full_mean_shape_1():
    x = np.array([[0.0, 1.0], [2.0, 0.0]])
    t = np.array([[1.0, 2.0], [0.0, 3.0]])
    # l = exp(x) - t*x = [1, e - 2, e^2, 1] -> mean = (e + e^2)/4, shape (1,)
    out = nl.PoissonNLLLoss()(x, t)
    assert out.shape == (1,)
    np.testing.assert_allclose(out, [(math.e + math.e**2) / 4], rtol=1e-14)
    # batch_axis is ignored
    out1 = nl.PoissonNLLLoss(batch_axis=1)(x, t)
    np.testing.assert_array_equal(out1, out)
    # gradient: (g/M)(exp(x) - t) with g = [2], M = 4
    _, dx = _fb(nl.PoissonNLLLoss(), x, t, out_grad=np.array([2.0]))
    np.testing.assert_allclose(dx, 0.5 * (np.exp(x) - t), rtol=1e-14)


def test_q10_poisson_mean_over_grown_shape():
    x = np.zeros((2, 1))
    t = np.zeros((2, 1))
    sw = np.array([1.0, 2.0, 3.0])
    # l = exp(0) = 1; W = sw broadcast to (2, 3); mean over M = 6 elements = (1+2+3)*2/6 = 2
    out, dx = _fb(nl.PoissonNLLLoss(), x, t, sw)
    np.testing.assert_allclose(out, [2.0], rtol=1e-15)
    # dx[b] = sum_j (1/6) sw_j * (exp(0) - 0) = 1
    np.testing.assert_allclose(dx, [[1.0], [1.0]], rtol=1e-15)


def test_q10_poisson_epsilon_is_a_call_argument():
    x = np.array([[0.0]])
    t = np.array([[1.0]])
    loss = nl.PoissonNLLLoss(from_logits=False)
    # l = x - t*log(x + eps) = -log(eps): eps = 0.5 -> log 2; default 1e-08 -> -log(1e-8)
    np.testing.assert_allclose(loss(x, t, None, 0.5), [LN2], rtol=1e-15)
    np.testing.assert_allclose(loss(x, t, epsilon=0.5), [LN2], rtol=1e-15)
    np.testing.assert_allclose(loss(x, t), [-math.log(1e-8)], rtol=1e-15)
    # dx = 1 - t/(x + eps) = 1 - 2 = -1 for eps = 0.5
    _, dx = _fb(loss, x, t, None, 0.5)
    np.testing.assert_allclose(dx, [[-1.0]], rtol=1e-15)


def test_q10_poisson_compute_full():
    x = np.zeros((1, 3))
    t = np.array([[0.5, 1.0, 2.0]])
    # from_logits: l = exp(0) - t*0 = 1; Stirling term only where t > 1:
    # t = 2: 2 log 2 - 2 + 0.5 log(4 pi)
    stirling = 2 * LN2 - 2 + 0.5 * math.log(4 * math.pi)
    out = nl.PoissonNLLLoss(compute_full=True)(x, t)
    np.testing.assert_allclose(out, [(3 + stirling) / 3], rtol=1e-14)
    np.testing.assert_allclose(nl.PoissonNLLLoss(compute_full=False)(x, t), [1.0], rtol=1e-15)


@pytest.mark.parametrize("from_logits", [True, False])
def test_q10_poisson_compute_full_nan_at_zero_target_and_gradient(from_logits):
    x = np.array([[0.5, 1.5]])
    t = np.array([[0.0, 3.0]])
    head = np.array([1.5])
    full = nl.PoissonNLLLoss(from_logits=from_logits, compute_full=True)
    part = nl.PoissonNLLLoss(from_logits=from_logits, compute_full=False)
    # [t > 1] * (t log t - ...) at t = 0 is 0 * nan = nan
    out, dx_full = _fb(full, x, t, out_grad=head)
    assert np.isnan(out).all() and out.shape == (1,)
    _, dx_part = _fb(part, x, t, out_grad=head)
    np.testing.assert_array_equal(dx_full, dx_part)
    assert np.isfinite(dx_full).all()
    # negative target: NaN too
    assert np.isnan(full(x, np.array([[-1.0, 3.0]]))).all()
    # expected gradient: (g/M) * (exp(x) - t) or (g/M) * (1 - t/(x + 1e-8))
    d = np.exp(x) - t if from_logits else 1 - t / (x + 1e-8)
    np.testing.assert_allclose(dx_full, head[0] / 2 * d, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Item 14: positional order as gluon; keywords accepted; None skips an optional input
# ---------------------------------------------------------------------------------------------
def test_q14_positional_keyword_and_none():
    x = np.array([[0.5, -1.0], [2.0, 0.0]])
    z = np.array([[1.0, 0.0], [0.0, 1.0]])
    pw = np.array([2.0, 0.5])
    sw = np.array([[1.0], [2.0]])
    loss = nl.SigmoidBCELoss()
    ref = loss(x, z, None, pw)
    np.testing.assert_array_equal(loss(x, z, pos_weight=pw), ref)
    np.testing.assert_array_equal(loss(pred=x, label=z, pos_weight=pw), ref)
    np.testing.assert_array_equal(loss(x, label=z, sample_weight=None, pos_weight=pw), ref)
    # and the pos_weight did something: l at x=0.5, z=1 with lw = 2 vs without
    assert not np.allclose(ref, loss(x, z))
    ref_sw = loss(x, z, sw, pw)
    np.testing.assert_array_equal(loss(x, z, sample_weight=sw, pos_weight=pw), ref_sw)
    # row 1 is scaled by 2
    np.testing.assert_allclose(ref_sw, ref * [1.0, 2.0], rtol=1e-15)
    # Poisson names its label "target"
    p = nl.PoissonNLLLoss()
    np.testing.assert_array_equal(p(x, target=np.abs(z)), p(x, np.abs(z)))
    # gradients by keyword
    _, g1 = _fb(loss, x, z, None, pw)
    _, g2 = _fb(loss, pred=x, label=z, pos_weight=pw)
    np.testing.assert_array_equal(g1, g2)


def test_q14_bad_calls():
    x = np.ones((2, 2))
    with pytest.raises(TypeError):
        nl.L1Loss()(x, x, foo=x)  # unknown keyword input
    with pytest.raises(TypeError):
        nl.L1Loss()(x, x, label=x)  # the same input twice
    with pytest.raises(TypeError):
        nl.L1Loss()(x)  # label missing
    with pytest.raises(TypeError):
        nl.L1Loss()(x, None)
    with pytest.raises(TypeError):
        nl.L1Loss()(x, x, None, x)  # too many positional inputs (no pos_weight on L1)
    with pytest.raises(TypeError):
        nl.L1Loss().forward_backward(x, x, bogus=1)


# ---------------------------------------------------------------------------------------------
# Item 15: no label-value validation
# ---------------------------------------------------------------------------------------------
def test_q15_no_label_validation():
    x = np.array([[1.0]])
    # BCE label 2: relu(1) - 1*2 + log1p(exp(-1)) = -1 + log1p(e^-1); dx = sigma(1) - 2
    out, dx = _fb(nl.SigmoidBCELoss(), x, np.array([[2.0]]))
    np.testing.assert_allclose(out, [-1 + math.log1p(math.exp(-1))], rtol=1e-14)
    np.testing.assert_allclose(dx, [[1 / (1 + math.exp(-1)) - 2]], rtol=1e-14)
    # BCE label -1: 1 + 1 + log1p(e^-1)
    np.testing.assert_allclose(nl.SigmoidBCELoss()(x, np.array([[-1.0]])), [2 + math.log1p(math.exp(-1))], rtol=1e-14)
    # Hinge label 3: relu(1 - 0.1*3) = 0.7; dx = -3
    out, dx = _fb(nl.HingeLoss(), np.array([[0.1]]), np.array([[3.0]]))
    np.testing.assert_allclose(out, [0.7], rtol=1e-14)
    np.testing.assert_allclose(dx, [[-3.0]], rtol=1e-15)
    # SquaredHinge label 0.5: relu(1 - 1*0.5)^2 = 0.25; dx = -2*0.5*0.5 = -0.5
    out, dx = _fb(nl.SquaredHingeLoss(), x, np.array([[0.5]]))
    np.testing.assert_allclose(out, [0.25], rtol=1e-15)
    np.testing.assert_allclose(dx, [[-0.5]], rtol=1e-15)
    # Logistic signed label 0 -> z = 0.5: at x = 1: 1 - 0.5 + log1p(e^-1); dx = sigma(1) - 0.5
    out, dx = _fb(nl.LogisticLoss(), x, np.array([[0.0]]))
    np.testing.assert_allclose(out, [0.5 + math.log1p(math.exp(-1))], rtol=1e-14)
    np.testing.assert_allclose(dx, [[1 / (1 + math.exp(-1)) - 0.5]], rtol=1e-14)
    # Logistic signed label 3 -> z = 2
    out = nl.LogisticLoss()(x, np.array([[3.0]]))
    np.testing.assert_allclose(out, [-1 + math.log1p(math.exp(-1))], rtol=1e-14)
    # BCE from_sigmoid with pred outside (0, 1): log of a negative number -> NaN, no error
    with np.errstate(all="ignore"):
        out = nl.SigmoidBCELoss(from_sigmoid=True)(np.array([[1.5]]), np.array([[1.0]]))
    assert np.isnan(out).all()


# ---------------------------------------------------------------------------------------------
# Call-time errors (docs/semantics.rst sections 0, 1, 8, 11)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0, -1.0])
def test_huber_rho_not_positive_raises_at_construction(rho):
    # Deliberate difference: MXNet raises ZeroDivisionError at call for 0 and computes a meaningless
    # loss for a negative rho (every |d| > rho).
    with pytest.raises(ValueError, match="rho must be > 0"):
        nl.HuberLoss(rho=rho)


def test_logistic_label_format_message():
    with pytest.raises(ValueError) as err:
        nl.LogisticLoss(label_format="x")
    assert str(err.value) == "label_format can only be signed or binary, recieved x."


@pytest.mark.parametrize("name", LOSS_IDS)
def test_mismatched_label_size(name):
    ctor, x, _ = LOSSES[name]
    y = np.zeros((2, 2))
    with pytest.raises(ValueError) as err:
        ctor()(x, y)
    assert "(2, 2)" in str(err.value) and "(2, 3)" in str(err.value)


@pytest.mark.parametrize("name", LOSS_IDS)
@pytest.mark.parametrize("which", ["pred", "label", "sample_weight"])
@pytest.mark.parametrize("kind", [np.complex128, object])
def test_bad_dtype_names_the_argument(name, which, kind):
    ctor, x, y = LOSSES[name]
    args = {"pred": x, "label": y, "sample_weight": np.ones(3)}
    args[which] = args[which].astype(kind)
    with pytest.raises(TypeError) as err:
        ctor()(*args.values())
    label_name = "target" if name == "Poisson" else "label"
    assert {"pred": "pred", "label": label_name, "sample_weight": "sample_weight"}[which] in str(err.value)


def test_bad_pos_weight_dtype_names_it():
    with pytest.raises(TypeError, match="pos_weight"):
        nl.SigmoidBCELoss()(_X, _Y01, None, np.ones(3, np.complex64))


@pytest.mark.parametrize("name", [n for n in LOSS_IDS if n != "Poisson"])
@pytest.mark.parametrize("axis", [2, -3, 5])
def test_batch_axis_out_of_range(name, axis):
    ctor, x, y = LOSSES[name]
    with pytest.raises(ValueError):
        ctor(batch_axis=axis)(x, y)


@pytest.mark.parametrize("name", LOSS_IDS)
@pytest.mark.parametrize("swshape", [(2,), (3, 3), (4, 1, 2)])
def test_sample_weight_not_broadcastable(name, swshape):
    ctor, x, y = LOSSES[name]
    with pytest.raises(ValueError):
        ctor()(x, y, np.ones(swshape))


def test_pos_weight_not_broadcastable():
    with pytest.raises(ValueError):
        nl.SigmoidBCELoss()(_X, _Y01, None, np.ones(2))


@pytest.mark.parametrize("name", LOSS_IDS)
def test_bad_buffers(name):
    ctor, x, y = LOSSES[name]
    loss = ctor()
    n = 1 if name == "Poisson" else 2
    with pytest.raises((ValueError, TypeError)):
        loss(x, y, out=np.empty(n + 1))  # wrong shape
    with pytest.raises((ValueError, TypeError)):
        loss(x, y, out=np.empty(n, np.float32))  # wrong dtype
    with pytest.raises((ValueError, TypeError)):
        loss.forward_backward(x, y, grad_out=np.empty((3, 2)))
    with pytest.raises((ValueError, TypeError)):
        loss.forward_backward(x, y, grad_out=np.empty((2, 3), np.float32))
    with pytest.raises((ValueError, TypeError)):
        loss.backward(x, y, grad_out=np.empty((2, 4)))
    with pytest.raises((ValueError, TypeError)):
        loss.forward_backward(x, y, out_grad=np.ones(n + 2))  # head gradient of the wrong shape
    # the correct buffers work and receive the result
    out_buf, grad_buf = np.empty(n), np.empty((2, 3))
    out, (dx,) = loss.forward_backward(x, y, out=out_buf, grad_out=grad_buf)
    np.testing.assert_allclose(out_buf, loss(x, y), rtol=1e-14)
    np.testing.assert_allclose(grad_buf, loss.backward(x, y)[0], rtol=1e-14)
    np.testing.assert_array_equal(out, out_buf)
    np.testing.assert_array_equal(dx, grad_buf)


# ---------------------------------------------------------------------------------------------
# Empty inputs (docs/semantics.rst section 1)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LOSS_IDS)
def test_empty_batch(name):
    ctor, _, _ = LOSSES[name]
    x = np.zeros((0, 3))
    out, dx = _fb(ctor(), x, np.zeros((0, 3)))
    assert dx.shape == (0, 3)
    if name == "Poisson":
        # mean over all (zero) elements: 0/0 = NaN, the output keeps its shape (1,)
        assert out.shape == (1,) and np.isnan(out).all()
    else:
        assert out.shape == (0,)
    # batch axis in the middle
    if name != "Poisson":
        out, dx = _fb(ctor(batch_axis=1), np.zeros((2, 0, 3)), np.zeros((2, 0, 3)))
        assert out.shape == (0,) and dx.shape == (2, 0, 3)


@pytest.mark.parametrize("name", LOSS_IDS)
def test_empty_non_batch_extent(name):
    ctor, _, _ = LOSSES[name]
    out, dx = _fb(ctor(), np.zeros((2, 0)), np.zeros((2, 0)))
    assert dx.shape == (2, 0)
    if name == "KLDiv":
        np.testing.assert_array_equal(out, [0.0, 0.0])  # sum of nothing
    elif name == "Poisson":
        assert out.shape == (1,) and np.isnan(out).all()
    else:
        assert out.shape == (2,) and np.isnan(out).all()  # mean of nothing: 0/0


def test_empty_grown_by_sample_weight():
    # pred (2, 1), sample_weight (0,) -> W (2, 0): L1 mean NaN, KLDiv sum 0
    out = nl.L1Loss()(np.ones((2, 1)), np.zeros((2, 1)), np.ones(0))
    assert out.shape == (2,) and np.isnan(out).all()
    out, dx = _fb(nl.KLDivLoss(), np.ones((2, 1)), np.ones((2, 1)), np.ones(0))
    np.testing.assert_array_equal(out, [0.0, 0.0])
    np.testing.assert_array_equal(dx, np.zeros((2, 1)))


# ---------------------------------------------------------------------------------------------
# Dtypes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LOSS_IDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_result_dtype_follows_pred(name, dtype):
    ctor, x, y = LOSSES[name]
    xd = x.astype(dtype)
    loss = ctor()
    out = loss(xd, y)  # float64 label, cast to pred's dtype
    out2, (dx,) = loss.forward_backward(xd, y.astype(np.float32))
    (dx2,) = loss.backward(xd, y, out_grad=np.ones(out.shape, dtype))
    for a in (out, out2, dx, dx2):
        assert a.dtype == dtype
    ref = loss(x.astype(dtype).astype(np.float64), y.astype(dtype).astype(np.float64))
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-15}[dtype]
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=tol, atol=tol)


def test_float16_value():
    x = np.array([[1.0, 3.0]], np.float16)
    y = np.array([[0.0, 0.0]], np.float16)
    # L1: (1 + 3)/2 = 2; dx = [0.5, 0.5]
    out, dx = _fb(nl.L1Loss(), x, y)
    assert out.dtype == np.float16 and dx.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([2.0], np.float16))
    np.testing.assert_array_equal(dx, np.array([[0.5, 0.5]], np.float16))


@pytest.mark.parametrize("ldtype", [np.int8, np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_labels(ldtype):
    x = np.array([[0.5, -2.0], [1.5, 0.25]])
    z = np.array([[1, 0], [0, 1]])
    zl = z.astype(ldtype)
    for loss in (nl.SigmoidBCELoss(), nl.LogisticLoss(label_format="binary"), nl.L1Loss(), nl.PoissonNLLLoss()):
        out, (dx,) = loss.forward_backward(x, zl)
        ref, (rdx,) = loss.forward_backward(x, z.astype(np.float64))
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(dx, rdx)
        assert out.dtype == np.float64
    for f in (np.float32, np.float64):
        out = nl.L1Loss()(x.astype(f), zl)
        assert out.dtype == f
        # |1 - 0.5| + |0 + 2| = 2.5 -> 1.25; |0 - 1.5| + |1 - 0.25| = 2.25 -> 1.125
        np.testing.assert_allclose(out, [1.25, 1.125], rtol=1e-7)


@pytest.mark.parametrize("ldtype", [np.int8, np.int32, np.int64])
def test_signed_integer_labels_hinge(ldtype):
    x = np.array([[0.5, -2.0, 0.25]])
    y = np.array([[1, -1, -1]], ldtype)
    # v = 1 - x*y = [0.5, -1, 1.25]; hinge out = (0.5 + 0 + 1.25)/3; dx = -y*[v>0]/3 = [-1/3, 0, 1/3]
    out, dx = _fb(nl.HingeLoss(), x, y)
    np.testing.assert_allclose(out, [1.75 / 3], rtol=1e-15)
    np.testing.assert_allclose(dx, [[-1 / 3, 0.0, 1 / 3]], rtol=1e-15)
    # signed logistic with integer labels equals float labels
    np.testing.assert_array_equal(nl.LogisticLoss()(x, y), nl.LogisticLoss()(x, y.astype(np.float64)))
