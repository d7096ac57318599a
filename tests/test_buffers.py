"""Output buffers never alias an input or each other (every loss, one rule: ValueError).

The check is by memory bounds (``np.may_share_memory``), so a view of an
input shifted by one element is caught, not only the input itself.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import numba_losses as nl

RNG = np.random.default_rng(11)


def test_out_overlapping_an_input_with_an_offset_is_refused():
    x = RNG.standard_normal((4, 5))
    y = RNG.standard_normal((4, 5))
    backing = np.empty(x.size + 1)
    backing[1:] = x.ravel()
    x_view = backing[1:].reshape(4, 5)
    with pytest.raises(ValueError, match="out must not share memory with the inputs.*overlaps pred"):
        nl.L2Loss()(x_view, y, out=backing[:4])


def test_grad_out_overlapping_sample_weight_or_pos_weight_is_refused():
    x, y = RNG.standard_normal((4, 5)), (RNG.random((4, 5)) > 0.5).astype(float)
    sw = np.ones((4, 5))
    with pytest.raises(ValueError, match="grad_out must not share memory.*overlaps sample_weight"):
        nl.L2Loss().forward_backward(x, y, sw, grad_out=sw)
    pw = np.ones((4, 5))
    with pytest.raises(ValueError, match="grad_out must not share memory.*overlaps pos_weight"):
        nl.SigmoidBCELoss().forward_backward(x, y, None, pw, grad_out=pw)


def test_out_and_grad_out_sharing_memory_are_refused():
    x, y = RNG.standard_normal((4, 5)), RNG.standard_normal((4, 5))
    buf = np.empty((4, 5))
    with pytest.raises(ValueError, match="output buffers must not share memory"):
        nl.L2Loss().forward_backward(x, y, out=buf.ravel()[:4], grad_out=buf)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_kldiv_from_logits_false_unfused_path_checks_every_buffer(dtype):
    """KLDivLoss(from_logits=False) with a broadcast label runs the elementwise term on log-probabilities
    (and, for float16 results, on float32 copies): the caller's buffers are still checked against the
    caller's inputs and each other, before anything is written."""
    x = (np.arange(12.0).reshape(3, 4) / 10).astype(dtype)
    y = np.full((1, 4), 0.25, dtype)
    sw = np.ones((3, 4), dtype)
    kept = x.copy(), y.copy(), sw.copy()
    loss = nl.KLDivLoss(from_logits=False)
    with pytest.raises(ValueError, match="out must not share memory.*overlaps pred"):
        loss(x, y, out=x[0, :3])
    with pytest.raises(ValueError, match="grad_out must not share memory.*overlaps sample_weight"):
        loss.forward_backward(x, y, sw, grad_out=sw)
    with pytest.raises(ValueError, match="grad_out must not share memory.*overlaps label"):
        dense = np.full((3, 4), 0.25, dtype)  # with a weight per class: still the unfused path
        loss.forward_backward(x, dense, sw, grad_out=dense)
    buf = np.zeros(12, dtype)
    with pytest.raises(ValueError, match="output buffers must not share memory"):
        loss.forward_backward(x, y, out=buf[:3], grad_out=buf.reshape(3, 4))
    for a, b in zip((x, y, sw), kept, strict=True):
        np.testing.assert_array_equal(a, b)
    out, g = np.empty(3, dtype), np.empty((3, 4), dtype)  # distinct buffers: filled, the plain call's values
    value, (grad,) = loss.forward_backward(x, y, out=out, grad_out=g)
    want_value, (want_grad,) = loss.forward_backward(x, y)
    assert value is out and grad is g
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize(
    ("loss", "args", "grad_out"),
    [
        (nl.TripletLoss(), (np.ones((4, 3)), np.zeros((4, 3)), np.ones((4, 3))), "same-twice-3"),
        (nl.CosineEmbeddingLoss(), (np.ones((4, 3)), np.arange(12.0).reshape(4, 3), np.ones(4)), "same-twice-2"),
        (nl.SDMLLoss(), (np.ones((4, 3)), np.arange(12.0).reshape(4, 3)), "same-twice-2"),
    ],
)
def test_one_buffer_given_twice_in_grad_out_is_refused(loss, args, grad_out):
    buf = np.empty((4, 3))
    bufs = (buf, buf, None) if grad_out.endswith("3") else (buf, buf)
    with pytest.raises(ValueError, match="output buffers must not share memory"):
        loss.forward_backward(*args, grad_out=bufs)


def test_distinct_buffers_are_filled_in_place():
    x, p, n = (RNG.standard_normal((4, 3)) for _ in range(3))
    out, bufs = np.empty(4), tuple(np.empty((4, 3)) for _ in range(3))
    value, grads = nl.TripletLoss().forward_backward(x, p, n, out=out, grad_out=bufs)
    assert value is out and all(g is b for g, b in zip(grads, bufs, strict=True))
    ref_value, ref_grads = nl.TripletLoss().forward_backward(x, p, n)
    np.testing.assert_array_equal(out, ref_value)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_array_equal(g, r)


def test_scratch_arrays_are_kept_per_key_shape_dtype_and_thread():
    import threading

    from numba_losses._core import buffers

    a = buffers.host_scratch("test.a", (64, 32), np.float32)
    assert buffers.host_scratch("test.a", (64, 32), np.float32) is a
    assert buffers.host_scratch("test.b", (64, 32), np.float32) is not a
    assert buffers.host_scratch("test.a", (64, 32), np.float64) is not a  # replaces the kept one
    assert buffers.host_scratch("test.a", (64, 32), np.float32) is not a
    big = (buffers.SCRATCH_KEEP_BELOW // 4,)
    assert buffers.host_scratch("test.c", big, np.float32) is not buffers.host_scratch("test.c", big, np.float32)
    mine = buffers.host_scratch("test.d", (8,), np.float64)
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(buffers.host_scratch("test.d", (8,), np.float64)))
    worker.start()
    worker.join()
    assert theirs[0] is not mine


def test_losses_with_kept_scratch_stay_right_across_shapes():
    # SDMLLoss and the unfused KLDivLoss path keep their scratch between calls: calls of other
    # shapes in between must not leak into a later call's result.
    from tests.reference.softmax import ref_kldiv_softmax

    rng = np.random.default_rng(5)
    loss = nl.SDMLLoss()
    first = [rng.standard_normal((6, 3)) for _ in range(2)]
    want = loss.forward_backward(*first)
    loss.forward_backward(rng.standard_normal((9, 3)), rng.standard_normal((9, 3)))
    loss(rng.standard_normal((6, 4)), rng.standard_normal((6, 4)))
    got = loss.forward_backward(*first)
    np.testing.assert_array_equal(got[0], want[0])
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_array_equal(g, w)
    kl = nl.KLDivLoss(from_logits=False)
    for shape in [(3, 4, 5), (2, 4, 5), (3, 4, 5)]:
        x, y = rng.standard_normal(shape), rng.random((4, 5))  # a broadcast label: the unfused path
        out, (dx,) = kl.forward_backward(x, y)
        ref_out, ref_dx = ref_kldiv_softmax(x, y)
        np.testing.assert_allclose(out, ref_out, rtol=1e-12)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-14)


def _alone_then_in_two_threads(check, n_cases):
    """``check(order, errors)`` over every case in order, then in two threads at once (opposite
    orders, twice over); fails with the first error collected."""
    errors: list = []
    check(range(n_cases), errors)
    order = list(range(n_cases)) * 2
    threads = [threading.Thread(target=check, args=(o, errors)) for o in (order, order[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_kernels_scratch_is_right_across_shapes_and_threads(dtype):
    # The row kernels take their block buffers and partial sums from per-thread scratch, kept
    # between calls: long rows (cut into chunks, partial sums), short rows (grouped) and one element
    # per row, alternated, in two threads at once, must each give the float64 reference.
    rng = np.random.default_rng(9)
    shapes = [(3, 150_001), (40, 7), (50_000,), (3, 150_001), (2, 3, 40_000), (40, 7)]
    cases = []
    for shape in shapes:
        x, y = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
        d = (x.astype(np.float64) - y).reshape(shape[0], -1)  # the reference from the same values, in float64
        cases.append((x, y, (d * d).mean(axis=1) / 2, d.reshape(shape) / d.shape[1]))
    rtol = 1e-5 if dtype == np.float32 else 1e-12

    def check(order, errors):
        loss = nl.L2Loss()
        try:
            for i in order:
                x, y, want, want_dx = cases[i]
                out, (dx,) = loss.forward_backward(x, y)
                np.testing.assert_allclose(out, want, rtol=rtol)
                np.testing.assert_allclose(dx, want_dx, rtol=rtol, atol=1e-7)
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _alone_then_in_two_threads(check, len(cases))


def test_row_kernels_block_buffers_do_not_grow_with_the_input():
    # One block buffer per thread of Numba's pool, whatever the number of tasks: (1000, 1000, 1000)
    # inputs make a million tasks, whose own buffers would be half the input's size.
    import numba

    from numba_losses.kernels.cpu.elementwise import BLOCK, scratch_shapes

    for shape3 in [(1000, 1000, 1000), (1, 4096, 4096), (3, 2, 200_000)]:
        bufs, partial = scratch_shapes(shape3)
        assert bufs == (numba.config.NUMBA_NUM_THREADS, BLOCK)
        assert partial[0] * partial[1] <= shape3[1] * shape3[0] * (shape3[2] // 65536 + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_kernels_are_right_across_class_counts_and_threads(dtype):
    # The class-last softmax kernels (cross-entropy, and the log-softmax pair of the unfused
    # KLDivLoss) hold a block buffer, the per-block maxima of a row and a float64 buffer per
    # task: class counts that change the number of blocks, small (serial) and large (parallel)
    # inputs, label smoothing, alternated in two threads at once, must each give the float64
    # reference.
    from tests.reference.softmax import ref_kldiv_softmax, ref_softmax_ce

    rng = np.random.default_rng(13)
    shapes = [(64, 10), (300, 1000), (7, 5000), (200, 257), (64, 10), (40, 1000)]
    cases = []
    for i, (n, c) in enumerate(shapes):
        x = (3 * rng.standard_normal((n, c))).astype(dtype)
        label = rng.integers(0, c, n).astype(dtype)
        probs = rng.random((c,))  # one label row broadcast over the batch: KLDivLoss's unfused path
        probs /= probs.sum()
        eps = 0.1 if i % 2 else 0.0
        want = ref_softmax_ce(x.astype(np.float64), label, eps=eps)
        cases.append((x, label, eps, want, probs.astype(dtype), ref_kldiv_softmax(x.astype(np.float64), probs)))
    rtol = 2e-5 if dtype == np.float32 else 1e-11

    def check(order, errors):
        try:
            for i in order:
                x, label, eps, (want, want_dx), probs, (kl_want, kl_dx) = cases[i]
                out, (dx,) = nl.SoftmaxCELoss(label_smoothing=eps).forward_backward(x, label)
                np.testing.assert_allclose(out, want, rtol=rtol)
                np.testing.assert_allclose(dx, want_dx, rtol=rtol, atol=1e-7)
                out, (dx,) = nl.KLDivLoss(from_logits=False).forward_backward(x, probs)
                np.testing.assert_allclose(out, kl_want, rtol=rtol, atol=1e-7)
                np.testing.assert_allclose(dx, kl_dx, rtol=rtol, atol=1e-7)
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _alone_then_in_two_threads(check, len(cases))


def test_kept_unit_weights_stay_ones():
    # Triplet, Cosine and SDML read a kept array of ones (per size and dtype) as their unit
    # weights and head gradient; no call may write into it, whatever the inputs and buffers.
    from numba_losses._core.buffers import host_ones

    rng = np.random.default_rng(17)
    for dtype in (np.float32, np.float64):
        a, p, n = (rng.standard_normal((6, 4)).astype(dtype) for _ in range(3))
        label = np.array([1, -1, 1, 1, -1, 0], dtype=dtype)
        weights = rng.random((6, 1)).astype(dtype)
        for _ in range(2):
            nl.TripletLoss().forward_backward(a, p, n)
            nl.TripletLoss().forward_backward(a, p, n, out_grad=2 * np.ones(6, dtype))
            nl.CosineEmbeddingLoss().forward_backward(a, p, label)
            nl.CosineEmbeddingLoss().forward_backward(a, p, label, weights)
            nl.SDMLLoss().forward_backward(a, p)
        ones = host_ones(6, np.dtype(dtype))
        assert ones.dtype == dtype and np.array_equal(ones, np.ones(6, dtype))
