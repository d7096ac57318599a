"""CTCLoss vs independent references: docs/semantics.rst section 7 in NumPy, brute force, finite differences, PyTorch.

``tests/reference/ctc.py`` transcribes docs/semantics.rst section 7 in NumPy, run in the compute
dtype (float64, or float32 for float32/float16 data so that saturation behaves as in
MXNet), and is itself checked against the MXNet-computed golden cases here;
tests/test_golden.py runs the library on them. The brute-force test sums the
probabilities of every frame-wise path of a tiny problem, which checks the recursions
without sharing any of their code; finite differences check the gradient against the
forward, and PyTorch's ``ctc_loss`` is a second implementation when installed.
CUDA tests compare device results with the CPU (in Numba's simulator without a GPU).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numba_losses as nl
from tests.conftest import GOLDEN
from tests.reference.ctc import log_softmax, lround, ref_ctc_loss, used_labels

LAYOUTS = [("NTC", "NT"), ("NTC", "TN"), ("TNC", "NT"), ("TNC", "TN")]
BLANKS = ["last", "first"]
DTYPES = [np.float32, np.float64]


# ----------------------------------------------------------------------------- helpers
def _pred(x_ntc, layout):
    """An (N, T, C) array in ``layout``."""
    return np.ascontiguousarray(x_ntc if layout == "NTC" else x_ntc.transpose(1, 0, 2))


def _label(lab_nt, label_layout):
    return np.ascontiguousarray(lab_nt if label_layout == "NT" else lab_nt.T)


def _alphabet(c, blank_label):
    """Class ids usable as labels (the blank excluded)."""
    return np.arange(c - 1) if blank_label == "last" else np.arange(1, c)


def _pad(blank_label):
    return -1 if blank_label == "last" else 0


def _repeats(seq):
    seq = np.asarray(seq)
    return int(np.sum(seq[1:] == seq[:-1])) if len(seq) > 1 else 0


def _random_labels(rng, n, lw, c, blank_label, t_b=None):
    """Label sequences of length <= lw (feasible for frame counts ``t_b`` when given), with repeats."""
    alpha = _alphabet(c, blank_label)
    seqs = []
    for b in range(n):
        for _ in range(100):
            length = int(rng.integers(0, lw + 1))
            seq = rng.choice(alpha, size=length)
            if rng.random() < 0.4 and length > 1:  # force a repeat
                seq[1] = seq[0]
            if t_b is None or length + _repeats(seq) <= t_b[b]:
                break
        else:
            seq = np.zeros(0, np.int64)
        seqs.append(seq.astype(np.int64))
    return seqs


def _padded(seqs, lw, blank_label, junk=None):
    """(N, Lw) float64 rows: the sequence, the padding value, then ``junk`` (padding if None)."""
    rows = np.full((len(seqs), lw), float(_pad(blank_label)))
    for b, s in enumerate(seqs):
        rows[b, : len(s)] = s
        if junk is not None and len(s) + 1 < lw:
            rows[b, len(s) + 1 :] = junk
    return rows


def _with_lengths(seqs, lw, rng, c):
    """(N, Lw) rows whose entries past each length are arbitrary (valid or not), and the lengths."""
    rows = rng.integers(-3, c + 3, size=(len(seqs), lw)).astype(np.float64)
    rows[rng.random(rows.shape) < 0.2] = np.nan
    for b, s in enumerate(seqs):
        rows[b, : len(s)] = s
    return rows, np.array([len(s) for s in seqs], np.float64)


def _activations(rng, n, t, c, blank_label, scale=1.5, blank_bias=0.0):
    x = rng.standard_normal((n, t, c)) * scale
    x[..., c - 1 if blank_label == "last" else 0] += blank_bias
    return x


def _tol(dtype):
    return (1e-4, 1e-5) if np.dtype(dtype) != np.float64 else (1e-10, 1e-12)


def _magnitude(a):
    a = np.asarray(a, np.float64)
    return max(1.0, float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)))


def _assert_matches_ref(got, ref, dtype, what, cost=None):
    """rtol 1e-4 / atol 1e-5 (float32) scaled by the magnitude, times max(1, |cost|) for gradients.

    The golden tolerance of docs/semantics.rst section 0.

    The log-space terms of a gradient carry the rounding of log-likelihoods of size |cost|.
    """
    rtol, atol = _tol(dtype)
    scale = _magnitude(ref) * (1.0 if cost is None else _magnitude(cost))
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol * scale, err_msg=what)


def _run_and_check(ctor, args, *, out_grad=None, dtype=None):
    """Runs the library (call, forward_backward, backward) and compares with the reference.

    The reference runs in the compute dtype: float32 data saturates like MXNet's float32 (a
    log-probability of exactly 0 makes warp-ctc's ``gamma == 0.0`` branch fire), float64 does not.
    """
    pred = args[0]
    dtype = dtype or pred.dtype
    compute = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    before = [None if a is None else np.array(a, copy=True) for a in args]
    loss = nl.CTCLoss(**ctor)
    out = loss(*args)
    out2, (dpred,) = loss.forward_backward(*args, out_grad=out_grad)
    (dpred2,) = loss.backward(*args, out_grad=out_grad)
    ref_out, ref_dpred = ref_ctc_loss(*args, **ctor, out_grad=out_grad, dtype=compute)
    assert out.shape == ref_out.shape and out.dtype == pred.dtype
    assert dpred.shape == pred.shape and dpred.dtype == pred.dtype
    _assert_matches_ref(out, ref_out, dtype, "out")
    _assert_matches_ref(out2, ref_out, dtype, "forward_backward out")
    _assert_matches_ref(dpred, ref_dpred, dtype, "dpred", cost=ref_out)
    _assert_matches_ref(dpred2, ref_dpred, dtype, "backward dpred", cost=ref_out)
    for a, b in zip(args, before, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)  # inputs untouched
    return out, dpred, ref_out, ref_dpred


# ----------------------------------------------------------------------------- the reference itself
def test_reference_reproduces_mxnet_golden_cases(golden_manifest):
    """The NumPy transcription of docs/semantics.rst section 7 (not the library) against MXNet 1.9.1's own results."""
    cases = [c for c in golden_manifest["cases"] if c["group"] == "CTCLoss"]
    assert len(cases) >= 20
    z = np.load(GOLDEN / cases[0]["file"])
    for case in cases:
        args = [z[case["inputs"][n]] for n in case["positional"]]
        kwargs = {n: z[case["inputs"][n]] for n in case["keyword_arrays"]}
        head = z[case["head"]] if case["head"] else None
        exp_out, exp_grad = z[case["expected_output"]], z[case["expected_grads"]["pred"]]
        rtol, atol = case["tolerance"]["rtol"], case["tolerance"]["atol"]
        for dtype in (np.float32, np.float64):
            out, grad = ref_ctc_loss(*args, **kwargs, **case["ctor_kwargs"], out_grad=head, dtype=dtype)
            np.testing.assert_allclose(out, exp_out, rtol=rtol, atol=atol, err_msg=case["id"])
            np.testing.assert_allclose(grad, exp_grad, rtol=rtol, atol=atol, err_msg=case["id"])


# ----------------------------------------------------------------------------- brute force
def _collapse(path, blank):
    out = []
    prev = None
    for k in path:
        if k != prev and k != blank:
            out.append(int(k))
        prev = k
    return tuple(out)


def _brute_force(x_tc, label, blank):
    """Sum over all C^T frame sequences collapsing to ``label`` of prod_t softmax(x_t)[path_t]."""
    t, c = x_tc.shape
    if t == 0:
        return 1.0 if len(label) == 0 else 0.0
    p = np.exp(x_tc - x_tc.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    total = 0.0
    for path in itertools.product(range(c), repeat=t):
        if _collapse(path, blank) == tuple(label):
            total += np.prod(p[np.arange(t), path])
    return total


@pytest.mark.parametrize("blank_label", BLANKS)
@pytest.mark.parametrize("t, c", [(1, 2), (3, 3), (4, 3), (5, 3), (4, 4), (5, 4)])
def test_brute_force_path_sum(t, c, blank_label):
    """exp(-cost) equals the probability mass of every alignment path (repeats, all frame counts)."""
    rng = np.random.default_rng(100 * t + c)
    alpha = _alphabet(c, blank_label)
    lw = min(3, t)
    seqs = [np.array(s, np.int64) for n_lab in range(lw + 1) for s in itertools.product(alpha, repeat=n_lab)]
    n = len(seqs)
    x = _activations(rng, n, t, c, blank_label)
    t_b = rng.integers(0, t + 1, size=n)
    t_b[: min(n, 4)] = t
    label = _padded(seqs, lw, blank_label)
    blank = c - 1 if blank_label == "last" else 0
    expected = np.array([_brute_force(x[b, : t_b[b]], seqs[b], blank) for b in range(n)])
    loss = nl.CTCLoss(zero_infinity=False, blank_label=blank_label)
    cost = loss(x, label, t_b.astype(np.float64))
    assert cost.dtype == np.float64
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(np.exp(-cost), expected, rtol=1e-11, atol=1e-300)
    feasible = np.array([len(s) + _repeats(s) <= tb for s, tb in zip(seqs, t_b, strict=True)])
    assert (expected[~feasible] == 0).all() and (cost[~feasible] == np.inf).all()
    assert (expected[feasible] > 0).all()
    # with label_lengths instead of padding, and float32 data
    cost32 = nl.CTCLoss(zero_infinity=False, blank_label=blank_label)(
        x.astype(np.float32), label, t_b, np.array([len(s) for s in seqs])
    )
    np.testing.assert_allclose(np.exp(-cost32.astype(np.float64)), expected, rtol=2e-5, atol=1e-30)


# ------------------------------------------------------------ check values of docs/semantics.rst section 7
@pytest.mark.parametrize("layout, label_layout", LAYOUTS)
@pytest.mark.parametrize("variant", ["padding", "label_lengths", "pred_lengths"])
def test_spec_check_values(layout, label_layout, variant):
    expected = [18.82820702, 16.50581741]
    t = 25 if variant == "pred_lengths" else 20
    x = np.ones((2, t, 4), np.float32)
    loss = nl.CTCLoss(layout, label_layout)
    if variant == "label_lengths":  # 3 = the blank used as a label; the uniform cost is the same
        lab = np.array([[2, 1, 2, 2], [3, 2, 2, 2]], np.float32)
        args = [_pred(x, layout), _label(lab, label_layout), None, np.array([2, 3], np.float32)]
    else:
        lab = np.array([[1, 0, -1, -1], [2, 1, 1, -1]], np.float32)
        pl = np.array([20, 20], np.float32) if variant == "pred_lengths" else None
        args = [_pred(x, layout), _label(lab, label_layout), pl]
    np.testing.assert_allclose(loss(*args), expected, rtol=1e-6)  # section 7's values are MXNet's float32 results
    out64 = loss(*[None if a is None else a.astype(np.float64) for a in args])
    np.testing.assert_allclose(out64, expected, rtol=2e-7)
    # exactly: every path has probability 4^-20 and a label of length L with R repeats has C(T+L-R, 2L) paths
    exact = [20 * math.log(4) - math.log(math.comb(20 + n_lab - rep, 2 * n_lab)) for n_lab, rep in [(2, 0), (3, 1)]]
    np.testing.assert_allclose(out64, exact, rtol=1e-13)
    _run_and_check({"layout": layout, "label_layout": label_layout}, args)


# ----------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("blank_label", BLANKS)
@pytest.mark.parametrize("layout, label_layout", [("NTC", "NT"), ("TNC", "TN")])
@pytest.mark.parametrize("lengths", ["padding", "label_lengths"])
def test_gradient_matches_central_differences(layout, label_layout, blank_label, lengths):
    rng = np.random.default_rng(7 + len(layout + blank_label + lengths))
    n, t, c, lw = 4, 5, 4, 3
    x = _activations(rng, n, t, c, blank_label)
    x[2, :, c - 1 if blank_label == "last" else 0] += 3.0  # sample 2 is blank-heavy
    pl = np.array([5, 3, 4, 5], np.float64)
    alpha = _alphabet(c, blank_label)
    seqs = [np.array([alpha[0], alpha[0]]), np.array([alpha[1]]), np.array([alpha[2], alpha[1], alpha[1]]),
            np.array([alpha[1], alpha[0], alpha[1]])]  # fmt: skip
    if lengths == "padding":
        label, ll = _padded(seqs, lw, blank_label), None
    else:
        label, ll = _with_lengths(seqs, lw, rng, c)
        label = np.nan_to_num(label, nan=5.0)
    sw = rng.random(n) + 0.5
    head = rng.standard_normal(n)
    ctor = {"layout": layout, "label_layout": label_layout, "weight": 0.7, "blank_label": blank_label}
    loss = nl.CTCLoss(**ctor)
    xp, lab = _pred(x, layout), _label(label, label_layout)

    def f(v):
        return float(np.sum(loss(v, lab, pl, ll, sw) * head))

    _, (g,) = loss.forward_backward(xp, lab, pl, ll, sw, out_grad=head)
    fd = np.zeros_like(xp)
    h = 1e-5
    for idx in np.ndindex(xp.shape):
        v = xp.copy()
        v[idx] += h
        up = f(v)
        v[idx] -= 2 * h
        fd[idx] = (up - f(v)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    assert np.abs(g).max() > 0.05
    _run_and_check(ctor, [xp, lab, pl, ll, sw], out_grad=head)


# ----------------------------------------------------------------------------- library vs reference
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout, label_layout", LAYOUTS)
@pytest.mark.parametrize("blank_label", BLANKS)
def test_random_problems_match_reference(dtype, layout, label_layout, blank_label):
    rng = np.random.default_rng([3, len(layout), len(label_layout), len(blank_label), np.dtype(dtype).itemsize])
    for trial in range(4):
        n, t, c = int(rng.integers(1, 6)), int(rng.integers(1, 12)), int(rng.integers(2, 7))
        lw = int(rng.integers(1, t + 1))
        t_b = rng.integers(0, t + 1, size=n)
        seqs = _random_labels(rng, n, lw, c, blank_label, t_b if trial % 2 else None)
        x = _activations(rng, n, t, c, blank_label, scale=float(rng.choice([0.5, 2.0, 6.0])), blank_bias=trial - 1.0)
        kind = trial % 3
        if kind == 0:  # padding, junk after the first padding value
            label, ll = _padded(seqs, lw, blank_label, junk=np.nan), None
        elif kind == 1:
            label, ll = _with_lengths(seqs, lw, rng, c)
        else:
            label, ll = _padded(seqs, lw, blank_label), np.array([len(s) for s in seqs], np.float64)
        pl = t_b.astype(np.float64) if trial % 2 else None
        sw = rng.random(n) if trial == 1 else None
        head = rng.standard_normal(n) if trial >= 2 else None
        ctor = {
            "layout": layout,
            "label_layout": label_layout,
            "blank_label": blank_label,
            "weight": [None, 2.0][trial % 2],
            "zero_infinity": trial != 3,
        }
        args = [_pred(x, layout).astype(dtype), _label(label, label_layout), pl, ll, sw]
        _run_and_check(ctor, args, out_grad=head)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_long_labels_several_gamma_tiles_and_a_mask_inside_a_tile(dtype, layout):
    """Labels of 40 with repeats over 150 frames (several gamma tiles, the parallel kernel), the gradient
    mask ending inside a tile, an infeasible sample and an empty label, against the reference."""
    rng = np.random.default_rng(21)
    n, t, c, lw = 5, 150, 12, 40
    seqs = [rng.integers(0, c - 1, lw) for _ in range(n)]
    seqs[1][10:20] = 3  # a run of repeats (each needs a blank between)
    seqs[2] = seqs[2][:0]  # empty label
    seqs[3] = np.repeat(seqs[3][:1], lw)  # 40 repeats: 79 frames needed, 60 given -> infeasible
    label = np.stack([np.pad(s, (0, lw - len(s)), constant_values=-1) for s in seqs]).astype(np.float64)
    pl = np.array([150.0, 130.6, 97.2, 60.0, 1.0])  # gradient masks 150, 130, 97, 60, 1
    x = _activations(rng, n, t, c, "last", scale=3.0, blank_bias=0.5)
    for zi in (True, False):
        _run_and_check({"layout": layout, "zero_infinity": zi}, [_pred(x, layout).astype(dtype), label, pl])


def test_log_add_is_bit_identical_to_max_plus_softplus_neg():
    """log_add (free of subnormal intermediates) against max + softplus_neg(|a - b|) bit for bit (NaN for
    NaN), also where the term is subnormal (a maximum near 0), and against float64 logaddexp."""
    from numba import njit

    from numba_losses.kernels.cpu.ctc import log_add
    from numba_losses.kernels.vmath import softplus_neg

    @njit(fastmath={"contract"}, error_model="numpy")
    def both(a, b, new, old):
        for i in range(a.size):
            new[i] = log_add(a[i], b[i])
            x, y = a[i], b[i]
            hi = x if x > y else y
            r = hi + softplus_neg(hi - (y if x > y else x))
            r = x if y == -np.inf else r
            old[i] = y if x == -np.inf else r

    rng = np.random.default_rng(5)
    for dt, flush in ((np.float32, 87.0), (np.float64, 708.0)):
        k = 200_000
        hi = -rng.exponential(20.0, k) * rng.choice([1.0, 1e-3, 1e-25, 1e-40, 1e-300, 0.0], k)
        d = rng.uniform(0.0, 1.3 * flush, k)
        special = np.array([0.0, -0.0, -1e-30, -1.0, -np.inf, np.inf, np.nan])
        a = np.concatenate([hi, hi - d, np.repeat(special, special.size)]).astype(dt)
        b = np.concatenate([hi - d, hi, np.tile(special, special.size)]).astype(dt)
        new, old = np.empty_like(a), np.empty_like(a)
        both(a, b, new, old)
        nan = np.isnan(old)  # a NaN's sign bit is not part of the result (IEEE 754 leaves it open)
        np.testing.assert_array_equal(np.isnan(new), nan)
        assert new[~nan].tobytes() == old[~nan].tobytes()
        with np.errstate(invalid="ignore"):
            ref = np.logaddexp(a.astype(np.float64), b.astype(np.float64))
        finite = np.isfinite(ref)
        scale = np.abs(ref) + np.maximum(np.abs(a), np.abs(b))  # max + log1p(...) cancels near 0
        err = np.abs(new.astype(np.float64)[finite] - ref[finite])
        assert (err <= 4 * np.finfo(dt).eps * scale[finite] + 2 * np.finfo(dt).tiny).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_fractional_lengths_round_for_cost_and_truncate_for_gradient(dtype, layout):
    rng = np.random.default_rng(11)
    n, t, c = 6, 6, 4
    x = rng.standard_normal((n, t, c))
    pl = np.array([4.5, 2.5, 3.4999, 0.4, 5.5, 6.0])  # lround: 5 3 3 0 6 6; trunc: 4 2 3 0 5 6
    ll = np.array([1.5, 2.5, 0.4, 0.0, -0.4, 0.5])  # lround: 2 3 0 0 0 1
    label = np.array([[0, 1, 2], [1, 1, 0], [2, 2, 2], [0, 0, 0], [1, 2, 0], [2, 0, 0]], np.float64)
    for b, tb in enumerate(lround(pl)):
        x[b, tb:] = np.nan  # never read
    xp = _pred(x, layout).astype(dtype)
    ctor = {"layout": layout}
    out, dpred, _, _ = _run_and_check(ctor, [xp, label, pl, ll])
    g = dpred if layout == "NTC" else dpred.transpose(1, 0, 2)
    assert np.isfinite(out).all() and np.isfinite(g).all()
    # docs/semantics.rst section 7 directly: 4.5 costs like 5 frames, but frame 4's gradient is zeroed
    loss = nl.CTCLoss(layout)
    pi = _pred(rng.standard_normal((n, t, c)), layout).astype(dtype)
    o5, (g5,) = loss.forward_backward(pi, label, np.array([5.0] * n), np.array([2.0] * n))
    o45, (g45,) = loss.forward_backward(pi, label, np.array([4.5] * n), np.array([2.0] * n))
    assert o45[0] == o5[0]
    g5, g45 = (g5, g45) if layout == "NTC" else (g5.transpose(1, 0, 2), g45.transpose(1, 0, 2))
    np.testing.assert_array_equal(g45[0, :4], g5[0, :4])
    assert (g45[0, 4:] == 0).all() and (g5[0, 4] != 0).any()
    assert out[3] == 0 and (g[3] == 0).all()  # 0.4 frames -> T_b = 0 with L = 0: cost 0, G 0


@pytest.mark.parametrize("blank_label", BLANKS)
def test_label_values_round_half_away_and_stop_at_first_padding(blank_label):
    rng = np.random.default_rng(12)
    n, t, c = 4, 7, 5
    x = rng.standard_normal((n, t, c))
    if blank_label == "last":
        label = np.array(
            [
                [0.6, 1.4999, -0.4, -0.6, np.nan, 7.0],  # 1 1 0 | pad
                [1.5, 2.5, -1.4, np.inf, -5.0, 0.0],  # 2 3 | pad (-1.4 -> -1)
                [3.4, -0.5, 9.0, 9.0, 9.0, 9.0],  # 3 | pad (-0.5 -> -1)
                [2.0, 1.0, 2.0, 1.0, 0.0, 3.0],  # no padding: all six used
            ]
        )
        seqs = [[1, 1, 0], [2, 3], [3], [2, 1, 2, 1, 0, 3]]
    else:
        label = np.array(
            [
                [0.6, 1.4999, 3.5, -0.4, np.nan, 7.0],  # 1 1 4 | pad (-0.4 -> 0)
                [1.5, 2.5, 0.4, np.inf, -5.0, 0.0],  # 2 3 | pad
                [3.6, -0.49, 9.0, 9.0, 9.0, 9.0],  # 4 | pad
                [2.0, 2.0, 1.0, 3.0, 4.0, 1.0],
            ]
        )
        seqs = [[1, 1, 4], [2, 3], [4], [2, 2, 1, 3, 4, 1]]
    for b, s in enumerate(seqs):
        assert used_labels(label[b], None, blank_label).tolist() == s  # the reference reads it as section 7 says
    for dtype in DTYPES:
        _run_and_check({"blank_label": blank_label}, [x.astype(dtype), label])
    # the same costs from the integer labels with explicit lengths
    lab2, ll2 = _padded([np.array(s) for s in seqs], 6, blank_label), np.array([len(s) for s in seqs])
    np.testing.assert_allclose(
        nl.CTCLoss(blank_label=blank_label)(x, label), nl.CTCLoss(blank_label=blank_label)(x, lab2, None, ll2),
        rtol=1e-13,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_weight_column_grows_output_to_n_by_n(dtype):
    rng = np.random.default_rng(13)
    n, t, c = 3, 6, 4
    x = rng.standard_normal((t, n, c)).astype(dtype)
    label = np.array([[0, 1, -1], [2, 2, 1], [1, -1, -1]], np.float64)
    sw = rng.random((n, 1)) + 0.2
    head = rng.standard_normal((n, n))
    ctor = {"layout": "TNC", "weight": 1.5}
    out, _, _, _ = _run_and_check(ctor, [x, label, None, None, sw], out_grad=head)
    assert out.shape == (n, n)
    base = nl.CTCLoss("TNC")(x, label)
    _assert_matches_ref(out, sw * base[None, :] * 1.5, dtype, "sw (N,1) x cost (N,)")
    # sample_weight broadcast other ways, and the 5th positional argument by keyword
    for sw2 in [rng.random(n), rng.random((2, 1, n)), np.array(0.5)]:
        _run_and_check(ctor, [x, label, None, None, sw2])
        kw = nl.CTCLoss(**ctor)(pred=x, label=label, sample_weight=sw2)
        _assert_matches_ref(kw, ref_ctc_loss(x, label, None, None, sw2, **ctor)[0], dtype, "keywords")


@pytest.mark.parametrize("zero_infinity", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_infeasible_samples(zero_infinity, dtype):
    rng = np.random.default_rng(14)
    n, t, c = 6, 5, 4
    x = rng.standard_normal((n, t, c)).astype(dtype)
    label = np.array(
        [
            [0, 0, 0, -1, -1],  # L + R = 5 <= 5 frames: feasible, exactly tight
            [0, 0, 0, 1, -1],  # L + R = 6 > 5
            [1, 2, 1, 2, 1],  # L = 5 = T: feasible
            [1, 1, -1, -1, -1],  # 3 > pl = 2
            [0, -1, -1, -1, -1],  # pl = 0, L = 1
            [-1, -1, -1, -1, -1],  # pl = 0, L = 0: cost 0, G 0 whatever zero_infinity is
        ],
        np.float64,
    )
    pl = np.array([5, 5, 5, 2, 0, 0], np.float64)
    ctor = {"zero_infinity": zero_infinity}
    head = np.arange(1.0, n + 1)
    out, dpred, _, _ = _run_and_check(ctor, [x, label, pl], out_grad=head)
    bad = [1, 3, 4]
    assert np.isfinite(out[[0, 2, 5]]).all() and out[5] == 0
    assert (out[bad] == (0.0 if zero_infinity else np.inf)).all()
    assert (dpred[bad + [5]] == 0).all() and (dpred[[0, 2]] != 0).any()
    assert np.isfinite(dpred).all()
    # a sample weight scales the cost (an infinite one stays infinite)
    out_sw = nl.CTCLoss(**ctor)(x, label, pl, None, np.full(n, 2.0))
    _assert_matches_ref(out_sw, 2 * out, dtype, "sw")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ["padding", "label_lengths"])
def test_batch_where_every_label_is_empty(dtype, how):
    rng = np.random.default_rng(15)
    n, t, c = 3, 5, 4
    x = rng.standard_normal((n, t, c)).astype(dtype)
    pl = np.array([5, 2, 0], np.float64)
    if how == "padding":
        label, ll = np.full((n, 3), -1.0), None
    else:
        label, ll = rng.integers(0, 3, size=(n, 3)).astype(np.float64), np.zeros(n)
    out, dpred, _, _ = _run_and_check({}, [x, label, pl, ll])
    lp = log_softmax(x.astype(np.float64))
    expected = [-lp[b, : int(pl[b]), c - 1].sum() for b in range(n)]
    _assert_matches_ref(out, expected, dtype, "-sum of blank log-probabilities")
    assert out[2] == 0 and (dpred[2] == 0).all() and (dpred[1, 2:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_nan_past_the_length_does_not_leak(dtype, layout):
    rng = np.random.default_rng(16)
    n, t, c = 4, 6, 5
    x = rng.standard_normal((n, t, c))
    pl = np.array([6, 3, 1, 0], np.float64)
    for b in range(n):
        x[b, int(pl[b]) :] = np.nan
    label = np.array([[0, 1, 2], [3, -1, 7], [2, -1, -1], [-1, 0, 0]], np.float64)
    out, dpred, _, _ = _run_and_check({"layout": layout}, [_pred(x, layout).astype(dtype), label, pl])
    assert np.isfinite(out).all() and np.isfinite(dpred).all()
    g = dpred if layout == "NTC" else dpred.transpose(1, 0, 2)
    for b in range(n):
        assert (g[b, int(pl[b]) :] == 0).all()
    # inf past the length too
    x2 = np.where(np.isnan(x), np.inf, x)
    out2 = nl.CTCLoss(layout)(_pred(x2, layout).astype(dtype), label, pl)
    np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("blank_label", BLANKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_blank_index_used_as_a_label(blank_label, dtype):
    """MXNet accepts the blank as a label; skipα and skipβ then differ (both as written)."""
    rng = np.random.default_rng(17)
    n, t, c = 5, 7, 4
    blank = c - 1 if blank_label == "last" else 0
    other = 1
    seqs = [[blank], [blank, blank], [other, blank, other], [blank, other, other], [other, blank, blank, other]]
    label = _padded([np.array(s) for s in seqs], 4, blank_label)
    ll = np.array([len(s) for s in seqs], np.float64)
    x = rng.standard_normal((n, t, c)) * 1.5
    out, dpred, _, _ = _run_and_check({"blank_label": blank_label}, [x.astype(dtype), label, None, ll])
    assert np.isfinite(out).all() and np.isfinite(dpred).all()
    if blank_label == "last":  # without label_lengths the blank is read as a label too (-1 pads)
        _run_and_check({}, [x.astype(dtype), label])


@pytest.mark.parametrize("margin", [20.0, 39.0, 60.0, 100.0])
def test_saturated_float32_zero_branch(margin):
    """docs/semantics.rst section 7 (saturation): label [0, 1], T = 3, the path 0 1 blank predicted with margin m."""
    c = 4
    x = np.zeros((1, 3, c), np.float32)
    x[0, [0, 1, 2], [0, 1, 3]] = margin
    label = np.array([[0, 1]], np.float32)
    out, (g,) = nl.CTCLoss().forward_backward(x, label)
    ref_out, ref_g = ref_ctc_loss(x, label, dtype=np.float32)
    assert -1e-8 < out[0] < 0  # cost ~ -e^-m, negative
    np.testing.assert_allclose(out, ref_out, rtol=1e-3, atol=1e-44)  # m = 100 is a float32 denormal
    np.testing.assert_allclose(out, [-np.exp(-margin)], rtol=0.1)
    assert g[0, 0, 0] == 0 and g[0, 1, 1] == 0  # interior predicted symbols: G = 0
    assert g[0, 2, 3] == 1  # the final blank, reached by one path only: the gamma == 0.0 branch
    assert ref_g[0, 0, 0] == 0 and ref_g[0, 1, 1] == 0 and ref_g[0, 2, 3] == 1
    np.testing.assert_allclose(g, ref_g, rtol=1e-3, atol=1e-7)


def test_saturated_float32_margin_1000():
    x = np.zeros((1, 3, 4), np.float32)
    x[0, [0, 1, 2], [0, 1, 3]] = 1000.0
    out, (g,) = nl.CTCLoss().forward_backward(x, np.array([[0, 1]], np.float32))
    assert out[0] == 0 and np.signbit(out[0])  # -0.0
    expected = np.zeros_like(x)
    expected[0, [0, 1, 2], [0, 1, 3]] = 1.0  # every predicted symbol: G = 1
    np.testing.assert_array_equal(g, expected)
    ref_out, ref_g = ref_ctc_loss(x, np.array([[0, 1]]), dtype=np.float32)
    assert np.signbit(ref_out[0]) and (ref_g == expected).all()


def test_minus_inf_activations_feasible_sample_costs_inf():
    """A feasible sample whose paths all have probability 0 costs +inf and keeps the formulas' G."""
    x = np.zeros((2, 3, 3))
    x[0, :, 0] = -np.inf  # label class 0 can never be emitted
    label = np.array([[0.0], [1.0]])
    for zi in (True, False):
        out, (g,) = nl.CTCLoss(zero_infinity=zi).forward_backward(x, label)
        assert out[0] == np.inf and np.isfinite(out[1])
        ref_out, ref_g = ref_ctc_loss(x, label, zero_infinity=zi)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12)
        np.testing.assert_allclose(g, ref_g, rtol=1e-12, atol=1e-15)  # G = softmax: no path reaches a symbol
        np.testing.assert_allclose(g[0, :, 1:], 0.5)


# ----------------------------------------------------------------------------- properties
@st.composite
def _problems(draw):
    n = draw(st.integers(1, 3))
    t = draw(st.integers(1, 6))
    c = draw(st.integers(2, 5))
    lw = draw(st.integers(1, t))
    layout = draw(st.sampled_from(["NTC", "TNC"]))
    label_layout = draw(st.sampled_from(["NT", "TN"]))
    blank_label = draw(st.sampled_from(BLANKS))
    dtype = draw(st.sampled_from(DTYPES))
    alpha = _alphabet(c, blank_label).tolist()
    seqs = [draw(st.lists(st.sampled_from(alpha), max_size=lw)) for _ in range(n)]
    use_ll = draw(st.booleans())
    pad = float(_pad(blank_label))
    if use_ll:
        junk = st.one_of(st.sampled_from([pad, np.nan, -7.0, 99.0]), st.sampled_from(alpha).map(float))
        rows = [s + draw(st.lists(junk, min_size=lw - len(s), max_size=lw - len(s))) for s in seqs]
        ll = np.array([len(s) for s in seqs], np.float64) + draw(st.sampled_from([0.0, 0.3, -0.4]))
        ll = np.clip(ll, 0, None)
    else:
        rows = [s + [pad] * (lw - len(s)) for s in seqs]
        ll = None
    label = np.array(rows, np.float64).reshape(n, lw)
    pl = None
    if draw(st.booleans()):
        pl = np.array(draw(st.lists(st.integers(0, t), min_size=n, max_size=n)), np.float64)
        pl = np.clip(pl + draw(st.sampled_from([0.0, 0.5, -0.5, 0.2])), 0, t)
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.3, 2.0, 8.0]))
    return n, t, c, layout, label_layout, blank_label, dtype, seqs, label, ll, pl, seed, scale


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problem=_problems(), zero_infinity=st.booleans())
def test_property_matches_reference(problem, zero_infinity):
    n, t, c, layout, label_layout, blank_label, dtype, seqs, label, ll, pl, seed, scale = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, t, c)) * scale
    t_b = np.full(n, t) if pl is None else lround(pl)
    keep = np.full(n, t) if pl is None else np.trunc(pl).astype(int)
    for b in range(n):
        x[b, t_b[b] :] = np.nan
    xp = _pred(x, layout).astype(dtype)
    lab = _label(label, label_layout)
    ctor = {"layout": layout, "label_layout": label_layout, "blank_label": blank_label, "zero_infinity": zero_infinity}
    out, dpred, _, _ = _run_and_check(ctor, [xp, lab, pl, ll])
    g = dpred if layout == "NTC" else dpred.transpose(1, 0, 2)
    used = [used_labels(label[b], None if ll is None else ll[b], blank_label) for b in range(n)]
    for b in range(n):
        feasible = len(used[b]) + _repeats(used[b]) <= t_b[b]
        assert np.isfinite(out[b]) if feasible or zero_infinity else out[b] == np.inf
        assert (g[b, keep[b] :] == 0).all()
        assert np.isfinite(g[b]).all()
        if not feasible:
            assert (g[b] == 0).all()


# ----------------------------------------------------------------------------- errors, dtypes
def _err(loss, *args, sample):
    with pytest.raises(ValueError, match=rf"sample {sample}\b"):
        loss(*args)
    with pytest.raises(ValueError, match=rf"sample {sample}\b"):
        loss.forward_backward(*args)


def test_bad_lengths_name_the_sample():
    x = np.zeros((3, 4, 3))
    label = np.array([[0, 1], [1, -1], [0, -1]], np.float64)
    loss = nl.CTCLoss()
    for bad in (4.5, -0.5, -1.0, 5.0, np.nan, np.inf, -np.inf):
        _err(loss, x, label, np.array([4.0, 4.0, bad]), sample=2)
    for bad in (2.5, -0.5, -1.0, 3.0, 1e9):
        _err(loss, x, label, None, np.array([1.0, 1.0, bad]), sample=2)
    for bad in (np.nan, np.inf):  # a length that does not round to an integer at all
        with pytest.raises(ValueError):
            loss(x, label, None, np.array([1.0, 1.0, bad]))
    loss(x, label, np.array([4.0, 4.4999, -0.4]))  # rounds into [0, T]: fine
    loss(x, label, None, np.array([2.4, -0.3, 1.0]))  # rounds into [0, Lw]


@pytest.mark.parametrize("blank_label", BLANKS)
def test_bad_label_values_name_the_sample(blank_label):
    x = np.zeros((3, 5, 4))
    loss = nl.CTCLoss(blank_label=blank_label)
    p = float(_pad(blank_label))
    ok = 1.0
    bads = [4.0, 3.5, -2.0, np.nan, np.inf, -np.inf, 1e10]
    bads += [-1.0] if blank_label == "first" else [-1.6]
    for bad in bads:
        lab = np.array([[ok, ok, p], [ok, bad, p], [ok, p, p]])
        _err(loss, x, lab, sample=1)
    # -1 (or any value outside the alphabet) inside an explicit label length
    lab = np.array([[ok, ok, ok], [ok, -1.0, ok], [ok, ok, ok]])
    _err(loss, x, lab, None, np.array([3.0, 3.0, 3.0]), sample=1)
    loss(x, lab, None, np.array([3.0, 1.0, 3.0]))  # not used: fine
    # anything after the first padding value (or after the length) is never read
    lab = np.array([[ok, p, np.nan], [ok, p, 99.0], [p, -7.0, np.inf]])
    assert np.isfinite(loss(x, lab)).all()
    assert np.isfinite(loss(x, np.array([[ok, np.nan, 9.0]] * 3), None, np.ones(3))).all()
    loss(x, np.array([[3.4, 3.0, p]] * 3))  # rounds to 3 = C - 1: in the alphabet


def test_shape_errors():
    x = np.zeros((2, 4, 3))
    label = np.array([[0, 1], [1, -1]], np.float64)
    loss = nl.CTCLoss()
    with pytest.raises(ValueError, match="exceed"):  # MXNet: max number of labels vs sequence length
        loss(x, np.zeros((2, 5)))
    loss(x, np.full((2, 4), -1.0))  # Lw == T is fine
    with pytest.raises(ValueError):
        nl.CTCLoss("TNC")(x, label)  # (2, 4, 3) read as T = 2 frames, N = 4: batch mismatch
    for bad_args in [
        (x[0], label),
        (x[None], label),
        (x, label[0]),
        (x, label[None]),
        (x, np.zeros((3, 2))),
        (x, label, np.array([4.0])),
        (x, label, np.array([[4.0], [4.0]])),
        (x, label, None, np.array([1.0, 1.0, 1.0])),
        (x, label, None, np.array([[1.0, 1.0]])),
    ]:
        with pytest.raises(ValueError):
            loss(*bad_args)
    with pytest.raises(ValueError):
        nl.CTCLoss(label_layout="TN")(x, label.T[:, :1])


def test_constructor_checks():
    for kw in [{"layout": "NCT"}, {"layout": "ntc"}, {"label_layout": "TNC"}, {"label_layout": "NTC"}]:
        with pytest.raises(AssertionError):
            nl.CTCLoss(**kw)
    with pytest.raises(ValueError):
        nl.CTCLoss(blank_label="middle")
    nl.CTCLoss("TNC", "TN", 0.5, prefix="ctc_")  # gluon's kwargs are ignored


def test_float16_input_gives_float16_output():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((3, 6, 4)).astype(np.float16)
    label = np.array([[0, 1, -1], [2, 2, -1], [1, 0, 2]], np.float64)
    pl = np.array([6, 5, 4], np.float16)
    out, (g,) = nl.CTCLoss().forward_backward(x, label, pl)
    assert out.dtype == np.float16 and g.dtype == np.float16
    ref_out, ref_g = ref_ctc_loss(x, label, pl, dtype=np.float32)
    np.testing.assert_allclose(out.astype(np.float64), ref_out, rtol=2e-3)
    np.testing.assert_allclose(g.astype(np.float64), ref_g, rtol=2e-3, atol=2e-3)
    assert out.dtype == nl.CTCLoss()(x, label).dtype


def test_integer_labels_and_lengths_of_any_dtype():
    rng = np.random.default_rng(22)
    x = rng.standard_normal((3, 6, 5))
    label = np.array([[0, 1, 1, -1], [3, 2, -1, -1], [1, 1, 1, 2]])
    pl, ll = np.array([6, 4, 6]), np.array([3, 2, 4])
    expected = ref_ctc_loss(x, label, pl, ll)
    for ldt, pdt in [(np.int32, np.int64), (np.int64, np.float32), (np.float32, np.int16), (np.int8, np.uint8)]:
        out, (g,) = nl.CTCLoss().forward_backward(x, label.astype(ldt), pl.astype(pdt), ll.astype(ldt))
        np.testing.assert_allclose(out, expected[0], rtol=1e-12)
        np.testing.assert_allclose(g, expected[1], rtol=1e-12, atol=1e-15)


def test_zero_size_inputs_and_call_time_checks():
    loss = nl.CTCLoss()
    out, (g,) = loss.forward_backward(np.zeros((0, 4, 3)), np.zeros((0, 2)))
    assert out.shape == (0,) and g.shape == (0, 4, 3)  # N = 0: empty results (docs/semantics.rst section 1)
    x = np.random.default_rng(23).standard_normal((2, 4, 3))
    out, (g,) = loss.forward_backward(x, np.zeros((2, 0)))  # Lw = 0: every label empty
    np.testing.assert_allclose(out, -log_softmax(x)[..., 2].sum(axis=1), rtol=1e-12)
    out, (g,) = loss.forward_backward(np.zeros((2, 0, 3)), np.zeros((2, 0)))  # T = 0, L = 0: cost 0
    assert (out == 0).all() and g.shape == (2, 0, 3)
    with pytest.raises(AssertionError, match="weight must be a number"):  # at call time (docs/semantics.rst section 1)
        nl.CTCLoss(weight="2")(x, np.zeros((2, 1)))
    with pytest.raises(ValueError):
        loss.forward_backward(x, np.zeros((2, 1)), out_grad=np.ones(3))


# ----------------------------------------------------------------------------- CUDA vs CPU
def _cuda_helpers():
    from tests.test_cuda import dev, host  # skips when numba.cuda cannot be imported

    return dev, host


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout, label_layout", [("NTC", "NT"), ("TNC", "TN")])
def test_cuda_matches_cpu(dtype, layout, label_layout):
    dev, host = _cuda_helpers()
    rng = np.random.default_rng(19)
    n, t, c = 3, 5, 4
    x = rng.standard_normal((n, t, c))
    pl = np.array([5, 4.5, 2], np.float64)
    x[2, 2:] = np.nan
    label = np.array([[0, 0, 1], [2, -1, 5], [1, -1, -1]], np.float64)
    sw = rng.random(n) + 0.5
    head = rng.standard_normal(n)
    for blank_label, ll in [("last", None), ("first", np.array([3, 1, 0], np.float64))]:
        lab = label + (1 if blank_label == "first" else 0)
        args = [_pred(x, layout).astype(dtype), _label(lab, label_layout), pl, ll, sw]
        ctor = {"layout": layout, "label_layout": label_layout, "weight": 0.5, "blank_label": blank_label}
        loss = nl.CTCLoss(**ctor)
        cpu_out, (cpu_g,) = loss.forward_backward(*args, out_grad=head)
        dargs = [None if a is None else dev(a) for a in args]
        gpu_out, (gpu_g,) = loss.forward_backward(*dargs, out_grad=dev(head))
        rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)
        np.testing.assert_allclose(host(gpu_out), cpu_out, rtol=rtol, atol=atol)
        np.testing.assert_allclose(host(gpu_g), cpu_g, rtol=rtol, atol=atol)
        assert host(gpu_out).dtype == cpu_out.dtype and host(gpu_g).shape == cpu_g.shape
        np.testing.assert_allclose(host(loss(*dargs)), cpu_out, rtol=rtol, atol=atol)
        _assert_matches_ref(cpu_out, ref_ctc_loss(*args, **ctor, out_grad=head)[0], dtype, "cpu vs ref")
        for a, d in zip(args, dargs, strict=True):
            if a is not None:
                np.testing.assert_array_equal(host(d), a)


def test_cuda_strided_tnc_and_infeasible():
    dev, host = _cuda_helpers()
    rng = np.random.default_rng(20)
    t, n, c = 6, 2, 5
    big = rng.standard_normal((t, 2 * n, c)).astype(np.float32)
    label = np.array([[1, 1, 1, 1], [2, 3, -1, -1]], np.float64)  # sample 0 infeasible in 6 frames? 4+3 = 7 > 6
    for zi in (True, False):
        loss = nl.CTCLoss("TNC", zero_infinity=zi)
        cpu_out, (cpu_g,) = loss.forward_backward(big[:, ::2], label)
        gpu_out, (gpu_g,) = loss.forward_backward(dev(big)[:, ::2], dev(label))
        np.testing.assert_allclose(host(gpu_out), cpu_out, rtol=1e-5)
        np.testing.assert_allclose(host(gpu_g), cpu_g, rtol=1e-5, atol=1e-6)
        assert cpu_out[0] == (0.0 if zi else np.inf) and (cpu_g[:, 0] == 0).all()
        ref_out, ref_g = ref_ctc_loss(big[:, ::2], label, layout="TNC", zero_infinity=zi)
        _assert_matches_ref(cpu_out, ref_out, np.float32, "out")
        _assert_matches_ref(cpu_g, ref_g, np.float32, "dpred", cost=ref_out)


# ----------------------------------------------------------------------------- PyTorch
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_agrees_with_pytorch(layout):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    n, t, c, lw = 5, 9, 5, 4
    t_b = rng.integers(3, t + 1, size=n)
    t_b[0] = t
    seqs = _random_labels(rng, n, lw, c, "last", t_b)
    label = _padded(seqs, lw, "last")
    x = _activations(rng, n, t, c, "last")
    head = rng.standard_normal(n)
    xp = _pred(x, layout)
    out, (g,) = nl.CTCLoss(layout).forward_backward(xp, label, t_b.astype(np.float64), None, None, out_grad=head)

    xt = torch.tensor(x.transpose(1, 0, 2), dtype=torch.float64, requires_grad=True)  # (T, N, C)
    lengths = [len(s) for s in seqs]
    targets = torch.tensor(np.concatenate([s for s in seqs] + [np.zeros(0, np.int64)]), dtype=torch.long)
    cost = torch.nn.functional.ctc_loss(
        torch.log_softmax(xt, dim=2), targets, torch.tensor(t_b.tolist()), torch.tensor(lengths),
        blank=c - 1, reduction="none", zero_infinity=True,
    )  # fmt: skip
    (cost * torch.tensor(head)).sum().backward()
    np.testing.assert_allclose(out, cost.detach().numpy(), rtol=1e-10)
    tg = xt.grad.numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(g if layout == "NTC" else g.transpose(1, 0, 2), tg, rtol=1e-8, atol=1e-12)
    # float32 too
    out32 = nl.CTCLoss(layout)(xp.astype(np.float32), label, t_b.astype(np.float32))
    np.testing.assert_allclose(out32, cost.detach().numpy(), rtol=1e-5)


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_read_only_pred_forward_and_gradient(layout):
    """A read-only ``pred`` (a memory-mapped file, a broadcast view) is only read, with or without a gradient."""
    rng = np.random.default_rng(8)
    x = _pred(rng.standard_normal((3, 7, 5)), layout)
    label = np.array([[1, 2, -1], [3, 3, 1], [-1, -1, -1]], np.float64)
    x.setflags(write=False)
    _run_and_check({"layout": layout}, [x, label])


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_large_alphabet_gathers_in_the_frame_pass(layout):
    """Above 1024 classes the label log-probabilities are gathered by the first pass (another code path)."""
    rng = np.random.default_rng(13)
    n, t, c = 3, 12, 1100
    label = np.array([[5, 5, 1099, 0], [7, 1000, 7, -1], [-1, -1, -1, -1]], np.float64)
    x = _activations(rng, n, t, c, "last", scale=2.0)
    _run_and_check({"layout": layout}, [_pred(x, layout).astype(np.float32), label, np.array([12.0, 9.6, 5.0])])
