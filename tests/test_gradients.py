"""Central finite differences of ``sum(out * head)`` against ``forward_backward``'s gradient.

float64, every implemented loss and parameter setting, weight None / a number, with and without
sample_weight (per row, elementwise, growing the weighted shape), batch_axis 0 and others. Inputs
are drawn away from the kinks (|x - y| for L1/Huber, |margin - x*y| for the hinges, x == 0 for the
logit losses), where the derivative is not defined by finite differences.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import numba_losses as nl

STEP = 1e-6
RTOL = 1e-6


def finite_difference(f, x, h=STEP):
    """Central difference gradient of the scalar function ``f`` at ``x``."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp = x.copy()
        xm = x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def _away(rng, draw, bad, tries=1000):
    """Redraw the entries of ``draw()`` for which ``bad(values)`` is true."""
    v = draw()
    for _ in range(tries):
        mask = bad(v)
        if not mask.any():
            return v
        v = np.where(mask, draw(), v)
    raise AssertionError("could not draw values away from the kink")


# --- input generators: (rng, xshape) -> (pred, label) -------------------------------------------
def gen_regression(rng, shape):
    x = rng.uniform(-2, 2, shape)
    d = rng.uniform(0.05, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    return x, x + d


def gen_huber(rho):
    def gen(rng, shape):
        x = rng.uniform(-2, 2, shape)
        mag = _away(rng, lambda: rng.uniform(0.05, 3.0, shape), lambda m: np.abs(m - rho) < 1e-2)
        return x, x + mag * rng.choice([-1.0, 1.0], shape)

    return gen


def gen_hinge(margin):
    def gen(rng, shape):
        y = rng.choice([-1.0, 1.0], shape)
        x = _away(rng, lambda: rng.uniform(-2.5, 2.5, shape), lambda v: np.abs(margin - v * y) < 1e-2)
        return x, y

    return gen


def gen_logits(rng, shape):
    x = _away(rng, lambda: rng.uniform(-4, 4, shape), lambda v: np.abs(v) < 1e-2)
    return x, rng.uniform(0, 1, shape)


def gen_probs(rng, shape):
    return rng.uniform(0.05, 0.95, shape), rng.uniform(0, 1, shape)


def gen_signed(rng, shape):
    x = _away(rng, lambda: rng.uniform(-4, 4, shape), lambda v: np.abs(v) < 1e-2)
    return x, rng.choice([-1.0, 1.0], shape)


def gen_poisson(from_logits):
    def gen(rng, shape):
        x = rng.uniform(-1.5, 1.5, shape) if from_logits else rng.uniform(0.5, 3.0, shape)
        t = np.where(rng.random(shape) < 0.5, rng.integers(1, 5, shape).astype(float), rng.uniform(0.1, 4.0, shape))
        return x, t

    return gen


def gen_kldiv(rng, shape):
    return rng.uniform(-3.0, 0.0, shape), None  # label drawn with its own (broadcast) shape


# --- the table ------------------------------------------------------------------------------------
# (id, constructor, constructor kwargs, generator, extras) with extras: "pw" (pos_weight),
# "eps" (Poisson call-time epsilon), "kl" (broadcast label)
LOSSES = [
    ("L2", nl.L2Loss, {}, gen_regression, ()),
    ("L1", nl.L1Loss, {}, gen_regression, ()),
    ("Huber-rho0.5", nl.HuberLoss, {"rho": 0.5}, gen_huber(0.5), ()),
    ("Huber-rho1", nl.HuberLoss, {}, gen_huber(1.0), ()),
    ("Huber-rho2", nl.HuberLoss, {"rho": 2.0}, gen_huber(2.0), ()),
    ("Hinge-m1", nl.HingeLoss, {}, gen_hinge(1.0), ()),
    ("Hinge-m0.5", nl.HingeLoss, {"margin": 0.5}, gen_hinge(0.5), ()),
    ("SquaredHinge-m1", nl.SquaredHingeLoss, {}, gen_hinge(1.0), ()),
    ("SquaredHinge-m2", nl.SquaredHingeLoss, {"margin": 2.0}, gen_hinge(2.0), ()),
    ("BCE-logits", nl.SigmoidBinaryCrossEntropyLoss, {}, gen_logits, ()),
    ("BCE-logits-pw", nl.SigmoidBinaryCrossEntropyLoss, {}, gen_logits, ("pw",)),
    ("BCE-sigmoid", nl.SigmoidBCELoss, {"from_sigmoid": True}, gen_probs, ()),
    ("BCE-sigmoid-pw", nl.SigmoidBCELoss, {"from_sigmoid": True}, gen_probs, ("pw",)),
    ("Logistic-signed", nl.LogisticLoss, {}, gen_signed, ()),
    ("Logistic-binary", nl.LogisticLoss, {"label_format": "binary"}, gen_logits, ()),
    ("Poisson-logits", nl.PoissonNLLLoss, {}, gen_poisson(True), ()),
    ("Poisson-logits-full", nl.PoissonNLLLoss, {"compute_full": True}, gen_poisson(True), ()),
    ("Poisson-prob", nl.PoissonNLLLoss, {"from_logits": False}, gen_poisson(False), ("eps",)),
    ("Poisson-prob-full", nl.PoissonNLLLoss, {"from_logits": False, "compute_full": True}, gen_poisson(False), ()),
    ("KLDiv", nl.KLDivLoss, {}, gen_kldiv, ("kl",)),
]

# (id, pred shape, batch_axis, sample_weight shape or None)
LAYOUTS = [
    ("2d", (3, 4), 0, None),
    ("2d-sw-row", (3, 4), 0, (3, 1)),
    ("3d-axis1-sw-elem", (2, 3, 2), 1, (3, 2)),
    ("grow-sw", (3, 1), 0, (3,)),
    ("3d-axis-1-sw", (2, 3, 2), -1, (2, 1, 1)),
    ("1d-sw", (4,), 0, (4,)),
]

WEIGHTS = [None, 1.7]


def _vector_shape(xshape):
    """A last-axis vector that broadcasts against ``xshape`` (and grows it when the last dim is 1)."""
    return (xshape[-1],) if xshape[-1] > 1 else (3,)


@pytest.mark.parametrize("weight", WEIGHTS, ids=["w-none", "w-1.7"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay[0] for lay in LAYOUTS])
@pytest.mark.parametrize("spec", LOSSES, ids=[s[0] for s in LOSSES])
def test_gradient_matches_finite_differences(spec, layout, weight):
    name, ctor, kwargs, gen, extras = spec
    _, xshape, batch_axis, swshape = layout
    seed = zlib.crc32(f"{name}/{layout[0]}/{weight}".encode())  # reproducible across runs
    rng = np.random.default_rng(seed)
    x, y = gen(rng, xshape)
    if "kl" in extras:
        y = rng.uniform(0.05, 1.0, _vector_shape(xshape))
    kw = dict(kwargs)
    if weight is not None:
        kw["weight"] = weight
    loss = ctor(batch_axis=batch_axis, **kw)

    call = {}
    if swshape is not None:
        call["sample_weight"] = rng.uniform(0.2, 2.0, swshape) * rng.choice([-1.0, 1.0], swshape)
    if "pw" in extras:
        call["pos_weight"] = rng.uniform(0.3, 3.0, _vector_shape(xshape))
    if "eps" in extras:
        call["epsilon"] = 0.25

    out = loss(x, y, **call)
    head = rng.uniform(0.5, 1.5, out.shape) * rng.choice([-1.0, 1.0], out.shape)

    def f(xv):
        return float(np.sum(loss(xv, y, **call) * head))

    out2, (dx,) = loss.forward_backward(x, y, out_grad=head, **call)
    np.testing.assert_array_equal(out2, out)
    assert dx.shape == x.shape and dx.dtype == np.float64
    fd = finite_difference(f, x)
    assert np.isfinite(fd).all()
    scale = max(1.0, float(np.max(np.abs(fd))))
    np.testing.assert_allclose(dx, fd, rtol=RTOL, atol=1e-7 * scale)
    (dx_b,) = loss.backward(x, y, out_grad=head, **call)
    np.testing.assert_allclose(dx_b, dx, rtol=1e-14, atol=0)


def test_finite_difference_helper():
    """The helper itself: d/dx sum(x^3 * h) = 3 x^2 h."""
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    h = np.array([[1.0, 2.0], [-1.0, 0.5]])
    np.testing.assert_allclose(finite_difference(lambda v: float(np.sum(v**3 * h)), x), 3 * x**2 * h, rtol=1e-8)
