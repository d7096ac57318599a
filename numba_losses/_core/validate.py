"""Input validation shared by every loss: clear errors before any kernel runs."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

SHARE_INPUTS = "must not share memory with the inputs (inputs are never written)"
_FLOAT_KINDS = "f"
_REAL_KINDS = "fiub"


MAX_NDIM = 32  # NumPy's broadcasting and iteration helpers stop at 32 dimensions
SUPPORTED_DTYPES = "float16, float32, float64, signed or unsigned integers, or bool"


def as_host_array(name: str, a: Any) -> np.ndarray:
    """``np.asarray(a)``, checked by :func:`host_input`."""
    if type(a) is np.ndarray and not needs_host_check(a):
        return a
    if isinstance(a, np.ma.MaskedArray):
        a = unmasked(name, a)
    try:
        arr = np.asarray(a)
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name}: cannot be converted to an array ({exc})") from exc
    return host_input(name, arr)


def unmasked(name: str, a: np.ma.MaskedArray) -> np.ndarray:
    """The data of masked array ``a`` when no element is masked.

    Raises
    ------
    TypeError
        Some element is masked: the kernels would read the values under the
        mask, a silently different loss from what the masked array means.
    """
    if np.ma.getmaskarray(a).any():
        raise TypeError(
            f"{name}: masked arrays with masked elements are not supported (the values under the mask would be "
            f"read); fill them ({name}.filled(value)) or leave those positions out"
        )
    return a.data


def needs_host_check(arr: np.ndarray) -> bool:
    """Cheap test: whether ``arr`` needs :func:`host_input` (an unusual dtype, byte order or rank)."""
    dt = arr.dtype
    return dt.kind not in _REAL_KINDS or dt.itemsize > 8 or not dt.isnative or arr.ndim > MAX_NDIM


def host_input(name: str, arr: np.ndarray) -> np.ndarray:
    """A host input the kernels can read: supported dtypes in native byte order, at most 32 dimensions.

    Big-endian (non-native) arrays are converted to a native copy (the caller's
    array is not touched). Complex, object, string, datetime and extended
    precision (``np.longdouble``) arrays are refused.

    Raises
    ------
    TypeError
        An unsupported dtype (the message names ``name`` and the supported dtypes).
    ValueError
        More than 32 dimensions.
    """
    if not needs_host_check(arr):
        return arr
    dt = arr.dtype
    if dt.kind not in _REAL_KINDS or dt.itemsize > 8:
        raise TypeError(f"{name}: dtype {dt} is not supported; expected {SUPPORTED_DTYPES}")
    if arr.ndim > MAX_NDIM:
        raise ValueError(f"{name}: {arr.ndim} dimensions; at most {MAX_NDIM} are supported")
    return arr.astype(dt.newbyteorder("="))  # big-endian: a native copy


_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_COMPUTE = {_F16: _F32, _F32: _F32, _F64: _F64}  # a dict lookup: no dtype conversion per call


def compute_dtype(name: str, arr: np.ndarray) -> np.dtype:
    """float32 for float16/float32, float64 for float64 and integer/bool inputs."""
    dt = arr.dtype
    cdt = _COMPUTE.get(dt)
    if cdt is not None:
        return cdt
    if dt.kind == "f":
        raise TypeError(f"{name}: dtype {dt} is not supported (use float16, float32 or float64)")
    return _F64


def result_dtype(arr: np.ndarray, cdtype: np.dtype) -> np.dtype:
    """Dtype of outputs and gradients: float16 stays float16, else the compute dtype."""
    return _F16 if arr.dtype == _F16 else cdtype


def layout_of(name: str, a: Any) -> Any:
    """A layout array for input ``name``: ``a`` itself if it is a NumPy array a call reads as it is, or a
    number; else a never-read zero-stride array with ``a.shape`` and ``a.dtype`` (a description such as
    ``jax.ShapeDtypeStruct``, a Dask or device array, or a big-endian array, described in native order).
    Dtypes and ranks are checked as a call checks them (:func:`host_input`)."""
    if a is None or isinstance(a, (numbers.Number, np.generic)):
        return a
    if isinstance(a, np.ndarray) and not needs_host_check(a):
        return a
    try:
        shape, dtype = tuple(int(n) for n in a.shape), a.dtype
    except (AttributeError, TypeError) as exc:
        raise TypeError(
            f"{name}: expected an array or an object with .shape and .dtype, got {type(a).__name__}"
        ) from exc
    dtype = numpy_dtype(name, dtype)
    layout = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape=shape, strides=(0,) * len(shape))
    return host_input(name, layout)


def numpy_dtype(name: str, dtype: Any) -> np.dtype:
    """``dtype`` as a NumPy dtype: anything ``np.dtype`` reads, or a ``torch.dtype`` (by its name; torch is
    not imported). ``TypeError`` naming ``name`` for a dtype NumPy has no equivalent of (``torch.bfloat16``)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        pass
    text = str(dtype)
    if type(dtype).__module__ == "torch" and text.startswith("torch."):
        try:
            return np.dtype(text[len("torch.") :])  # torch.float32 -> float32, torch.bool -> bool, ...
        except TypeError:
            pass
    raise TypeError(f"{name}: dtype {text} is not supported; expected {SUPPORTED_DTYPES}")


def check_weight(weight: Any) -> float:
    """MXNet's call-time check: ``weight`` must be a number (``None`` means 1).

    Raises
    ------
    AssertionError
        Not a number (MXNet's own check).
    ValueError
        NaN or infinite: every output would be NaN or infinite (MXNet computes
        them; refusing is a deliberate difference).
    """
    if weight is None:
        return 1.0
    if type(weight) is not float and type(weight) is not int:  # the fast path skips the ABC check
        assert isinstance(weight, (numbers.Number, np.bool_)) and not isinstance(weight, complex), (
            f"weight must be a number, got {weight!r} ({type(weight).__name__})"
            + ("; per-class weights are SoftmaxCELoss(class_weight=...)" if hasattr(weight, "__len__") else "")
        )
    value = float(weight)
    if value - value != 0.0:  # NaN or infinite
        raise ValueError(f"weight must be finite, got {weight!r}")
    return value


def reshape_like(name: str, arr: np.ndarray, shape: tuple[int, ...], like: str = "pred") -> np.ndarray:
    """MXNet ``reshape_like``: same number of elements, reshaped in C order."""
    if arr.shape == shape:
        return arr
    size = int(np.prod(shape, dtype=np.int64))
    if arr.size != size:
        raise ValueError(
            f"{name} of shape {arr.shape} ({arr.size} elements) cannot be reshaped like "
            f"{like} of shape {shape} ({size} elements)"
        )
    return arr.reshape(shape)


def broadcast_shape(named_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """NumPy broadcast of several shapes, with an error naming the culprits."""
    try:
        return tuple(np.broadcast_shapes(*named_shapes.values()))
    except ValueError:
        desc = ", ".join(f"{n} {s}" for n, s in named_shapes.items())
        raise ValueError(f"shapes do not broadcast together: {desc}") from None


def normalize_axis(axis: int, ndim: int, what: str = "batch_axis") -> int:
    """A possibly negative axis, checked against ``ndim``."""
    if type(axis) is not int and not isinstance(axis, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what}={axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def _may_overlap(buf: np.ndarray, own: bool, a: np.ndarray) -> bool:
    """Whether ``buf`` (``own``: it owns its data) may share memory with ``a``.

    Two distinct arrays that each own their data are two allocations: they cannot overlap, and the
    flag is cheaper to read than the bounds check (a training loop's buffers and inputs).
    """
    if own and a is not buf and a.flags.owndata:
        return False
    return np.may_share_memory(buf, a)


def check_buffer(
    name: str,
    buf: Any,
    shape: tuple[int, ...],
    dtype: np.dtype,
    inputs: Mapping[str, Any] | None = None,
    taken: list | None = None,
) -> np.ndarray:
    """A caller's output buffer: a writable C-contiguous ndarray of this shape and dtype.

    With ``inputs``, it must share memory with none of them (inputs are never
    written); with ``taken`` (the buffers checked so far in this call), with
    none of those either, and it is appended to ``taken``.
    """
    if not isinstance(buf, np.ndarray) or isinstance(buf, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(buf).__name__}")
    if buf.shape != tuple(shape):
        raise ValueError(f"{name} has shape {buf.shape}, expected {tuple(shape)}")
    if buf.dtype != dtype:
        raise TypeError(f"{name} has dtype {buf.dtype}, expected {dtype}")
    if not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError(f"{name} must be a writable C-contiguous array")
    own = buf.flags.owndata
    if inputs is not None:
        for other, a in inputs.items():
            if isinstance(a, np.ndarray) and _may_overlap(buf, own, a):
                raise ValueError(f"{name} {SHARE_INPUTS}: it overlaps {other}")
    if taken is not None:
        for t in taken:
            if _may_overlap(buf, own, t):
                raise ValueError(f"{name}: output buffers must not share memory with each other")
        taken.append(buf)
    return buf
