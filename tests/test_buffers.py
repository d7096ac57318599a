"""Output buffers never alias an input or each other (every loss, one rule: ValueError).

The check is by memory bounds (``np.may_share_memory``), so a view of an
input shifted by one element is caught, not only the input itself.
"""

from __future__ import annotations

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
