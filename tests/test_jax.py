"""numba_losses.jax.function against independent jax.numpy formulations (values and jax.grad of them).

Every loss is written again below in a few lines of ``jax.numpy`` from
docs/semantics.rst; its ``jax.grad`` is the reference gradient. CTCLoss and
SDMLLoss are compared with the NumPy references in ``tests/reference``. A
random cotangent per sample checks the backward rule's scaling; ``vmap`` is
checked against a Python loop of single calls.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import numba_losses as nl  # noqa: E402
import numba_losses.jax as nlj  # noqa: E402
from numba_losses import _jax_ffi  # noqa: E402
from tests.reference.ctc import ref_ctc_loss  # noqa: E402
from tests.reference.sdml import sdml_ref  # noqa: E402
from tests.reference.softmax import ref_softmax_ce  # noqa: E402
from tests.user_losses import l1_grad, l1_value  # noqa: E402

TOL = {"float32": {"rtol": 2e-5, "atol": 2e-6}, "float64": {"rtol": 1e-10, "atol": 1e-12}}


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """float32 in JAX's default mode; float64 with ``jax_enable_x64`` switched on for the test only."""
    if request.param == "float64":
        old = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
        yield request.param
        jax.config.update("jax_enable_x64", old)
    else:
        yield request.param


@pytest.fixture
def x64():
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def close(a, b, dtype):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **TOL[dtype])


# ------------------------------------------------------------------ jax.numpy references
def _mean_nb(w):
    return w.reshape(w.shape[0], -1).mean(axis=1) if w.ndim > 1 else w


def _sum_nb(w):
    return w.reshape(w.shape[0], -1).sum(axis=1) if w.ndim > 1 else w


def ref_l2(x, y):
    return _mean_nb(0.5 * (x - y) ** 2)


def ref_l2_weighted(x, y, sw):
    return _mean_nb(0.5 * (x - y) ** 2 * sw)


def ref_l1(x, y):
    return _mean_nb(jnp.abs(x - y))


def ref_bce(x, y):
    return _mean_nb(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))


def ref_huber(rho):
    def f(x, y):
        a = jnp.abs(y - x)
        return _mean_nb(jnp.where(a > rho, a - 0.5 * rho, 0.5 / rho * a**2))

    return f


def ref_softmax_sparse(x, y):
    lp = jax.nn.log_softmax(x, axis=-1)
    return -jnp.take_along_axis(lp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def ref_softmax_dense(x, y):
    # the term has shape (N, 1) (class axis kept): its mean over the non-batch axes is the term itself
    return -(y * jax.nn.log_softmax(x, axis=-1)).sum(axis=-1)


def ref_kldiv_logits(x, y):
    return _sum_nb(y * (jnp.log(y + 1e-12) - x))


def ref_kldiv_softmax(x, y):
    return _sum_nb(y * (jnp.log(y + 1e-12) - jax.nn.log_softmax(x, axis=-1)))


def ref_triplet(margin):
    def f(x, p, n):
        return jax.nn.relu(_sum_nb((p - x) ** 2 - (n - x) ** 2) + margin)

    return f


def ref_cosine(margin):
    def f(a, b, y):
        c = (a * b).sum(-1, keepdims=True) / jnp.maximum(
            jnp.sqrt((a * a).sum(-1, keepdims=True)) * jnp.sqrt((b * b).sum(-1, keepdims=True)), 1e-12
        )
        y = y.reshape(-1, 1)
        return jnp.where(y == 1, 1 - c, 0.0) + jnp.where(y == -1, jnp.maximum(0.0, c - margin), 0.0)

    return f


def ref_sdml(s):
    def f(x1, x2):
        n = x1.shape[0]
        lp = jax.nn.log_softmax(-((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1), axis=1)
        eye = jnp.eye(n)
        q = eye * (1 - s) + (1 - eye) * s / (n - 1)
        return (q * (jnp.log(q + 1e-12) - lp)).sum(axis=1)

    return f


# ------------------------------------------------------------------ cases
def _inputs(name, dt, rng):
    n, d = 5, 4
    x = rng.standard_normal((n, d)).astype(dt)
    y = rng.standard_normal((n, d)).astype(dt)
    if name in ("l2", "l1", "huber", "user_l1"):
        return (x, y)
    if name == "l2_sw":
        return (x, y, rng.uniform(0.5, 2, (n, 1)).astype(dt))
    if name == "bce":
        return (x, (rng.random((n, d)) > 0.5).astype(dt))
    if name == "softmax_sparse":
        return (x, rng.integers(0, d, n).astype(np.int32))
    if name in ("softmax_dense", "kldiv_softmax", "kldiv_logits"):
        p = rng.random((n, d)).astype(dt) + 0.1
        return (x, (p / p.sum(-1, keepdims=True)).astype(dt))
    if name == "triplet":
        return (x, y, rng.standard_normal((n, d)).astype(dt))
    if name == "cosine":
        return (x, y, np.array([1, -1, 1, -1, -1], dt))
    if name == "sdml":
        return (x, (x + 0.3 * y).astype(dt))
    raise KeyError(name)


CASES = {  # name: (loss, jnp reference, number of leading differentiable inputs)
    "l2": (lambda: nl.L2Loss(), ref_l2, 1),
    "l2_sw": (lambda: nl.L2Loss(), ref_l2_weighted, 1),
    "l1": (lambda: nl.L1Loss(), ref_l1, 1),
    "user_l1": (lambda: nl.elementwise_loss(l1_value, l1_grad, name="UserL1")(), ref_l1, 1),
    "bce": (lambda: nl.SigmoidBCELoss(), ref_bce, 1),
    "huber": (lambda: nl.HuberLoss(rho=0.7), ref_huber(0.7), 1),
    "softmax_sparse": (lambda: nl.SoftmaxCELoss(), ref_softmax_sparse, 1),
    "softmax_dense": (lambda: nl.SoftmaxCELoss(sparse_label=False), ref_softmax_dense, 1),
    "kldiv_logits": (lambda: nl.KLDivLoss(from_logits=True), ref_kldiv_logits, 1),
    "kldiv_softmax": (lambda: nl.KLDivLoss(from_logits=False), ref_kldiv_softmax, 1),
    "triplet": (lambda: nl.TripletLoss(margin=0.5), ref_triplet(0.5), 3),
    "cosine": (lambda: nl.CosineEmbeddingLoss(margin=0.1), ref_cosine(0.1), 2),
    "sdml": (lambda: nl.SDMLLoss(smoothing_parameter=0.3), ref_sdml(0.3), 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_jax_numpy(name, dtype):
    make, ref, k = CASES[name]
    f = nlj.function(make())
    rng = np.random.default_rng(0)
    host = _inputs(name, np.dtype(dtype), rng)
    saved = [h.copy() for h in host]
    args = tuple(jnp.asarray(h) for h in host)
    out = f(*args)
    assert out.dtype == jnp.dtype(dtype)
    close(out, ref(*args), dtype)
    ct = jnp.asarray(rng.uniform(0.5, 2.0, out.shape).astype(dtype))  # a cotangent per sample

    def scalar(fn):
        return lambda *a: (fn(*a) * ct).sum()

    argnums = tuple(range(k))
    got = jax.grad(scalar(f), argnums=argnums)(*args)
    want = jax.grad(scalar(ref), argnums=argnums)(*args)
    for g, w, a in zip(got, want, args, strict=False):
        assert g.shape == a.shape and g.dtype == a.dtype
        close(g, w, dtype)
    value, got_jit = jax.jit(jax.value_and_grad(scalar(f), argnums=argnums))(*args)
    close(value, scalar(ref)(*args), dtype)
    for g, w in zip(got_jit, want, strict=True):
        close(g, w, dtype)
    for h, s in zip(host, saved, strict=True):
        np.testing.assert_array_equal(h, s)


def test_weight_that_grows_the_output_takes_the_backward_callback():
    """pred (1, D) with sample_weight (N, 1): one pred row reaches every sample; its gradient sums them."""
    f = nlj.function(nl.L2Loss())
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 4)).astype(np.float32))
    y = jnp.asarray(rng.standard_normal((1, 4)).astype(np.float32))
    sw = jnp.asarray(rng.uniform(0.5, 2.0, (6, 1)).astype(np.float32))
    ct = jnp.arange(1.0, 7.0, dtype=jnp.float32)
    out = f(x, y, sw)
    assert out.shape == (6,)
    close(out, ref_l2_weighted(x, y, sw), "float32")
    got = jax.grad(lambda x: (f(x, y, sw) * ct).sum())(x)
    close(got, jax.grad(lambda x: (ref_l2_weighted(x, y, sw) * ct).sum())(x), "float32")


def test_softmax_over_the_batch_axis_takes_the_backward_callback(x64):
    """Class axis == batch axis couples the samples: scaling the saved gradient would be wrong."""
    loss = nl.SoftmaxCELoss(axis=0, sparse_label=False)
    f = nlj.function(loss)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    y = rng.random((4, 3))
    out = f(jnp.asarray(x), jnp.asarray(y))
    head = rng.uniform(0.5, 2.0, out.shape)
    want_out, want_dx = ref_softmax_ce(x, y, sparse=False, axis=0, head=head)
    close(out, want_out, "float64")
    got = jax.grad(lambda x: (f(x, jnp.asarray(y)) * head).sum())(jnp.asarray(x))
    close(got, want_dx, "float64")


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_ctc_matches_numpy_reference(layout, x64):
    rng = np.random.default_rng(3)
    n, t, c = 3, 8, 5
    pred = rng.standard_normal((n, t, c) if layout == "NTC" else (t, n, c))
    label = np.array([[1, 2, 2, -1], [0, 1, -1, -1], [3, 3, 1, 2]], np.float64)
    pred_lengths = np.array([8, 6, 7], np.float64)
    head = rng.uniform(0.5, 2.0, n)
    loss = nl.CTCLoss(layout=layout)
    f = nlj.function(loss)
    want_out, want_dx = ref_ctc_loss(pred, label, pred_lengths, layout=layout, out_grad=head)
    args = (jnp.asarray(pred), jnp.asarray(label), jnp.asarray(pred_lengths))
    close(f(*args), want_out, "float64")
    got = jax.grad(lambda p: (f(p, *args[1:]) * head).sum())(args[0])
    close(got, want_dx, "float64")


def test_sdml_matches_numpy_reference(x64):
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    head = rng.uniform(0.5, 2.0, 5)
    f = nlj.function(nl.SDMLLoss())
    out, dx1, dx2 = sdml_ref(x1, x2, 0.3, g=head)
    close(f(jnp.asarray(x1), jnp.asarray(x2)), out, "float64")
    g1, g2 = jax.grad(lambda a, b: (f(a, b) * head).sum(), argnums=(0, 1))(jnp.asarray(x1), jnp.asarray(x2))
    close(g1, dx1, "float64")
    close(g2, dx2, "float64")


# ------------------------------------------------------------------ MakeLoss
@pytest.mark.parametrize("normalization", ["null", "batch", "valid"])
def test_makeloss_gradient_ignores_the_cotangent(normalization):
    """MXNet's MakeLoss writes its constant head gradient whatever comes from above."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((6, 3)).astype(np.float32))
    y = jnp.asarray(rng.standard_normal((6, 3)).astype(np.float32))
    m = nl.MakeLoss(nl.L1Loss(), grad_scale=2.0, valid_thresh=0.9, normalization=normalization)
    f = nlj.function(m)
    out = f(x, y)
    close(out, ref_l1(x, y), "float32")
    base = jax.grad(lambda x: ref_l1(x, y).sum())(x)
    count = {"null": 1.0, "batch": 1.0, "valid": max(1, int((np.asarray(ref_l1(x, y)) > 0.9).sum()))}[normalization]
    want = 2.0 * base / count
    close(jax.grad(lambda x: f(x, y).sum())(x), want, "float32")
    close(jax.grad(lambda x: 5.0 * (f(x, y) * jnp.arange(6.0)).sum())(x), want, "float32")


# ------------------------------------------------------------------ forward mode
@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_and_jacfwd_match_jax_numpy(name):
    """Forward mode through the custom_jvp rule; the calls whose backward needs the cotangent raise."""
    make, ref, k = CASES[name]
    f = nlj.function(make())
    rng = np.random.default_rng(14)
    args = tuple(jnp.asarray(h) for h in _inputs(name, np.dtype(np.float32), rng))
    tangents = tuple(jnp.asarray(rng.standard_normal(a.shape).astype(np.float32)) for a in args[:k])

    def of(fn):
        return lambda *d: fn(*d, *args[k:])

    if name == "sdml":  # each row's softmax runs over the whole batch: reverse mode only
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(of(f), args[:k], tangents)
        return
    value, tangent = jax.jvp(of(f), args[:k], tangents)
    want_value, want_tangent = jax.jvp(of(ref), args[:k], tangents)
    close(value, want_value, "float32")
    close(tangent, want_tangent, "float32")
    for got, want in zip(
        jax.jacfwd(of(f), argnums=tuple(range(k)))(*args[:k]),
        jax.jacfwd(of(ref), argnums=tuple(range(k)))(*args[:k]),
        strict=True,
    ):
        close(got, want, "float32")


def test_second_derivatives_raise():
    f = nlj.function(nl.SoftmaxCELoss())
    x, y = jnp.ones((3, 4)), jnp.array([0, 1, 2])
    with pytest.raises(Exception, match="cannot be differentiated|not support JVP"):  # FFI call / callback
        jax.hessian(lambda x: f(x, y).sum())(x)


# ------------------------------------------------------------------ vmap
VMAP_CASES = ["l2", "l2_sw", "softmax_sparse", "triplet", "cosine", "sdml"]


@pytest.mark.parametrize("name", VMAP_CASES)
def test_vmap_matches_a_loop(name):
    make, _, k = CASES[name]
    f = nlj.function(make())
    rng = np.random.default_rng(6)
    stacks = [_inputs(name, np.dtype(np.float32), rng) for _ in range(3)]
    batched = tuple(jnp.asarray(np.stack(parts)) for parts in zip(*stacks, strict=True))
    # map the differentiable inputs, share the others (expand_dims gives them a size-1 axis)
    in_axes = tuple(0 if i < k else None for i in range(len(batched)))
    shared = tuple(b if i < k else b[0] for i, b in enumerate(batched))
    got = jax.vmap(f, in_axes=in_axes)(*shared)
    want = jnp.stack([f(*(b[j] if i < k else b for i, b in enumerate(shared))) for j in range(3)])
    close(got, want, "float32")
    got_all = jax.vmap(f)(*batched)  # every argument mapped
    want_all = jnp.stack([f(*(b[j] for b in batched)) for j in range(3)])
    close(got_all, want_all, "float32")

    def g(*a):
        return jax.grad(lambda *d: (f(*d, *a[k:]) * jnp.arange(1.0, 1.0 + f(*a).shape[0])).sum(), argnums=0)(*a[:k])

    got_g = jax.jit(jax.vmap(g, in_axes=in_axes))(*shared)
    want_g = jnp.stack([g(*(b[j] if i < k else b for i, b in enumerate(shared))) for j in range(3)])
    close(got_g, want_g, "float32")


def test_vmap_is_not_the_loss_of_the_stacked_batch():
    """The mapped axis must not become the batch axis: (3, 5, 4) mapped gives (3, 5), not (3,)."""
    f = nlj.function(nl.L2Loss())
    x = jnp.ones((3, 5, 4))
    out = jax.vmap(f, in_axes=(0, None))(x, jnp.zeros((5, 4)))
    assert out.shape == (3, 5)
    close(out, jnp.full((3, 5), 0.5), "float32")


def test_vmap_over_a_non_leading_axis():
    f = nlj.function(nl.SoftmaxCELoss())
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.standard_normal((5, 3, 4)).astype(np.float32))  # mapped axis 1, size 3
    y = jnp.asarray(rng.integers(0, 4, (5, 3)).astype(np.int32))

    def g(a, b):
        return jax.grad(lambda a: (f(a, b) * jnp.arange(5.0)).sum())(a)

    close(
        jax.vmap(f, in_axes=(1, 1))(x, y),
        jnp.stack([ref_softmax_sparse(x[:, i], y[:, i]) for i in range(3)]),
        "float32",
    )

    def ref_g(a, b):
        return jax.grad(lambda a: (ref_softmax_sparse(a, b) * jnp.arange(5.0)).sum())(a)

    want = jnp.stack([ref_g(x[:, i], y[:, i]) for i in range(3)])
    close(jax.vmap(g, in_axes=(1, 1), out_axes=1)(x, y), jnp.moveaxis(want, 0, 1), "float32")


def test_nested_vmap():
    f = nlj.function(nl.SoftmaxCELoss())
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 3, 5, 4)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 4, (5,)).astype(np.int32))
    got = jax.vmap(jax.vmap(f, in_axes=(0, None)), in_axes=(0, None))(x, y)
    close(got, jax.vmap(jax.vmap(ref_softmax_sparse, in_axes=(0, None)), in_axes=(0, None))(x, y), "float32")


# ------------------------------------------------------------------ the callbacks jit runs
def _callbacks(jaxpr, primitive="ffi_call"):
    """Number of results of every host call in ``jaxpr`` and the jaxprs inside it.

    On the CPU the host calls are FFI calls (``pure_callback`` is the branch other platforms take).
    """
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found.append(len(eqn.outvars))
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple) else (v,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    found += _callbacks(sub, primitive)
    return found


def test_forward_only_runs_the_plain_forward():
    """Without differentiation: one callback with one result (the loss); with it: loss and gradient."""
    f = nlj.function(nl.L2Loss())
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 3))
    assert _callbacks(jax.make_jaxpr(f)(x, y).jaxpr) == [1]
    vg = jax.make_jaxpr(jax.value_and_grad(lambda x: f(x, y).sum()))(x).jaxpr
    assert _callbacks(vg) == [2]
    sd = nlj.function(nl.SDMLLoss())  # backward by callback: forward alone, then loss.backward
    vg = jax.make_jaxpr(jax.value_and_grad(lambda a: sd(a, x).sum()))(x).jaxpr
    assert sorted(_callbacks(vg)) == [1, 2]
    assert sorted(_callbacks(vg, "pure_callback")) == [1, 2]  # the same calls for other platforms


# ------------------------------------------------------------------ constants and cotangents
def test_labels_are_constants():
    f = nlj.function(nl.SoftmaxCELoss())
    x = jnp.asarray(np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32))
    y = jnp.array([0, 3, 1], jnp.int32)
    dx, dy = jax.grad(lambda x, y: f(x, y).sum(), argnums=(0, 1), allow_int=True)(x, y)
    assert dy.dtype == jax.dtypes.float0 and dy.shape == (3,)
    close(dx, jax.grad(lambda x: ref_softmax_sparse(x, y).sum())(x), "float32")
    g = nlj.function(nl.L2Loss())
    dlabel, dsw = jax.grad(lambda y, w: g(x, y, w).sum(), argnums=(0, 1))(x + 1, jnp.ones((3, 1)))
    assert not np.any(np.asarray(dlabel)) and not np.any(np.asarray(dsw))


def test_keyword_inputs_and_static_numbers():
    f = nlj.function(nl.PoissonNLLLoss(from_logits=False))
    x = jnp.asarray(np.random.default_rng(9).uniform(0.5, 2.0, (3, 2)).astype(np.float32))
    t = jnp.ones((3, 2))

    def ref(x):  # PoissonNLL averages everything to shape (1,)
        return jnp.mean(x - t * jnp.log(x + 1e-6)).reshape(1)

    a = f(pred=x, target=t, epsilon=1e-6)
    close(a, jax.jit(lambda x: f(x, t, None, 1e-6))(x), "float32")
    close(a, ref(x), "float32")
    got = jax.grad(lambda x: 3.0 * f(x, t, epsilon=1e-6).sum())(x)
    close(got, jax.grad(lambda x: 3.0 * ref(x).sum())(x), "float32")
    with pytest.raises(TypeError, match="epsilon must be a Python number"):
        jax.jit(lambda e: f(x, t, None, e))(1e-6)


# ------------------------------------------------------------------ errors and imports
def test_errors_are_raised_while_tracing():
    f = nlj.function(nl.L2Loss())
    with pytest.raises(ValueError, match="cannot be reshaped|broadcast"):
        jax.jit(f)(jnp.ones((3, 4)), jnp.ones((5, 7)))
    with pytest.raises(TypeError, match="Loss or MakeLoss"):
        nlj.function(lambda x: x)


def test_unsupported_dtypes_are_refused_while_tracing():
    f = nlj.function(nl.L2Loss())
    with pytest.raises(TypeError, match="^pred: dtype bfloat16 is not supported"):
        jax.jit(f)(jnp.ones((2, 3), jnp.bfloat16), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="^label: dtype complex64 is not supported"):
        f(jnp.ones((2, 3)), jnp.ones((2, 3), jnp.complex64))


def test_float16_in_float16_out():
    f = nlj.function(nl.L2Loss())
    x = jnp.asarray(np.linspace(-1, 1, 12).reshape(4, 3), jnp.float16)
    y = jnp.zeros((4, 3), jnp.float16)
    out, dx = jax.value_and_grad(lambda x: f(x, y).sum())(x)
    assert out.dtype == jnp.float16 and dx.dtype == jnp.float16
    np.testing.assert_allclose(np.asarray(dx, np.float64), np.asarray(x, np.float64) / 3, rtol=1e-3)


def test_value_errors_from_the_callback_reach_the_caller():
    f = nlj.function(nl.CTCLoss())
    pred = jnp.zeros((1, 4, 3))
    match = "ValueError: label" if _jax_ffi.available() else "label"  # JAX wraps the ValueError of the host call
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(f(pred, jnp.array([[7.0, 0.0]])))


@pytest.mark.parametrize("name", ["l2_sw", "softmax_sparse", "triplet", "sdml"])
def test_the_callback_path_gives_the_same_results(name, monkeypatch):
    """Where JAX has no usable FFI (and on GPUs) the host calls are pure_callbacks: same values, same gradients."""
    monkeypatch.setattr(_jax_ffi, "available", lambda: False)
    make, ref, k = CASES[name]
    f = nlj.function(make())
    args = tuple(jnp.asarray(h) for h in _inputs(name, np.dtype(np.float32), np.random.default_rng(12)))
    ct = jnp.linspace(0.5, 2.0, ref(*args).shape[0])

    def scalar(fn):
        return lambda *a: (fn(*a) * ct).sum()

    vg = jax.value_and_grad(scalar(f), argnums=tuple(range(k)))
    jaxpr = jax.make_jaxpr(vg)(*args).jaxpr
    assert not _callbacks(jaxpr) and _callbacks(jaxpr, "pure_callback")
    value, grads = jax.jit(vg)(*args)
    want_value, want = jax.value_and_grad(scalar(ref), argnums=tuple(range(k)))(*args)
    close(value, want_value, "float32")
    for g, w in zip(grads, want, strict=True):
        close(g, w, "float32")


@pytest.mark.skipif(not _jax_ffi.available(), reason="this JAX has no typed FFI")
def test_the_ffi_call_reads_and_writes_xla_buffers_in_place(monkeypatch):
    """The kernels read the jitted program's argument buffers and write its result buffers: no copies."""
    seen = []
    real_call = _jax_ffi.call

    def spy(fn, sds, *args, vmap_method):
        def recorded(inputs, outputs):
            seen.append(([a.ctypes.data for a in inputs], [o.ctypes.data for o in outputs]))
            assert not any(a.flags.writeable for a in inputs)
            fn(inputs, outputs)

        return real_call(recorded, sds, *args, vmap_method=vmap_method)

    monkeypatch.setattr(_jax_ffi, "call", spy)
    f = nlj.function(nl.SoftmaxCELoss())
    rng = np.random.default_rng(13)
    x = jnp.asarray(rng.standard_normal((64, 100)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 100, 64).astype(np.int32))
    out = jax.jit(f)(x, y)
    (inputs, outputs) = seen[-1]
    assert inputs == [x.unsafe_buffer_pointer(), y.unsafe_buffer_pointer()]
    assert outputs == [out.unsafe_buffer_pointer()]
    close(out, ref_softmax_sparse(x, y), "float32")


def test_results_in_a_dtype_jax_narrows():
    """Integer inputs give float64 results in the library; JAX without x64 gets them as float32."""
    f = nlj.function(nl.L2Loss())
    x = jnp.asarray(np.arange(6).reshape(2, 3), jnp.int32)
    out = f(x, jnp.zeros((2, 3), jnp.int32))
    assert out.dtype == jnp.float32
    close(out, [5 / 6, 50 / 6], "float32")


def test_an_empty_batch():
    f = nlj.function(nl.L2Loss())
    x = jnp.ones((0, 3))
    out, dx = jax.value_and_grad(lambda x: f(x, jnp.zeros((0, 3))).sum())(x)
    assert float(out) == 0.0 and dx.shape == (0, 3)


@pytest.mark.skipif(not _jax_ffi.available(), reason="this JAX has no typed FFI")
def test_a_call_of_the_ffi_target_without_its_attribute_is_an_error():
    sds = jax.ShapeDtypeStruct((2,), jnp.float32)
    call = jax.ffi.ffi_call(_jax_ffi.TARGET, (sds,), vmap_method="expand_dims")
    with pytest.raises(Exception, match="ValueError: a call of numba_losses_host_call without its one attribute"):
        jax.block_until_ready(jax.jit(lambda a: call(a))(jnp.ones(2)))


def test_import_numba_losses_does_not_import_jax():
    code = "import sys, numba_losses; assert 'jax' not in sys.modules and 'numba_losses.jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_softmax_gradient_at_a_parallel_size():
    # 40 x 1000 takes the parallel kernel variant, whose label slot was once lost
    f = nlj.function(nl.SoftmaxCELoss())
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.standard_normal((40, 1000)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 1000, 40).astype(np.int32))
    got = jax.grad(lambda x: f(x, y).sum())(x)
    close(got, jax.grad(lambda x: ref_softmax_sparse(x, y).sum())(x), "float32")


GPUS = [d for d in jax.devices() if d.platform == "gpu"]


@pytest.mark.skipif(not GPUS, reason="needs JAX with a GPU backend")
def test_on_a_gpu_the_callback_runs_on_the_host_and_results_stay_on_the_gpu():
    """What the docstring promises on a GPU: a host round trip under ``jit``, results on the inputs' device."""
    f = nlj.function(nl.SoftmaxCELoss())
    rng = np.random.default_rng(12)
    xh = rng.standard_normal((64, 100)).astype(np.float32)
    yh = rng.integers(0, 100, 64).astype(np.int32)
    x, y = jax.device_put(xh, GPUS[0]), jax.device_put(yh, GPUS[0])
    value, grad = jax.jit(jax.value_and_grad(lambda x: f(x, y).sum()))(x)
    assert value.devices() == {GPUS[0]} and grad.devices() == {GPUS[0]}
    out, (ref_grad,) = nl.SoftmaxCELoss().forward_backward(xh, yh)
    np.testing.assert_allclose(float(value), out.sum(dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), ref_grad, rtol=1e-6, atol=1e-7)


def test_a_training_loop_under_scan_and_checkpoint_matches_jax_numpy():
    """The host calls inside lax.scan (a jitted training loop) and under jax.checkpoint."""
    f = nlj.function(nl.SoftmaxCELoss())
    rng = np.random.default_rng(15)
    x = jnp.asarray(rng.standard_normal((8, 5)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 5, 8).astype(np.int32))

    def train(loss):
        def step(w, _):
            value, g = jax.value_and_grad(lambda w: loss(x @ w, y).mean())(w)
            return w - 0.1 * g, value

        return jax.jit(lambda w: jax.lax.scan(step, w, None, length=20))(jnp.eye(5))

    (w, curve), (w_ref, curve_ref) = train(f), train(ref_softmax_sparse)
    close(curve, curve_ref, "float32")
    close(w, w_ref, "float32")
    got = jax.jit(jax.grad(jax.checkpoint(lambda x: f(x, y).sum())))(x)
    close(got, jax.grad(lambda x: ref_softmax_sparse(x, y).sum())(x), "float32")
