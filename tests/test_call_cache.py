"""What a call plans once per shape (cached) still checks every call, and the NumPy shortcuts of the weighting.

The class layout and the row shapes are cached per (shape, axis): a cached plan must never stand in for
a call whose arguments differ (types, shapes), errors must be raised on every call, and the one-loss-per-row
weighting done by NumPy must give the row kernel's bits.
"""

from __future__ import annotations

import numpy as np
import pytest

import numba_losses as nl
from numba_losses._core import weighting
from numba_losses._core.weighting import plan_rows
from numba_losses.kernels.registry import COMPUTED

RNG = np.random.default_rng(7)


def test_errors_are_raised_on_every_call_after_a_cached_plan():
    x, y = RNG.standard_normal((4, 3)).astype(np.float32), np.array([0, 1, 2, 1])
    nl.SoftmaxCELoss(axis=1)(x, y)
    for _ in range(2):
        with pytest.raises(ValueError, match="axis=2 is out of range"):
            nl.SoftmaxCELoss(axis=2)(x, y)
        with pytest.raises(ValueError, match="batch_axis=3 is out of range"):
            nl.L2Loss(batch_axis=3)(x, x)


def test_a_float_batch_axis_is_refused_even_when_the_int_one_is_cached():
    x = RNG.standard_normal((4, 3))
    nl.L2Loss(batch_axis=0)(x, x)
    with pytest.raises(TypeError, match="batch_axis must be an integer"):
        nl.L2Loss(batch_axis=0.0)(x, x)


def test_cached_plans_follow_the_shape():
    loss = nl.SoftmaxCELoss()
    for n, c in ((4, 3), (5, 3), (4, 6), (4, 3)):
        x = RNG.standard_normal((n, c))
        y = RNG.integers(0, c, n)
        lp = x - np.log(np.exp(x).sum(1, keepdims=True))
        np.testing.assert_allclose(loss(x, y), -lp[np.arange(n), y], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sw", [None, "rows", "one"])
def test_one_loss_per_row_weighting_matches_the_row_kernel(dtype, sw):
    n = 37
    loss = RNG.standard_normal((n, 1)).astype(dtype)
    weight = None if sw is None else RNG.standard_normal((n, 1) if sw == "rows" else (1,)).astype(np.float32)
    rows = plan_rows((n, 1), weight, 0.3, 0)
    assert weighting.one_per_row(rows)
    cdt = np.dtype(dtype)
    fast = np.empty(n, dtype)
    weighting.weigh_rows_host(rows, loss, weight, fast)
    fscale, coef = weighting.row_scales_host(rows, None, cdt)
    kernel = np.empty(n, dtype)
    x3 = loss.reshape(1, n, 1)
    weighting.run_rows_host(COMPUTED, x3, x3, None, None, cdt.type(0), cdt.type(0), fscale, coef, kernel, None, False)
    np.testing.assert_array_equal(fast, kernel)
    scale = 0.3 * (1.0 if weight is None else weight.reshape(-1).astype(np.float64))  # float64, rounded once
    np.testing.assert_array_equal(fast, (loss[:, 0].astype(np.float64) * scale).astype(dtype))
    head = RNG.standard_normal(n).astype(dtype)
    coef_rows = weighting.coef_rows_host(rows, (n, 1), weight, head, cdt)
    np.testing.assert_array_equal(coef_rows[:, 0], (scale * head.astype(np.float64)).astype(dtype))
    no_head = weighting.coef_rows_host(rows, (n, 1), weight, None, cdt)
    np.testing.assert_array_equal(no_head[:, 0], np.broadcast_to(scale, (n,)).astype(dtype))


def test_a_same_shape_out_grad_is_not_written_and_is_read():
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    y = RNG.integers(0, 4, 6)
    g = RNG.standard_normal(6).astype(np.float32)
    kept = g.copy()
    _, (dx,) = nl.SoftmaxCELoss().forward_backward(x, y, out_grad=g)
    _, (ones,) = nl.SoftmaxCELoss().forward_backward(x, y)
    np.testing.assert_array_equal(g, kept)
    np.testing.assert_allclose(dx, ones * g[:, None], rtol=1e-6)


def test_call_overhead_script_runs_every_case(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "asv_bench"))
    try:
        import call_overhead
    finally:
        sys.path.pop(0)
    results = call_overhead.main(["--smoke"])
    assert capsys.readouterr().out.strip() == "ok"
    assert list(results) == list(call_overhead.cases()) and all(us > 0 for us in results.values())
