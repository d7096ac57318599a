"""DLPack inputs in the dispatcher: PyTorch CPU tensors and JAX arrays read in place, results in their library.

Values are checked against NumPy formulas written here; the transport itself
(no copy, read-only views, results handed back, buffers refused) against the
producers' own memory addresses and types.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = jax.numpy

import numba_losses as nl  # noqa: E402
from numba_losses._core.interop import import_array  # noqa: E402
from tests.conftest import CUPY_ON_GPU  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5)).astype(np.float32)
Y = RNG.standard_normal((6, 5)).astype(np.float32)
CLASSES = RNG.integers(0, 5, 6)
JAX_CPU = jax.devices("cpu")[0]  # host arrays even where JAX's default device is a GPU


def jx(a):
    """A JAX array on the host."""
    return jax.device_put(np.asarray(a), JAX_CPU)


def l2_ref(x, y):
    """MXNet L2Loss: half the squared error, averaged over the non-batch axis; its gradient."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (0.5 * (x - y) ** 2).mean(axis=1), (x - y) / x.shape[1]


def softmax_ce_ref(x, classes):
    x = np.asarray(x, np.float64)
    lse = np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
    out = lse - x[np.arange(len(classes)), classes]
    p = np.exp(x - lse[:, None])
    p[np.arange(len(classes)), classes] -= 1
    return out, p


PRODUCERS = {
    "torch": (lambda a: torch.from_numpy(np.array(a)), torch.Tensor),
    "jax": (jx, jax.Array),
}


@pytest.mark.parametrize("lib", sorted(PRODUCERS))
def test_results_come_back_in_the_callers_library(lib):
    make, kind = PRODUCERS[lib]
    x, y = make(X), make(Y)
    out, (dx,) = nl.L2Loss().forward_backward(x, y)
    assert isinstance(out, kind) and isinstance(dx, kind)
    want_out, want_dx = l2_ref(X, Y)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=2e-6)
    assert isinstance(nl.L2Loss()(x, y), kind)
    (g,) = nl.L2Loss().backward(x, y, out_grad=make(np.full(6, 2.0, np.float32)))
    assert isinstance(g, kind)
    np.testing.assert_allclose(np.asarray(g), 2 * want_dx, rtol=2e-6)
    np.testing.assert_array_equal(np.asarray(x), X)  # inputs never written
    np.testing.assert_array_equal(np.asarray(y), Y)


@pytest.mark.parametrize("lib", sorted(PRODUCERS))
def test_integer_labels_and_softmax(lib):
    make, kind = PRODUCERS[lib]
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(make(X), make(CLASSES.astype(np.int32)))
    want_out, want_dx = softmax_ce_ref(X, CLASSES)
    assert isinstance(out, kind) and isinstance(dx, kind)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-5, atol=1e-7)


def test_float64_stays_float64():
    out, (dx,) = nl.L2Loss().forward_backward(torch.from_numpy(X.astype(np.float64)), torch.from_numpy(Y + 0.0))
    assert out.dtype == torch.float64 and dx.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), l2_ref(X, Y)[0], rtol=1e-12)


def test_strided_torch_view_is_read_through_its_strides():
    big = torch.from_numpy(np.ascontiguousarray(X.T))  # (5, 6); .T is a (6, 5) view with strides (4, 24)
    view = big.T
    assert not view.is_contiguous()
    out = nl.L2Loss()(view, torch.from_numpy(Y))
    np.testing.assert_allclose(out.numpy(), l2_ref(X, Y)[0], rtol=2e-6)


def test_host_import_is_zero_copy_and_jax_views_read_only():
    t = torch.from_numpy(X.copy())
    a = import_array("pred", t)
    assert isinstance(a, np.ndarray) and a.ctypes.data == t.data_ptr()
    j = jx(X)
    b = import_array("pred", j)
    assert b.ctypes.data == j.unsafe_buffer_pointer() and not b.flags.writeable


def test_first_array_input_decides_the_result_type():
    out = nl.L2Loss()(X, jx(Y))  # NumPy pred: NumPy results
    assert type(out) is np.ndarray
    out = nl.L2Loss()(jx(X), Y)
    assert isinstance(out, jax.Array)
    out = nl.L2Loss()(torch.from_numpy(X), jx(Y))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), l2_ref(X, Y)[0], rtol=2e-6)


def test_numpy_buffers_are_filled_and_returned():
    out_buf, grad_buf = np.empty(6, np.float32), np.empty((6, 5), np.float32)
    out, (dx,) = nl.L2Loss().forward_backward(torch.from_numpy(X), torch.from_numpy(Y), out=out_buf, grad_out=grad_buf)
    assert out is out_buf and dx is grad_buf
    np.testing.assert_allclose(out_buf, l2_ref(X, Y)[0], rtol=2e-6)


@pytest.mark.parametrize("lib", sorted(PRODUCERS))
def test_dlpack_buffers_are_refused(lib):
    make, _ = PRODUCERS[lib]
    with pytest.raises(TypeError, match="^out must be a writable numpy.ndarray"):
        nl.L2Loss()(make(X), make(Y), out=make(np.empty(6, np.float32)))
    with pytest.raises(TypeError, match="^grad_out must be a writable numpy.ndarray"):
        nl.L2Loss().forward_backward(X, make(Y), grad_out=make(np.empty((6, 5), np.float32)))


def test_tensor_that_requires_grad_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^label: .*detach"):
        nl.L2Loss()(torch.from_numpy(X), torch.from_numpy(Y).requires_grad_())


def test_dtype_numpy_cannot_hold_is_refused_by_name():
    with pytest.raises(TypeError, match="^pred: cannot read this torch array through DLPack"):
        nl.L2Loss()(torch.from_numpy(X).to(torch.bfloat16), Y)


class _ForeignDevice:
    """A DLPack producer on another device (no GPU here: only the device query is answered)."""

    def __init__(self, device_type: int) -> None:
        self.device_type = device_type

    def __dlpack_device__(self):
        return (self.device_type, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be exported before the device is checked")


def test_cuda_dlpack_without_cupy_says_what_to_install():
    pytest.importorskip("numba")
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed: the CUDA DLPack path would run")
    except ImportError:
        pass
    with pytest.raises(TypeError, match=r"^pred: .*CuPy, which is not installed \(pip install"):
        nl.L2Loss()(_ForeignDevice(2), Y)


def test_unsupported_device_is_refused():
    with pytest.raises(TypeError, match="^label: arrays on kDLMetal are not supported"):
        nl.L2Loss()(X, _ForeignDevice(8))


@pytest.mark.parametrize("normalization", ["null", "valid"])
def test_makeloss_with_jax_inputs(normalization):
    m = nl.MakeLoss(nl.L2Loss(), grad_scale=2.0, valid_thresh=0.5, normalization=normalization)
    out, (dx,) = m.forward_backward(jx(X), jx(Y))
    want_out, want_dx = l2_ref(X, Y)
    c = 2.0 if normalization == "null" else 2.0 / max(1, int((want_out > 0.5).sum()))
    assert isinstance(out, jax.Array) and isinstance(dx, jax.Array)
    np.testing.assert_allclose(np.asarray(dx), c * want_dx, rtol=2e-6)


@pytest.mark.parametrize(
    "loss, args",
    [
        (nl.TripletLoss(), (X, Y, X[::-1].copy())),
        (nl.CosineEmbeddingLoss(), (X, Y, np.array([1, -1, 1, 1, -1, 1], np.float32))),
        (nl.SDMLLoss(), (X, Y)),
        (nl.CTCLoss(), (RNG.standard_normal((2, 6, 4)).astype(np.float32), np.array([[1, 2], [0, 0]], np.float32))),
        (nl.SigmoidBCELoss(), (X, (Y > 0).astype(np.float32), None, np.float32(2.0) * np.ones(5, np.float32))),
    ],
    ids=["triplet", "cosine", "sdml", "ctc", "bce_pos_weight"],
)
@pytest.mark.parametrize("lib", sorted(PRODUCERS))
def test_every_family_reads_dlpack_inputs_like_numpy(loss, args, lib):
    """The transport only: the same call on NumPy arrays (checked against references elsewhere)."""
    make, kind = PRODUCERS[lib]
    want_out, want_grads = loss.forward_backward(*args)
    out, grads = loss.forward_backward(*(None if a is None else make(a) for a in args))
    assert isinstance(out, kind) and all(isinstance(g, kind) for g in grads)
    np.testing.assert_array_equal(np.asarray(out), want_out)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)


JAX_GPUS = [d for d in jax.devices() if d.platform == "gpu"]


@pytest.mark.skipif(not (JAX_GPUS and CUPY_ON_GPU), reason="needs JAX with a GPU backend and CuPy")
def test_jax_arrays_on_a_gpu_run_on_the_gpu_and_come_back_as_jax_arrays():
    gpu = JAX_GPUS[0]
    x, y = jax.device_put(X, gpu), jax.device_put(Y, gpu)
    out, (dx,) = nl.L2Loss().forward_backward(x, y)
    assert isinstance(out, jax.Array) and isinstance(dx, jax.Array)
    assert out.devices() == {gpu} and dx.devices() == {gpu}
    want_out, want_dx = l2_ref(X, Y)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=2e-6)
    labels = jax.device_put(CLASSES.astype(np.int32), gpu)
    out, (dx,) = nl.SoftmaxCELoss().forward_backward(x, labels)
    want_out, want_dx = softmax_ce_ref(X, CLASSES)
    assert out.devices() == {gpu}
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=2e-5, atol=1e-7)
    # an input computed by JAX just before the call (still queued on JAX's stream) is read after it is written
    z = jax.jit(lambda a: a * 2.0 + 1.0)(x)
    np.testing.assert_allclose(np.asarray(nl.L2Loss()(z, y)), l2_ref(2 * X + 1, Y)[0], rtol=2e-6)
    with pytest.raises(TypeError, match="^out must be a writable numpy.ndarray"):
        nl.L2Loss()(x, y, out=jax.device_put(np.empty(6, np.float32), gpu))
