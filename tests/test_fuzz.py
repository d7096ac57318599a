"""Fuzz: every loss and method, with one argument at a time replaced by something unusual or wrong.

Each call must either

* return, and then equal the same call on a plain native-order, C-contiguous
  copy of the replaced argument (layouts and byte orders never change a
  result, up to summation order), or
* raise ``TypeError``, ``ValueError``, ``AssertionError`` or
  ``NotImplementedError`` whose message names the replaced argument and is
  long enough to act on.

Never a Numba compiler error, never another exception type. The cases are
drawn from a seeded generator, so a failure reproduces.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numba.core.errors import NumbaError

import numba_losses as nl

ALLOWED = (TypeError, ValueError, AssertionError, NotImplementedError)
METHODS = ("__call__", "forward_backward", "backward")


def _u(rng, shape, lo=0.1, hi=0.9):
    return rng.uniform(lo, hi, shape)


def _cases(rng):
    """``name -> (loss, inputs)`` with valid float64 inputs for every family."""
    x, y = _u(rng, (4, 5)), _u(rng, (4, 5))
    return {
        "L2": (nl.L2Loss(), {"pred": x, "label": y, "sample_weight": _u(rng, (4, 1))}),
        "SigmoidBCE": (nl.SigmoidBCELoss(), {"pred": x, "label": y, "pos_weight": _u(rng, (1, 5))}),
        "Huber": (nl.HuberLoss(rho=0.5), {"pred": x, "label": y}),
        "PoissonNLL": (nl.PoissonNLLLoss(), {"pred": x, "target": y}),
        "SoftmaxCE": (
            nl.SoftmaxCELoss(),
            {"pred": x, "label": np.array([0.0, 1.0, 2.0, 4.0]), "sample_weight": _u(rng, (4, 1))},
        ),
        "SoftmaxCE-dense": (nl.SoftmaxCELoss(sparse_label=False), {"pred": x, "label": y}),
        "KLDiv-softmax": (nl.KLDivLoss(from_logits=False), {"pred": x, "label": y}),
        "CTC": (
            nl.CTCLoss(),
            {
                "pred": _u(rng, (2, 6, 4)),
                "label": np.array([[0.0, 1.0, 2.0], [1.0, 1.0, -1.0]]),
                "pred_lengths": np.array([6.0, 5.0]),
                "label_lengths": np.array([3.0, 2.0]),
            },
        ),
        "Triplet": (nl.TripletLoss(), {"pred": x, "positive": y, "negative": _u(rng, (4, 5))}),
        "Cosine": (nl.CosineEmbeddingLoss(), {"input1": x, "input2": y, "label": np.array([1.0, -1.0, 1.0, -1.0])}),
        "SDML": (nl.SDMLLoss(), {"x1": x, "x2": y}),
        "MakeLoss": (nl.MakeLoss(nl.L1Loss(), normalization="valid"), {"pred": x, "label": y}),
    }


def _replacements(rng, a):
    """``(kind, value, canonical)``: ``canonical`` is what a correct call must treat ``value`` as (or None)."""
    a = np.asarray(a)
    native = np.ascontiguousarray(a)
    yield "complex", a.astype(np.complex64), None
    yield "object", a.astype(object), None
    yield "str", np.full(a.shape, "a"), None
    yield "datetime", np.zeros(a.shape, "M8[s]"), None
    yield "longdouble", a.astype(np.longdouble), None
    yield "33-dims", np.zeros((1,) * 33), None
    yield "string", "abc", None
    yield "dict", {}, None
    yield "empty", np.empty((0, *a.shape[1:])), None
    yield "extra-axis", a[..., None], None
    yield "flattened", a.reshape(-1), None
    yield "nan", np.full(a.shape, np.nan), None
    yield "int8", a.astype(np.int8), None
    yield "bool", a.astype(bool), None
    yield "float16", a.astype(np.float16), None
    yield "big-endian f8", a.astype(">f8"), native
    yield "big-endian f4", a.astype(">f4"), native.astype(np.float32)
    yield "big-endian i8", a.astype(">i8"), native.astype(np.int64)
    yield "list", a.tolist(), native
    yield "reversed strides", np.flip(np.flip(a).copy()), native
    yield "fortran order", np.asfortranarray(a), native
    yield "read-only", _read_only(a), native
    if a.size:
        mask = np.zeros(a.shape, bool)
        mask.flat[0] = True
        yield "masked", np.ma.masked_array(a, mask=mask), None  # the value under the mask must not be read
    yield "masked, nothing masked", np.ma.masked_array(a), native
    offset = np.empty(a.size + 1)[1:].reshape(a.shape)  # unaligned to its allocation, still valid
    offset[...] = a
    yield "offset view", offset, native


def _read_only(a):
    b = np.array(a)
    b.flags.writeable = False
    return b


def _flat(result):
    if isinstance(result, tuple):
        return [z for r in result for z in _flat(r)]
    return [np.asarray(result)]


def _check(loss, method, kwargs, name, kind, canonical):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN inputs
            got = getattr(loss, method)(**kwargs)
    except NumbaError as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"{name} <- {kind}: Numba error leaked: {type(exc).__name__}: {str(exc)[:300]}")
    except ALLOWED as exc:
        msg = str(exc)
        assert len(msg) >= 10, f"{name} <- {kind}: message too short to act on: {msg!r}"
        assert name in msg or name.replace("_", " ") in msg, f"{name} <- {kind}: message does not name it: {msg!r}"
        return
    except Exception as exc:  # pragma: no cover
        pytest.fail(f"{name} <- {kind}: {type(exc).__name__} is not an accepted error type: {exc}")
    if canonical is not None:
        expected = getattr(loss, method)(**{**kwargs, name: canonical})
        for g, e in zip(_flat(got), _flat(expected), strict=True):
            assert g.dtype == e.dtype and g.shape == e.shape, f"{name} <- {kind}"
            rtol = 1e-12 if g.dtype == np.float64 else 1e-6  # a strided path may sum in another order
            np.testing.assert_allclose(g, e, rtol=rtol, atol=0, err_msg=f"{name} <- {kind}")


@pytest.mark.parametrize("case", sorted(_cases(np.random.default_rng(0))))
def test_every_input_replaced_gives_a_named_error_or_the_canonical_result(case):
    rng = np.random.default_rng(sum(map(ord, case)))
    loss, inputs = _cases(rng)[case]
    snapshot = {n: np.array(a, copy=True) for n, a in inputs.items()}
    for name, value in inputs.items():
        for kind, replacement, canonical in _replacements(rng, value):
            for method in METHODS:
                _check(loss, method, {**inputs, name: replacement}, name, kind, canonical)
    for n, a in inputs.items():  # inputs are never written
        np.testing.assert_array_equal(a, snapshot[n])


BAD_HEADS = [
    ("string", "abc"),
    ("complex", np.ones(4, np.complex128)),
    ("object", np.ones(4, object)),
    ("wrong shape", np.ones(7)),
    ("33-dims", np.ones((1,) * 33)),
    ("longdouble", np.ones(4, np.longdouble)),
    ("masked", np.ma.masked_array(np.ones(4), mask=[True, False, False, False])),
]


@pytest.mark.parametrize("case", ["L2", "SoftmaxCE", "CTC", "Triplet", "Cosine", "SDML"])
def test_bad_head_gradients_and_buffers_are_named(case):
    loss, inputs = _cases(np.random.default_rng(1))[case]
    for kind, head in BAD_HEADS:
        _check(loss, "forward_backward", {**inputs, "out_grad": head}, "out_grad", kind, None)
        _check(loss, "backward", {**inputs, "out_grad": head}, "out_grad", kind, None)
    out, grads = loss.forward_backward(**inputs)
    for kind, buf in [
        ("wrong dtype", out.astype(np.float32)),
        ("wrong shape", np.empty(out.size + 1)),
        ("read-only", _read_only(out)),
        ("big-endian", out.astype(">f8")),
        ("list", out.tolist()),
        ("masked", np.ma.masked_array(np.empty_like(out))),
    ]:
        _check(loss, "__call__", {**inputs, "out": buf}, "out", kind, None)
    for kind, buf in [("wrong dtype", grads[0].astype(np.float32)), ("read-only", _read_only(grads[0]))]:
        bufs = (buf,) + (None,) * (len(grads) - 1)
        _check(loss, "forward_backward", {**inputs, "grad_out": bufs}, "grad_out", kind, None)


@pytest.mark.parametrize(
    ("loss", "error"),
    [
        (nl.L2Loss(weight="2"), TypeError),  # MXNet computes weight / 2 first
        (nl.L2Loss(weight=None), TypeError),
        (nl.L1Loss(weight="2"), AssertionError),  # MXNet's own check, at call time
        (nl.L1Loss(weight=[1.0]), AssertionError),
        (nl.L1Loss(weight=float("nan")), ValueError),  # MXNet returns NaN everywhere
        (nl.HuberLoss(weight=float("inf")), ValueError),
        (nl.L1Loss(batch_axis="0"), TypeError),
        (nl.L1Loss(batch_axis=0.5), TypeError),
    ],
    ids=repr,
)
def test_weight_and_batch_axis_are_checked_at_call_time_as_in_mxnet(loss, error):
    """Constructing succeeds (MXNet checks these when the loss runs); the call names the parameter."""
    x = np.ones((2, 3))
    for method in METHODS:
        with pytest.raises(error) as info:
            getattr(loss, method)(x, x)
        message = str(info.value)
        assert "weight" in message or "batch_axis" in message, message


# Constructor parameters: (class, parameter, bad values). MXNet-valid values are covered by the golden tests.
BAD_PARAMS = [
    (nl.SigmoidBCELoss, "from_sigmoid", ["False", None, 2, 0.5]),
    (nl.HuberLoss, "rho", [0, -1.0, "1", None, float("nan"), float("inf")]),
    (nl.HingeLoss, "margin", ["1", None, [1], float("nan")]),
    (nl.SquaredHingeLoss, "margin", ["1", float("inf")]),
    (nl.LogisticLoss, "label_format", ["signd", None, 1]),
    (nl.PoissonNLLLoss, "compute_full", ["yes", None]),
    (nl.KLDivLoss, "axis", ["1", 1.5, None]),
    (nl.SoftmaxCELoss, "label_smoothing", [-0.1, 1.5, "0.1", float("nan")]),
    (nl.SoftmaxCELoss, "ignore_label", ["-1", float("nan"), [1]]),
    (nl.SoftmaxCELoss, "sparse_label", ["True", None]),
    (nl.CTCLoss, "layout", ["NCT", None]),
    (nl.CTCLoss, "blank_label", ["middle", 0]),
    (nl.CTCLoss, "zero_infinity", ["no", None]),
    (nl.TripletLoss, "margin", ["1", None, float("nan")]),
    (nl.CosineEmbeddingLoss, "margin", ["0", float("inf")]),
    (nl.SDMLLoss, "smoothing_parameter", ["0.3", -0.1, 1.5, float("nan")]),
]


@pytest.mark.parametrize(("cls", "param", "values"), BAD_PARAMS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_bad_constructor_parameters_raise_at_construction_naming_them(cls, param, values):
    for value in values:
        with pytest.raises(ALLOWED) as info:
            cls(**{param: value})
        assert param in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"grad_scale": "a"}, TypeError),
        ({"grad_scale": float("nan")}, ValueError),
        ({"valid_thresh": None}, TypeError),
        ({"normalization": "mean"}, ValueError),
    ],
)
def test_makeloss_parameters(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        nl.MakeLoss(nl.L1Loss(), **kwargs)
    with pytest.raises(error, match=next(iter(kwargs))):
        nl.make_loss(np.ones(3), **kwargs)


@pytest.mark.parametrize("case", sorted(_cases(np.random.default_rng(0))))
def test_masked_inputs_are_refused_when_an_element_is_masked(case):
    """A masked array's mask would be ignored by the kernels (the values under it read): a named TypeError."""
    rng = np.random.default_rng(sum(map(ord, case)))
    loss, inputs = _cases(rng)[case]
    for name, value in inputs.items():
        a = np.asarray(value)
        if not a.size:
            continue
        mask = np.zeros(a.shape, bool)
        mask.flat[-1] = True
        with pytest.raises(TypeError, match=rf"{name}: masked arrays with masked elements are not supported"):
            loss(**{**inputs, name: np.ma.masked_array(a, mask=mask)})
