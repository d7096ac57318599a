"""The CUDA backend: golden cases, agreement with the CPU, layouts, dtypes, errors.

Runs for real on a GPU (CuPy arrays when CuPy is installed, else Numba device
arrays) and in Numba's simulator elsewhere (``tests/conftest.py`` switches it
on when no GPU is found; shapes stay small there). The simulator exercises the
shared-memory group sum; the shuffle path is compiled to PTX by
``test_ptx.py`` and runs here on a GPU.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import numba_losses as nl
from numba_losses._core.device import DeviceArray, same_device
from numba_losses._core.request import is_device_array
from tests.conftest import CUPY_ON_GPU, SIMULATED
from tests.test_golden import _assert_close, _cases, load_case

cuda = pytest.importorskip("numba.cuda")
if not SIMULATED and not cuda.is_available():
    pytest.skip("no CUDA device and the simulator is off", allow_module_level=True)

HAS_TORCH_CUDA = False
if not SIMULATED and importlib.util.find_spec("torch") is not None:
    import torch

    HAS_TORCH_CUDA = torch.cuda.is_available()


def dev(a, library=None):
    """A device copy of a NumPy array (CuPy on a GPU with CuPy, else Numba); scalars pass through."""
    if not isinstance(a, np.ndarray):
        return a
    library = library or ("cupy" if CUPY_ON_GPU else "numba")
    if library == "cupy":
        import cupy

        return cupy.asarray(a)
    if library == "torch":
        return torch.from_numpy(np.ascontiguousarray(a)).cuda()
    return cuda.to_device(np.ascontiguousarray(a))


def host(a):
    if hasattr(a, "get"):
        return a.get()
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    if type(a).__module__.startswith("torch"):
        return a.cpu().numpy()
    return np.asarray(a)


# ------------------------------------------------------------------------------ golden
@pytest.mark.parametrize("case", list(_cases()))
def test_golden_case_on_cuda(case):
    c = load_case(case)
    args, kwargs, head, expected_out, expected_grads = c.args, c.kwargs, c.head, c.expected_out, c.expected_grads
    rtol, atol, allow_scalar = c.rtol, c.atol, c.allow_scalar
    dargs = [dev(a) for a in args]
    dkwargs = {k: dev(v) for k, v in kwargs.items()}

    loss = getattr(nl, case["loss"])(**case["ctor_kwargs"])
    out = loss(*dargs, **dkwargs)
    assert is_device_array(out)
    _assert_close(host(out), expected_out, rtol, atol, allow_scalar)
    out, grads = loss.forward_backward(*dargs, out_grad=dev(head), **dkwargs)
    _assert_close(host(out), expected_out, rtol, atol, allow_scalar, "forward_backward out")
    for name, g, e in zip(case["differentiable"], grads, expected_grads, strict=True):
        assert is_device_array(g)
        _assert_close(host(g), e, rtol, atol, what=f"grad[{name}]")
    for a, d in zip(args, dargs, strict=True):
        np.testing.assert_array_equal(host(d), a)  # inputs untouched


@pytest.mark.parametrize("case", list(_cases("makeloss")))
def test_golden_makeloss_case_on_cuda(case):
    c = load_case(case)
    m = nl.MakeLoss(getattr(nl, case["loss"])(**case["ctor_kwargs"]), **case["make_loss_kwargs"])
    out, grads = m.forward_backward(*[dev(a) for a in c.args], **{k: dev(v) for k, v in c.kwargs.items()})
    _assert_close(host(out), c.expected_out, c.rtol, c.atol, c.allow_scalar)
    for name, g, e in zip(case["differentiable"], grads, c.expected_grads, strict=True):
        assert is_device_array(g)
        _assert_close(host(g), e, c.rtol, c.atol, what=f"grad[{name}]")


@pytest.mark.parametrize("case", list(_cases("make_loss_raw")))
def test_golden_make_loss_case_on_cuda(case):
    c = load_case(case)
    x = dev(c.args[0])
    y, head = nl.make_loss(x, **case["make_loss_kwargs"])
    assert is_device_array(y) and is_device_array(head)
    _assert_close(host(y), c.expected_out, c.rtol, c.atol)
    _assert_close(host(head), c.expected_grads[0], c.rtol, c.atol, what="head")


def test_make_loss_valid_count_on_strided_device_data():
    x = np.array([[0.5, -1.0, 2.0], [np.nan, 0.25, 3.0]], np.float32)
    y, head = nl.make_loss(dev(x)[:, ::2], grad_scale=2.0, normalization="valid", valid_thresh=0.25)
    np.testing.assert_array_equal(host(y), x[:, ::2])
    np.testing.assert_array_equal(host(head), np.full((2, 2), np.float32(2.0) / np.float32(3)))


# ------------------------------------------------------------------- agreement with CPU
RNG = np.random.default_rng(7)


def _data(shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _both(loss, args, kwargs=None, dargs=None, out_grad=None):
    """forward_backward on the CPU and on the device; returns both (out, grads) as NumPy."""
    kwargs = kwargs or {}
    c_out, c_g = loss.forward_backward(*args, out_grad=out_grad, **kwargs)
    dargs = dargs if dargs is not None else [dev(a) for a in args]
    d_out, d_g = loss.forward_backward(*dargs, out_grad=dev(out_grad), **{k: dev(v) for k, v in kwargs.items()})
    return (c_out, c_g), (host(d_out), tuple(host(g) for g in d_g))


def _assert_same(cpu, gpu, rtol=2e-6, atol=1e-7):
    (co, cg), (go, gg) = cpu, gpu
    assert go.dtype == co.dtype and go.shape == co.shape
    np.testing.assert_allclose(go.astype(np.float64), co.astype(np.float64), rtol=rtol, atol=atol)
    for c, g in zip(cg, gg, strict=True):
        assert g.dtype == c.dtype and g.shape == c.shape
        np.testing.assert_allclose(g.astype(np.float64), c.astype(np.float64), rtol=rtol, atol=atol)


LOSSES = [
    nl.L2Loss(),
    nl.L1Loss(weight=0.5),
    nl.HuberLoss(rho=0.7),
    nl.HingeLoss(margin=1.5),
    nl.SquaredHingeLoss(),
    nl.LogisticLoss(),
    nl.SigmoidBCELoss(),
    nl.SigmoidBCELoss(from_sigmoid=True),
    nl.PoissonNLLLoss(),
    nl.PoissonNLLLoss(from_logits=False, compute_full=True),
    nl.KLDivLoss(),
]


def _inputs_for(loss, shape, dtype=np.float32):
    x = _data(shape, dtype)
    y = _data(shape, dtype)
    name = type(loss).__name__
    if name in ("HingeLoss", "SquaredHingeLoss", "LogisticLoss"):
        y = np.sign(y).astype(dtype)
    elif name == "SigmoidBinaryCrossEntropyLoss":
        y = (y > 0).astype(dtype)
        if loss._from_sigmoid:
            x = 1 / (1 + np.exp(-x))
    elif name == "PoissonNLLLoss":
        y = np.abs(y).round().astype(dtype)
        x = np.abs(x) + np.asarray(0.1, dtype)
    return x, y


@pytest.mark.parametrize("loss", LOSSES, ids=lambda v: repr(v))
@pytest.mark.parametrize("shape", [(3, 5), (1, 200), (7,), (2, 3, 4)])
def test_matches_cpu(loss, shape):
    x, y = _inputs_for(loss, shape)
    cpu, gpu = _both(loss, [x, y], out_grad=_data(np.shape(loss(x, y))))
    _assert_same(cpu, gpu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_infinite_predictions_as_on_the_cpu(dtype):
    """NaN and infinite logits go through the exponentials (whose Python form the simulator runs) as on the
    CPU: NaN where the CPU gives NaN, the same finite values elsewhere."""
    x = np.array([[np.nan, 0.5, np.inf], [-np.inf, 2.0, -1.0]], dtype)
    y = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype)
    for loss in (nl.LogisticLoss(), nl.LogisticLoss(label_format="binary"), nl.SigmoidBCELoss(), nl.PoissonNLLLoss()):
        cpu, gpu = _both(loss, [x, y])
        _assert_same(cpu, gpu, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dtypes_follow_cpu(dtype):
    x, y = _data((4, 6), dtype), _data((4, 6), dtype)
    cpu, gpu = _both(nl.HuberLoss(), [x, y])
    tol = {np.float16: 1e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    _assert_same(cpu, gpu, rtol=tol, atol=tol)


def test_integer_and_bool_labels_are_converted_on_load():
    x = _data((4, 5))
    cpu, gpu = _both(nl.HingeLoss(), [x, (x > 0).astype(np.int64) * 2 - 1])
    _assert_same(cpu, gpu)
    cpu, gpu = _both(nl.SigmoidBCELoss(), [x, x > 0])
    _assert_same(cpu, gpu)


@pytest.mark.parametrize("batch_axis", [0, 1, 2, -1])
def test_batch_axis(batch_axis):
    x, y = _data((3, 4, 5)), _data((3, 4, 5))
    _assert_same(*_both(nl.L1Loss(batch_axis=batch_axis), [x, y], out_grad=None))


def test_long_rows_split_into_chunks_and_short_rows_grouped():
    from numba_losses.kernels.cuda.elementwise import THREADS, launch_plan

    sms = 2 if SIMULATED else cuda.get_current_device().MULTIPROCESSOR_COUNT
    k = THREADS * 64
    assert launch_plan(1, k, sms)[1] > 1  # several chunks: the partial-sum path
    x, y = _data((1, k), np.float64), _data((1, k), np.float64)
    _assert_same(*_both(nl.L2Loss(), [x, y]), rtol=1e-13, atol=1e-15)
    x, y = _data((300, 3)), _data((300, 3))
    _assert_same(*_both(nl.L2Loss(), [x, y]))


def test_strided_views_read_in_place():
    x, y = _data((6, 8)), _data((6, 8))
    dx, dy = dev(x), dev(y)
    for sl in [(slice(None), slice(None, None, 2)), (slice(None, None, -1), slice(None)), (slice(1, 5), slice(2, 7))]:
        cpu, gpu = _both(nl.L2Loss(), [x[sl], y[sl]], dargs=[dx[sl], dy[sl]])
        _assert_same(cpu, gpu)
    cpu, gpu = _both(nl.L2Loss(batch_axis=1), [x.T, y.T], dargs=[dx.T, dy.T])
    _assert_same(cpu, gpu)


def test_sample_weight_per_row_elementwise_and_growing():
    x, y = _data((4, 5)), _data((4, 5))
    for sw in [_data((4, 1)), _data((4, 5)), _data((5,)), 0.25]:
        _assert_same(*_both(nl.L1Loss(), [x, y, sw]))
    # sample_weight with more dimensions than pred: gradient summed back on the device
    x1, y1 = _data((4, 1)), _data((4, 1))
    _assert_same(*_both(nl.L2Loss(), [x1, y1, _data((3, 4, 5))]), rtol=1e-5, atol=1e-6)
    _assert_same(*_both(nl.L2Loss(), [x, y, _data((2, 1, 5))]), rtol=1e-5, atol=1e-6)


def test_pos_weight_and_out_grad_broadcast():
    x, y = _data((4, 5)), (_data((4, 5)) > 0).astype(np.float32)
    pw = np.abs(_data((5,)))
    _assert_same(*_both(nl.SigmoidBCELoss(), [x, y], {"pos_weight": pw}, out_grad=_data((1,))))


def test_out_and_grad_out_buffers_are_written():
    x, y = _data((4, 5)), _data((4, 5))
    out = dev(np.zeros(4, np.float32))
    grad = dev(np.zeros((4, 5), np.float32))
    o, (g,) = nl.L2Loss().forward_backward(dev(x), dev(y), out=out, grad_out=grad)
    assert o is out and g is grad
    c_o, (c_g,) = nl.L2Loss().forward_backward(x, y)
    np.testing.assert_allclose(host(out), c_o, rtol=1e-6)
    np.testing.assert_allclose(host(grad), c_g, rtol=1e-6)
    dx = dev(x)
    with pytest.raises(ValueError, match="share memory"):
        nl.L2Loss().forward_backward(dx, dev(y), grad_out=dx)
    with pytest.raises(ValueError, match="shape"):
        nl.L2Loss()(dev(x), dev(y), out=dev(np.zeros(5, np.float32)))
    with pytest.raises(TypeError, match="device array"):
        nl.L2Loss()(dev(x), dev(y), out=np.zeros(4, np.float32))


def test_backward_only():
    x, y = _data((4, 5)), _data((4, 5))
    (g,) = nl.LogisticLoss().backward(dev(x), dev(np.sign(y)))
    (c,) = nl.LogisticLoss().backward(x, np.sign(y))
    np.testing.assert_allclose(host(g), c, rtol=1e-6)


# -------------------------------------------------------------------------- errors
def test_mixed_host_and_device_inputs_raise():
    x = _data((2, 3))
    with pytest.raises(ValueError, match="host arrays"):
        nl.L2Loss()(dev(x), x)
    with pytest.raises(ValueError, match="host arrays"):
        nl.L2Loss()(dev(x), dev(x), x[:, :1])


def test_same_errors_as_cpu_for_bad_shapes_and_dtypes():
    x = _data((2, 3))
    for args in [(x, _data((2, 4))), (x.astype(np.complex64), x)]:
        with pytest.raises((ValueError, TypeError)) as cpu_err:
            nl.L2Loss()(*args)
        with pytest.raises(cpu_err.type) as gpu_err:
            nl.L2Loss()(*[dev(a) for a in args])
        assert str(gpu_err.value) == str(cpu_err.value)


class _FakeCAI:
    """A foreign producer: only ``__cuda_array_interface__``, on a given device."""

    def __init__(self, shape, strides, ptr, typestr="<f4"):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "strides": strides,
            "typestr": typestr,
            "data": (ptr, False),
            "version": 3,
        }


def test_layout_of_a_foreign_array_and_its_byte_range():
    d = DeviceArray.wrap("pred", _FakeCAI((4, 5), None, 4096))
    assert d.layout.shape == (4, 5) and d.layout.strides == (20, 4) and d.layout.dtype == np.float32
    assert d.byte_range() == (4096, 4096 + 80)
    t = DeviceArray.wrap("pred", _FakeCAI((5, 4), (4, 20), 4096))  # a transposed view
    assert t.byte_range() == (4096, 4096 + 80)


def test_inputs_on_two_devices_raise():
    a = DeviceArray(None, np.zeros(1), 0, 0, "numba")
    b = DeviceArray(None, np.zeros(1), 0, 1, "numba")
    with pytest.raises(ValueError, match=r"pred on cuda:0, label on cuda:1"):
        same_device({"pred": a, "label": b})


# ----------------------------------------------------------------- caller's array types
@pytest.mark.skipif(SIMULATED, reason="the simulator has Numba device arrays only")
def test_numba_device_arrays_in_numba_out():
    x = _data((4, 5))
    o = nl.L2Loss()(cuda.to_device(x), cuda.to_device(x))
    assert cuda.is_cuda_array(o) and type(o).__module__.startswith("numba")


@pytest.mark.skipif(not CUPY_ON_GPU, reason="needs CuPy on a GPU")
def test_cupy_in_cupy_out_on_the_current_stream():
    import cupy

    x = _data((64, 33))
    with cupy.cuda.Stream(non_blocking=True) as s:
        o, (g,) = nl.L2Loss().forward_backward(cupy.asarray(x), cupy.asarray(x * 0.5))
        s.synchronize()
    assert isinstance(o, cupy.ndarray) and isinstance(g, cupy.ndarray)
    c_o, (c_g,) = nl.L2Loss().forward_backward(x, x * 0.5)
    np.testing.assert_allclose(o.get(), c_o, rtol=1e-6)
    np.testing.assert_allclose(g.get(), c_g, rtol=1e-6)


@pytest.mark.skipif(not HAS_TORCH_CUDA, reason="needs PyTorch with CUDA")
def test_torch_in_torch_out():
    x = _data((8, 3))
    o, (g,) = nl.L1Loss().forward_backward(dev(x, "torch"), dev(x * 2, "torch"))
    assert isinstance(o, torch.Tensor) and o.is_cuda and isinstance(g, torch.Tensor)
    np.testing.assert_allclose(o.cpu().numpy(), nl.L1Loss()(x, x * 2), rtol=1e-6)


# ------------------------------------------------------------------------- benchmark
def test_gpu_check_script_runs_every_step_in_smoke_mode(tmp_path):
    """``asv_bench/gpu_check.py --smoke``: the one-shot GPU check end to end in the simulator.

    Its benchmark step is ``compare.py --device cuda --family all --smoke`` (every loss through
    every timed path, tiny shapes); the report names every step and says each passed.
    """
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "asv_bench" / "gpu_check.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (tmp_path / "gpu_report.md").read_text()
    assert proc.returncode == 0, report[-4000:]
    for step in ("versions", "tests", "benchmarks"):
        assert f"| {step} | passed |" in report
    assert "\nok\n" in report  # compare.py --smoke printed its "ok"


def test_a_device_array_whose_interface_raises_is_refused_clearly():
    class Guarded:  # like a PyTorch CUDA tensor with requires_grad=True
        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

    assert is_device_array(Guarded())
    with pytest.raises(TypeError, match="pred: unreadable __cuda_array_interface__.*requires grad"):
        nl.L2Loss()(Guarded(), Guarded())


# ------------------------------------------------------------------------------ launches
@pytest.mark.skipif(SIMULATED, reason="the simulator launches through Numba only")
def test_argument_kinds_agree_with_numbas_typing():
    from numba.np.numpy_support import as_dtype

    from numba_losses._core.launch import _kind

    base = cuda.to_device(np.arange(24, dtype=np.float32).reshape(4, 6))
    arrays = [
        base,
        base[:, 1:4],  # strided rows
        base[::2],  # strided
        cuda.to_device(np.asfortranarray(np.ones((3, 5)))),
        cuda.to_device(np.ones((1, 7), np.int64)),  # both C and F contiguous
        cuda.to_device(np.zeros((0, 4), np.float16)),
        cuda.from_cuda_array_interface(
            {
                "shape": (5, 3),
                "strides": (0, 4),
                "typestr": "<f4",
                "data": (base.device_ctypes_pointer.value, False),
                "version": 3,
            },
            owner=base,
        ),  # broadcast
    ]
    for a in arrays:
        t = a._numba_type_
        assert _kind(a) == (as_dtype(t.dtype), t.ndim, t.layout), a.shape
    assert _kind(1.5) is float and _kind(np.float32(1)) == np.dtype(np.float32) and _kind(object()) is None


@pytest.mark.skipif(SIMULATED, reason="the simulator launches through Numba only")
def test_repeated_calls_launch_the_remembered_kernel_and_numba_warns_of_no_grid_size():
    import warnings

    from numba.cuda.core.errors import NumbaPerformanceWarning  # numba-cuda's own class

    from numba_losses._core import launch as launches

    x, y = _data((3, 4)), _data((3, 4)) * 0.5
    loss = nl.L2Loss()
    with warnings.catch_warnings():  # grids of one block: Numba would warn about occupancy
        warnings.simplefilter("error", NumbaPerformanceWarning)
        first = host(loss(dev(x), dev(y)))
        assert any(v is not None for v in launches._COMPILED.values())
        for _ in range(3):
            again = host(loss(dev(x), dev(y)))
            np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(first, nl.L2Loss()(x, y), rtol=1e-6)
