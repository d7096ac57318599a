"""MXNet's MakeLoss: the wrapper around any loss and make_loss on raw arrays, CPU and CUDA.

The CUDA half runs on device arrays: a real GPU when there is one, else Numba's
simulator (see conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import numba_losses as nl
from tests.test_cuda import dev, host
from tests.test_custom import xent_grad, xent_value

RNG = np.random.default_rng(5)


def test_mxnet_makeloss_page_example_with_batch_normalization():
    """-(label log(out) + (1-label) log(1-out)) through MakeLoss(normalization='batch')."""
    XEnt = nl.elementwise_loss(xent_value, xent_grad, name="CrossEntropy")
    out = RNG.uniform(0.05, 0.95, (8, 3))
    label = (RNG.random((8, 3)) > 0.5).astype(np.float64)
    m = nl.MakeLoss(XEnt(), normalization="batch", grad_scale=0.5)
    value, (g,) = m.forward_backward(out, label, out_grad=np.full(8, 123.0))  # head ignored
    expected = np.mean(-(label * np.log(out) + (1 - label) * np.log(1 - out)), axis=1)
    np.testing.assert_allclose(value, expected, rtol=1e-13)
    # 1-D loss output: B = 1, every row's gradient scaled by grad_scale
    np.testing.assert_allclose(g, 0.5 * -(label / out - (1 - label) / (1 - out)) / 3, rtol=1e-13)
    d_value, (d_g,) = m.forward_backward(dev(out), dev(label))
    np.testing.assert_allclose(host(d_value), expected, rtol=1e-13)
    np.testing.assert_allclose(host(d_g), g, rtol=1e-13)


def test_makeloss_rejects_unknown_normalization_and_non_losses():
    with pytest.raises(ValueError, match="'null', 'batch', 'valid'"):
        nl.MakeLoss(nl.L2Loss(), normalization="mean")
    with pytest.raises(ValueError, match="'null', 'batch', 'valid'"):
        nl.make_loss(np.ones(3), normalization="sum")
    with pytest.raises(TypeError, match="wraps a numba_losses Loss"):
        nl.MakeLoss(lambda x: x)
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        nl.make_loss(np.ones(3, dtype=np.int32))


def test_make_loss_valid_count_saturates_like_the_data_dtype():
    # float16 stops counting at 2048: MXNet's reduction accumulates in the data dtype
    x = np.ones(3000, dtype=np.float16)
    _, head = nl.make_loss(x, normalization="valid")
    assert head[0] == np.float16(1) / np.float16(2048)
    _, head = nl.make_loss(x.astype(np.float32), normalization="valid")
    assert head[0] == np.float32(1) / np.float32(3000)


def test_makeloss_is_fused_for_null_and_batch():
    calls = []

    class Spy(nl.L2Loss):
        def _run(self, call):
            calls.append((call.want_value, call.want_grad))
            return super()._run(call)

    x, y = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    nl.MakeLoss(Spy(), normalization="batch").forward_backward(x, y)
    assert calls == [(True, True)]  # one fused pass
    calls.clear()
    nl.MakeLoss(Spy(), normalization="valid").forward_backward(x, y)
    assert calls == [(True, False), (False, True)]  # forward, count, backward


@pytest.mark.parametrize("normalization", ["null", "valid"])
def test_makeloss_passes_buffers_to_the_wrapped_loss(normalization):
    x, y = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    out, grad = np.empty(3), np.empty((3, 4))
    m = nl.MakeLoss(nl.L1Loss(), normalization=normalization, valid_thresh=0.5)
    o, (g,) = m.forward_backward(x, y, out=out, grad_out=grad)
    assert o is out and g is grad
    ref_o, (ref_g,) = m.forward_backward(x, y)
    np.testing.assert_array_equal(out, ref_o)
    np.testing.assert_array_equal(grad, ref_g)
