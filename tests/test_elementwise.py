"""Hypothesis property tests of the elementwise losses against a NumPy transcription of docs/semantics.rst.

The reference below (loss terms in ``tests/reference/elementwise.py``) is written from docs/semantics.rst
sections 0-4, 6, 8-11 and 13 alone (it shares no code with the package): one ``(value, derivative)``
pair per loss term, MXNet's weighting ``loss * sw * w``, the reduction over every axis but
``batch_axis`` (a sum for KLDivLoss, a mean over everything for PoissonNLLLoss), and the gradient
``(g[b]/K) * w * sw * dterm`` summed back to ``pred``'s shape over the axes broadcasting added.

Random problems: pred of 1 to 4 dimensions (each 1..6), labels reshaped (same size, any shape) or
broadcast (KLDivLoss), ``pos_weight`` / ``sample_weight`` of any shape that broadcasts, including
ones that grow the weighted tensor, batch axes counted from either end, float32 and float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numba_losses as nl
from tests.reference.elementwise import (
    term_bce,
    term_hinge,
    term_huber,
    term_kldiv,
    term_l1,
    term_l2,
    term_logistic,
    term_poisson,
    term_squared_hinge,
)

# derandomize: the same examples every run, so the kernel specialisations they need (dtype, layout,
# read-only flags) are compiled once and then come from the on-disk cache.
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(SETTINGS, max_examples=15)

FLOAT_DTYPES = (np.float32, np.float64)


# ---------------------------------------------------------------------------------------------
# Input value generators (rng, shape, params) -> float64 array
# ---------------------------------------------------------------------------------------------
def _ties(rng, x, y, frac=0.15):
    """Copy some pred values into the label so that x == y occurs."""
    mask = rng.random(x.shape) < frac
    return np.where(mask, x, y)


def gen_regression(rng, xshape, params):
    x = rng.uniform(-3, 3, xshape)
    return x, _ties(rng, x, rng.uniform(-3, 3, xshape))


def gen_huber(rng, xshape, params):
    x = rng.uniform(-3, 3, xshape)
    y = _ties(rng, x, rng.uniform(-3, 3, xshape))
    # some |y - x| == rho exactly (y = x + rho with x a multiple of 1/4 and rho dyadic)
    mask = rng.random(xshape) < 0.1
    x = np.where(mask, np.round(x * 4) / 4, x)
    y = np.where(mask, x + params["rho"], y)
    return x, y


def gen_hinge(rng, xshape, params):
    x = rng.uniform(-3, 3, xshape)
    y = rng.choice([-1.0, 1.0], xshape)
    odd = rng.random(xshape) < 0.15  # labels are not validated
    y = np.where(odd, rng.uniform(-2, 2, xshape), y)
    kink = rng.random(xshape) < 0.1  # margin - x*y == 0 exactly (dyadic margins)
    x = np.where(kink, params["margin"] * np.where(y >= 0, 1.0, -1.0), x)
    y = np.where(kink, np.where(y >= 0, 1.0, -1.0), y)
    return x, y


def gen_bce(rng, xshape, params):
    if params["from_sigmoid"]:
        x = rng.uniform(0.02, 0.98, xshape)
    else:
        x = rng.uniform(-6, 6, xshape)
        x = np.where(rng.random(xshape) < 0.15, 0.0, x)
    z = np.where(rng.random(xshape) < 0.5, rng.integers(0, 2, xshape).astype(float), rng.uniform(0, 1, xshape))
    return x, z


def gen_logistic(rng, xshape, params):
    x = rng.uniform(-6, 6, xshape)
    x = np.where(rng.random(xshape) < 0.15, 0.0, x)
    if params["label_format"] == "signed":
        y = rng.choice([-1.0, 1.0, 0.0], xshape, p=[0.45, 0.45, 0.1])
    else:
        y = np.where(rng.random(xshape) < 0.7, rng.integers(0, 2, xshape).astype(float), rng.uniform(0, 1, xshape))
    return x, y


def gen_poisson(rng, xshape, params):
    x = rng.uniform(-2, 2, xshape) if params["from_logits"] else rng.uniform(0.1, 4, xshape)
    t = np.where(rng.random(xshape) < 0.6, rng.integers(0, 6, xshape).astype(float), rng.uniform(0, 5, xshape))
    if params["compute_full"] and rng.random() < 0.7:
        t = np.where(t == 0, 0.5, t)  # keep most outputs finite (t == 0 gives NaN by design)
    return x, t


def gen_kldiv_pred(rng, xshape, params):
    return rng.uniform(-4, 0.5, xshape)


def gen_kldiv_label(rng, yshape):
    y = rng.uniform(0, 1, yshape)
    return np.where(rng.random(yshape) < 0.2, 0.0, y)


# ---------------------------------------------------------------------------------------------
# The table of losses and parameter settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    cls: Any
    params: dict
    term: Callable
    gen: Callable
    names: tuple = ("pred", "label", "sample_weight")
    reduce: str = "mean"  # "mean", "sum" (KLDiv) or "all" (PoissonNLL)
    broadcast_label: bool = False
    aux: str | None = None  # name of the optional auxiliary array input (pos_weight)
    weight_half: bool = False  # L2Loss weights with w/2 and rejects weight=None
    ctor: dict = field(default_factory=dict)

    def make(self, weight, batch_axis):
        kw = dict(self.ctor)
        kw["batch_axis"] = batch_axis
        if not (self.weight_half and weight is _DEFAULT):
            kw["weight"] = weight
        return self.cls(**kw)


_DEFAULT = object()


def _cases():
    out = [
        Case("L2", nl.L2Loss, {}, term_l2, gen_regression, weight_half=True),
        Case("L1", nl.L1Loss, {}, term_l1, gen_regression),
    ]
    for rho in (1, 0.5, 2.5):
        out.append(Case(f"Huber-rho{rho}", nl.HuberLoss, {"rho": rho}, term_huber, gen_huber, ctor={"rho": rho}))
    for margin in (1, 0.5, 2):
        out.append(
            Case(f"Hinge-m{margin}", nl.HingeLoss, {"margin": margin}, term_hinge, gen_hinge, ctor={"margin": margin})
        )
        out.append(
            Case(
                f"SquaredHinge-m{margin}",
                nl.SquaredHingeLoss,
                {"margin": margin},
                term_squared_hinge,
                gen_hinge,
                ctor={"margin": margin},
            )
        )
    for fs in (False, True):
        for pw in (False, True):
            cls = nl.SigmoidBCELoss if pw else nl.SigmoidBinaryCrossEntropyLoss
            out.append(
                Case(
                    f"BCE-sig{int(fs)}-pw{int(pw)}",
                    cls,
                    {"from_sigmoid": fs},
                    term_bce,
                    gen_bce,
                    names=("pred", "label", "sample_weight", "pos_weight"),
                    aux="pos_weight" if pw else None,
                    ctor={"from_sigmoid": fs},
                )
            )
    for fmt in ("signed", "binary"):
        out.append(
            Case(
                f"Logistic-{fmt}",
                nl.LogisticLoss,
                {"label_format": fmt},
                term_logistic,
                gen_logistic,
                ctor={"label_format": fmt},
            )
        )
    for fl in (True, False):
        for full in (False, True):
            out.append(
                Case(
                    f"Poisson-logits{int(fl)}-full{int(full)}",
                    nl.PoissonNLLLoss,
                    {"from_logits": fl, "compute_full": full},
                    term_poisson,
                    gen_poisson,
                    names=("pred", "target", "sample_weight", "epsilon"),
                    reduce="all",
                    ctor={"from_logits": fl, "compute_full": full},
                )
            )
    out.append(Case("KLDiv", nl.KLDivLoss, {}, term_kldiv, None, reduce="sum", broadcast_label=True))
    return out


CASES = _cases()
CASE_IDS = [c.id for c in CASES]


# ---------------------------------------------------------------------------------------------
# Problem generation
# ---------------------------------------------------------------------------------------------
MAX_NDIM = 4


@st.composite
def broadcastable_shape(draw, base):
    """A shape that broadcasts against ``base`` (may add leading dims or grow size-1 dims)."""
    room = MAX_NDIM - len(base)
    extra = draw(st.integers(0, room)) if room else 0
    if extra == 0:
        keep = draw(st.integers(0, len(base)))  # right-aligned: fewer dims is fine
        tail = base[len(base) - keep :]
    else:
        tail = base
    lead = tuple(draw(st.integers(1, 3)) for _ in range(extra))
    dims = []
    for n in tail:
        if n == 1:
            dims.append(draw(st.sampled_from([1, 1, 2, 3])))
        else:
            dims.append(draw(st.sampled_from([1, n])))
    return lead + tuple(dims)


@st.composite
def label_shape(draw, xshape):
    """A shape with as many elements as ``xshape`` (MXNet reshape_like)."""
    size = int(np.prod(xshape))
    options = [xshape, (size,), tuple(reversed(xshape)), xshape + (1,)]
    if len(xshape) >= 2:
        options.append((xshape[0], int(np.prod(xshape[1:]))))
    return draw(st.sampled_from(options))


WEIGHTS = [None, 1.0, 0.5, 2, -1.5, np.float32(0.25), np.float64(3.0), True]


@dataclass
class Problem:
    case: Case
    weight: Any
    batch_axis: int
    pred: np.ndarray
    label: np.ndarray
    sw: np.ndarray | None
    aux: np.ndarray | None
    head: np.ndarray
    epsilon: Any  # PoissonNLL call argument, _DEFAULT when omitted
    full: tuple
    keywords: bool

    @property
    def loss(self):
        return self.case.make(self.weight, self.batch_axis)

    def args(self):
        """(args, kwargs) for a call: gluon positional order or keywords."""
        vals = {self.case.names[0]: self.pred, self.case.names[1]: self.label}
        if self.sw is not None:
            vals["sample_weight"] = self.sw
        if self.aux is not None:
            vals[self.case.aux] = self.aux
        if self.epsilon is not _DEFAULT:
            vals["epsilon"] = self.epsilon
        if self.keywords:
            return (), vals
        args = [vals.get(n) for n in self.case.names]
        while args and args[-1] is None:
            args.pop()
        return tuple(args), {}

    def arrays(self):
        return [a for a in (self.pred, self.label, self.sw, self.aux, self.head) if a is not None]


@st.composite
def problems(draw, case, dtypes=FLOAT_DTYPES, other_dtypes=None):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    odt = np.dtype(draw(st.sampled_from(other_dtypes))) if other_dtypes else dtype
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ndim = draw(st.integers(1, MAX_NDIM))
    xshape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    params = dict(case.params)

    if case.broadcast_label:
        yshape = draw(broadcastable_shape(xshape))
        x = gen_kldiv_pred(rng, xshape, params)
        y = gen_kldiv_label(rng, yshape)
    else:
        x, y = case.gen(rng, xshape, params)
        y = y.reshape(draw(label_shape(xshape)))
    full = np.broadcast_shapes(xshape, y.shape) if case.broadcast_label else xshape

    aux = None
    if case.aux is not None:
        ashape = draw(broadcastable_shape(full))
        aux = rng.uniform(0.2, 3.0, ashape)
        full = np.broadcast_shapes(full, ashape)
    sw = None
    if draw(st.booleans()):
        swshape = draw(broadcastable_shape(full))
        sw = rng.uniform(0.1, 2.0, swshape) * rng.choice([-1.0, 1.0], swshape)
        full = np.broadcast_shapes(full, swshape)

    nd = len(full)
    batch_axis = draw(st.integers(-nd, nd - 1))
    weight = draw(st.sampled_from(WEIGHTS if not case.weight_half else [_DEFAULT] + WEIGHTS[1:]))
    epsilon = _DEFAULT
    if case.reduce == "all":
        epsilon = draw(st.sampled_from([_DEFAULT, 1e-08, 0.05, 1.0]))
    n_out = 1 if case.reduce == "all" else full[batch_axis]
    head = rng.uniform(-2, 2, (n_out,))
    return Problem(
        case=case,
        weight=weight,
        batch_axis=batch_axis,
        pred=x.astype(dtype),
        label=y.astype(odt),
        sw=None if sw is None else sw.astype(odt),
        aux=None if aux is None else aux.astype(odt),
        head=head.astype(dtype),
        epsilon=epsilon,
        full=tuple(full),
        keywords=draw(st.booleans()),
    )


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------
def _compute_dtype(pred):
    return np.dtype(np.float64) if pred.dtype == np.float64 else np.dtype(np.float32)


def _unbroadcast(g, shape):
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and g.shape[d] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def reference(prob: Problem, head=None):
    """(out, dpred, out_scale, grad_scale) in float64; the scales bound the rounding error."""
    case = prob.case
    cdt = _compute_dtype(prob.pred)

    def f64(a):
        return None if a is None else np.asarray(a).astype(cdt).astype(np.float64)

    x = f64(prob.pred)
    y = f64(prob.label)
    if not case.broadcast_label:
        y = y.reshape(x.shape)
    a, sw = f64(prob.aux), f64(prob.sw)
    params = dict(case.params)
    if prob.epsilon is not _DEFAULT:
        params["epsilon"] = float(np.float64(prob.epsilon).astype(cdt))
    if case.weight_half:
        w = (1.0 if prob.weight is _DEFAULT else float(prob.weight)) / 2
    else:
        w = 1.0 if prob.weight is None else float(prob.weight)

    full = np.broadcast_shapes(*[s.shape for s in (x, y, a, sw) if s is not None])
    assert tuple(full) == prob.full
    X, Y = np.broadcast_to(x, full), np.broadcast_to(y, full)
    A = None if a is None else np.broadcast_to(a, full)
    S = np.ones(full) if sw is None else np.broadcast_to(sw, full)
    with np.errstate(all="ignore"):
        val, der = case.term(X, Y, A, params)
        # per-element magnitude of the intermediate quantities (tolerance scale)
        base = (1 + np.abs(X) + np.abs(Y)) ** 2 * (1 + (0 if A is None else np.abs(A)))
        vmag = base + np.nan_to_num(np.abs(val), nan=0.0, posinf=0.0)
        dmag = base + np.abs(der)
        weighted = val * S * w
        wmag = vmag * np.abs(S * w)
        if case.reduce == "all":
            k = weighted.size
            out = np.array([weighted.sum() / k])
            oscale = np.array([wmag.sum() / k])
            hb = np.full(full, 1.0 if head is None else float(head[0]))
        else:
            ax = prob.batch_axis % len(full)
            rows = np.moveaxis(weighted, ax, 0).reshape(full[ax], -1)
            mrows = np.moveaxis(wmag, ax, 0).reshape(full[ax], -1)
            k = rows.shape[1]
            div = k if case.reduce == "mean" else 1
            out = rows.sum(axis=1) / div
            oscale = mrows.sum(axis=1) / div
            hshape = [1] * len(full)
            hshape[ax] = full[ax]
            h = np.ones(full[ax]) if head is None else np.asarray(head, np.float64)
            hb = np.broadcast_to(h.reshape(hshape), full)
            k = div
        dfull = (hb / k) * w * S * der
        gscale = np.abs(hb / k) * np.abs(w * S) * dmag
    return out, _unbroadcast(dfull, x.shape), oscale, _unbroadcast(gscale, x.shape)


# (rtol, atol relative to the magnitude scale, absolute floor: float16 subnormal spacing)
TOL = {
    np.dtype(np.float64): (1e-10, 1e-12, 0.0),
    np.dtype(np.float32): (1e-5, 1e-5, 0.0),
    np.dtype(np.float16): (4e-3, 4e-3, 1e-7),
}


def assert_close(got, ref, scale, dtype, what):
    rtol, atol, floor = TOL[np.dtype(dtype)]
    got64 = np.asarray(got, np.float64)
    assert got64.shape == ref.shape, f"{what}: shape {got64.shape} != {ref.shape}"
    np.testing.assert_array_equal(np.isnan(got64), np.isnan(ref), err_msg=f"{what}: NaN pattern")
    ok = ~np.isnan(ref)
    err = np.abs(got64[ok] - ref[ok])
    tol = rtol * np.abs(ref[ok]) + atol * scale[ok] + floor
    assert np.isfinite(tol).all(), f"{what}: the reference's tolerance scale is not finite"
    bad = err > tol
    assert not bad.any(), (
        f"{what}: max excess {np.max(err - tol)}; got {got64[ok][bad][:5]} expected {ref[ok][bad][:5]}"
    )


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@SETTINGS
@given(data=st.data())
def test_matches_reference(case, data):
    prob = data.draw(problems(case))
    loss = prob.loss
    args, kwargs = prob.args()
    dt = prob.pred.dtype
    ref_out, ref_dx1, oscale, gscale1 = reference(prob)
    _, ref_dx, _, gscale = reference(prob, head=prob.head)

    out = loss(*args, **kwargs)
    assert out.dtype == dt
    assert_close(out, ref_out, oscale, dt, "forward")

    out2, grads = loss.forward_backward(*args, out_grad=prob.head, **kwargs)
    assert isinstance(grads, tuple) and len(grads) == 1
    assert out2.dtype == dt and grads[0].dtype == dt
    assert_close(out2, ref_out, oscale, dt, "forward_backward value")
    assert_close(grads[0], ref_dx, gscale, dt, "forward_backward grad")

    (dx,) = loss.backward(*args, out_grad=prob.head, **kwargs)
    assert dx.dtype == dt
    assert_close(dx, ref_dx, gscale, dt, "backward")

    # default head gradient: ones
    _, (dx1,) = loss.forward_backward(*args, **kwargs)
    assert_close(dx1, ref_dx1, gscale1, dt, "forward_backward grad (out_grad=None)")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_mixed_input_dtypes(case, data):
    """Labels and weights of another float dtype are cast to pred's; results have pred's dtype."""
    prob = data.draw(problems(case, other_dtypes=(np.float16, np.float32, np.float64)))
    args, kwargs = prob.args()
    dt = prob.pred.dtype
    ref_out, ref_dx, oscale, gscale = reference(prob, head=prob.head)
    out, (dx,) = prob.loss.forward_backward(*args, out_grad=prob.head, **kwargs)
    assert out.dtype == dt and dx.dtype == dt
    assert_close(out, ref_out, oscale, dt, "forward")
    assert_close(dx, ref_dx, gscale, dt, "grad")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_float16_in_float16_out(case, data):
    prob = data.draw(problems(case, dtypes=(np.float16,), other_dtypes=(np.float16,)))
    args, kwargs = prob.args()
    ref_out, ref_dx, oscale, gscale = reference(prob, head=prob.head)
    out = prob.loss(*args, **kwargs)
    out2, (dx,) = prob.loss.forward_backward(*args, out_grad=prob.head, **kwargs)
    (dx2,) = prob.loss.backward(*args, out_grad=prob.head, **kwargs)
    for arr in (out, out2, dx, dx2):
        assert arr.dtype == np.float16
    finite = np.abs(ref_out) < 6e4  # float16 overflow is not the point here
    if finite.all():
        assert_close(out, ref_out, oscale, np.float16, "forward")
        assert_close(out2, ref_out, oscale, np.float16, "forward_backward value")
    if (np.abs(ref_dx) < 6e4).all():
        assert_close(dx, ref_dx, gscale, np.float16, "grad")
        assert_close(dx2, ref_dx, gscale, np.float16, "backward")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_inputs_never_modified(case, data):
    prob = data.draw(problems(case))
    before = [a.copy() for a in prob.arrays()]
    for a in prob.arrays():
        a.setflags(write=False)  # a write attempt would raise
    args, kwargs = prob.args()
    loss = prob.loss
    loss(*args, **kwargs)
    loss.forward_backward(*args, out_grad=prob.head, **kwargs)
    loss.backward(*args, out_grad=prob.head, **kwargs)
    for a in prob.arrays():
        a.setflags(write=True)
    loss.forward_backward(*args, out_grad=prob.head, **kwargs)
    for old, new in zip(before, prob.arrays(), strict=True):
        assert old.dtype == new.dtype
        np.testing.assert_array_equal(old, new)


def _strided(rng, a, how):
    """The same values as ``a`` in a non-contiguous layout."""
    if a.ndim == 0:
        return a
    if how == "step":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
        big[..., 1::2] = a
        return big[..., 1::2]
    if how == "transpose":
        return np.ascontiguousarray(a.T).T
    if how == "reverse":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    raise AssertionError(how)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_noncontiguous_inputs(case, data):
    prob = data.draw(problems(case))
    rng = np.random.default_rng(0)
    # a label that is a zero-stride broadcast view (constant along its last axis)
    if data.draw(st.booleans()) and prob.label.ndim >= 1:
        prob.label = np.broadcast_to(prob.label[..., :1], prob.label.shape)
    contiguous = Problem(**{**vars(prob)})
    for name in ("label", "sw", "aux", "head"):
        a = getattr(prob, name)
        if a is not None:
            setattr(contiguous, name, np.ascontiguousarray(a))
    layouts = st.sampled_from(["step", "transpose", "reverse"])
    how = {n: data.draw(layouts) for n in ("pred", "label", "sw", "aux", "head")}
    prob.pred = _strided(rng, prob.pred, how["pred"])
    for name in ("sw", "aux", "head"):
        a = getattr(prob, name)
        if a is not None:
            setattr(prob, name, _strided(rng, a, how[name]))
    if prob.label.strides and all(s != 0 for s in prob.label.strides):
        prob.label = _strided(rng, prob.label, how["label"])

    a1, k1 = prob.args()
    a2, k2 = contiguous.args()
    out1, (dx1,) = prob.loss.forward_backward(*a1, out_grad=prob.head, **k1)
    out2, (dx2,) = contiguous.loss.forward_backward(*a2, out_grad=contiguous.head, **k2)
    rtol = 1e-6 if prob.pred.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out1, out2, rtol=rtol, atol=0)
    np.testing.assert_allclose(dx1, dx2, rtol=rtol, atol=1e-300)
    assert dx1.shape == prob.pred.shape
    assert np.array_equal(np.isnan(out1), np.isnan(out2))
    # and both agree with the reference
    ref_out, ref_dx, oscale, gscale = reference(contiguous, head=contiguous.head)
    assert_close(out1, ref_out, oscale, prob.pred.dtype, "forward (non-contiguous)")
    assert_close(dx1, ref_dx, gscale, prob.pred.dtype, "grad (non-contiguous)")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_output_buffers(case, data):
    """``out=`` / ``grad_out=`` buffers receive the results (also when reused)."""
    prob = data.draw(problems(case))
    args, kwargs = prob.args()
    dt = prob.pred.dtype
    ref_out, ref_dx, oscale, gscale = reference(prob, head=prob.head)
    out_buf = np.full(ref_out.shape, 7.0, dt)
    grad_buf = np.full(prob.pred.shape, 7.0, dt)
    tuple_form = data.draw(st.booleans())
    for _ in range(2):
        out, (dx,) = prob.loss.forward_backward(
            *args, out_grad=prob.head, out=out_buf, grad_out=(grad_buf,) if tuple_form else grad_buf, **kwargs
        )
        assert_close(out_buf, ref_out, oscale, dt, "out buffer")
        assert_close(grad_buf, ref_dx, gscale, dt, "grad_out buffer")
        assert_close(out, ref_out, oscale, dt, "returned out")
        assert_close(dx, ref_dx, gscale, dt, "returned grad")
    grad_buf[...] = 7.0
    (dx,) = prob.loss.backward(*args, out_grad=prob.head, grad_out=grad_buf, **kwargs)
    assert_close(grad_buf, ref_dx, gscale, dt, "backward grad_out buffer")
    out_buf[...] = 7.0
    prob.loss(*args, out=out_buf, **kwargs)
    assert_close(out_buf, ref_out, oscale, dt, "forward out buffer")


# --- self-checks of the reference (so a wrong reference cannot pass silently) ---------------
def test_reference_self_check():
    """The reference reproduces hand-computed values (docs/semantics.rst sections 2 and 5, the BCE form)."""
    case = next(c for c in CASES if c.id == "L2")
    prob = Problem(
        case=case,
        weight=_DEFAULT,
        batch_axis=0,
        pred=np.array([[1.0, 2.0], [3.0, 5.0]]),
        label=np.array([[0.0, 0.0], [3.0, 1.0]]),
        sw=None,
        aux=None,
        head=np.array([1.0, 2.0]),
        epsilon=_DEFAULT,
        full=(2, 2),
        keywords=False,
    )
    out, dx, _, _ = reference(prob, head=prob.head)
    # row 0: 0.5*(1 + 4)/2 = 1.25; row 1: 0.5*(0 + 16)/2 = 4
    np.testing.assert_allclose(out, [1.25, 4.0])
    # dx = (g/K) * (x - y): row 0 (1/2)*[1, 2], row 1 (2/2)*[0, 4]
    np.testing.assert_allclose(dx, [[0.5, 1.0], [0.0, 4.0]])
    # the unbroadcast sums over grown and leading axes
    np.testing.assert_array_equal(_unbroadcast(np.ones((2, 3, 4)), (3, 1)), np.full((3, 1), 8.0))


@pytest.mark.parametrize(("dtype", "k"), [(np.float64, 3), (np.float32, 25)])
def test_hinge_kink_of_a_rounded_product(dtype, k):
    """MXNet rounds ``pred * label`` before subtracting it from the margin: with ``fl(x y) == 1`` the
    loss and the gradient are 0 (docs/semantics.rst section 9) although ``x y`` is just below 1; a
    fused multiply-add would give a residue and the full gradient ``-y``."""
    x, y = np.array([[1 / k]], dtype), np.array([[k]], dtype)
    assert Fraction(float(x[0, 0])) * k < 1 and (x * y)[0, 0] == 1  # the case is what it says
    for loss in (nl.HingeLoss(), nl.SquaredHingeLoss()):
        out, (g,) = loss.forward_backward(x, y)
        assert out[0] == 0 and g[0, 0] == 0, (type(loss).__name__, out, g)


def test_products_overflow_as_in_mxnet():
    """A product that overflows to inf stays inf before the subtraction, as in MXNet's formulas:
    PoissonNLL ``exp(x) - t x`` at x = 710, t = 1e306 is inf - inf = NaN; SigmoidBCE
    ``relu(x) - x z`` at x = 1e308, z = 2 (MXNet does not check labels) is -inf."""
    out, (g,) = nl.PoissonNLLLoss().forward_backward(np.array([[710.0]]), np.array([[1e306]]))
    assert np.isnan(out[0]) and g[0, 0] == np.inf
    out = nl.SigmoidBCELoss()(np.array([[1e308]]), np.array([[2.0]]))
    assert out[0] == -np.inf
    out = nl.PoissonNLLLoss(from_logits=False)(np.array([[1e300]]), np.array([[1e307]]))
    assert out[0] == -np.inf  # x - t log(x + eps): t log(x) overflows to inf
