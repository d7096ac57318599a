"""DLPack inputs: arrays of other libraries read in place, results handed back in the caller's library.

An input that is not a NumPy array and not a CUDA device array
(``__cuda_array_interface__``) but implements the DLPack protocol
(``__dlpack__`` and ``__dlpack_device__``: a JAX array, a PyTorch tensor on
the CPU, ...) is imported without a copy:

* on the host (DLPack device type ``kDLCPU``) as a NumPy view,
  :func:`numpy.from_dlpack`; such views are read-only when the producer's are
  (JAX), and nothing in this library writes into an input;
* on a GPU (``kDLCUDA``, ``kDLCUDAManaged``) as a CuPy array,
  ``cupy.from_dlpack``, then run on the CUDA backend; without CuPy a
  ``TypeError`` says what to install. JAX arrays on a GPU take this road
  too, although they also expose ``__cuda_array_interface__``: the DLPack
  exchange orders the work against JAX's own stream, and the results can be
  handed back as JAX arrays.

Fresh host results of a call whose first array input came from JAX or
PyTorch are returned in that library (:func:`export_results`): JAX through
``jax.dlpack.from_dlpack`` (no copy when the result is 64-byte aligned, else
one copy), PyTorch through ``torch.from_numpy`` (no copy). Results of JAX
arrays on a GPU are CuPy arrays handed to JAX through DLPack (no copy), on the
same GPU. The caller's own ``out`` / ``grad_out`` buffers (NumPy arrays) are
returned as they are. ``out`` / ``grad_out`` given as DLPack objects (or as
JAX arrays, which are immutable) are refused: a DLPack export may be
read-only and a write through it would go behind its library's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_MANAGED = 13
_DEVICE_NAMES = {2: "kDLCUDA", 3: "kDLCUDAHost", 4: "kDLOpenCL", 7: "kDLVulkan", 8: "kDLMetal", 10: "kDLROCM"}
_RETURNED_IN = ("jax", "torch")  # libraries whose host results are handed back in their own type


def is_dlpack(a: Any) -> bool:
    """True for a DLPack producer that is not a NumPy array (nor a NumPy scalar)."""
    return not isinstance(a, (np.ndarray, np.generic)) and hasattr(type(a), "__dlpack__")


def library_of(a: Any) -> str:
    """Top-level module of ``a``'s type (``"jax"`` for ``jaxlib`` arrays)."""
    mod = type(a).__module__.split(".")[0]
    return "jax" if mod == "jaxlib" else mod


def import_array(name: str, a: Any) -> Any:
    """``a`` as a NumPy array (host) or a CuPy array (CUDA), sharing its memory.

    Raises
    ------
    TypeError
        ``a``'s device is not the host or a CUDA GPU, CuPy is missing for a
        CUDA one, or the producer refuses the export (a PyTorch tensor that
        requires grad, a dtype NumPy lacks such as bfloat16); the message names
        the argument.
    """
    try:
        device_type = int(a.__dlpack_device__()[0])
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name}: {type(a).__name__} has no usable __dlpack_device__ ({exc})") from exc
    if device_type == KDL_CPU:
        try:
            return np.from_dlpack(a)
        except Exception as exc:  # noqa: BLE001 - BufferError, TypeError, RuntimeError, by producer
            raise TypeError(f"{name}: cannot read this {library_of(a)} array through DLPack ({exc})") from exc
    if device_type in (KDL_CUDA, KDL_CUDA_MANAGED):
        try:
            import cupy
        except ImportError:
            raise TypeError(
                f"{name}: a {library_of(a)} array on a CUDA GPU without __cuda_array_interface__ is read through "
                "DLPack by CuPy, which is not installed (pip install 'numba_losses[cupy]' or cupy-cuda13x)"
            ) from None
        try:
            return cupy.from_dlpack(a)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{name}: cannot read this {library_of(a)} array through DLPack ({exc})") from exc
    where = _DEVICE_NAMES.get(device_type, f"DLPack device type {device_type}")
    raise TypeError(f"{name}: arrays on {where} are not supported; move them to the host or a CUDA GPU")


def import_inputs(
    inputs: Mapping[str, Any], out_grad: Any, out: Any, grad_out: tuple[Any, ...]
) -> tuple[dict[str, Any], Any, str | None]:
    """Replace every DLPack input (and ``out_grad``) by a NumPy or CuPy view of it.

    Returns
    -------
    inputs : dict
        The inputs by name, DLPack objects imported, everything else as given.
    out_grad : array or number or None
    origin : str or None
        ``"jax"`` or ``"torch"`` when the first array input (in input order)
        came from that library, so that host results are returned in it.

    Raises
    ------
    TypeError
        An ``out`` / ``grad_out`` buffer that is a DLPack object (not a NumPy
        array), and as :func:`import_array`.
    """
    for bname, buf in (("out", out), *(("grad_out", g) for g in grad_out)):
        if buf is not None and _read_through_dlpack(buf):
            raise TypeError(
                f"{bname} must be a writable numpy.ndarray, got a {library_of(buf)} {type(buf).__name__} "
                "(DLPack exports may be read-only; leave it None to get a result in that library)"
            )
    origin: str | None = None
    first = True
    imported: dict[str, Any] = {}
    for name, a in inputs.items():
        if a is None or isinstance(a, (int, float, bool, np.number, np.bool_)):
            imported[name] = a
            continue
        a = _values(a)
        if _read_through_dlpack(a):
            lib = library_of(a)
            a = import_array(name, a)
            if first and lib in _RETURNED_IN and (isinstance(a, np.ndarray) or lib == "jax"):
                origin = lib
        imported[name] = a
        first = False
    if out_grad is not None:
        out_grad = _values(out_grad)
        if _read_through_dlpack(out_grad):
            out_grad = import_array("out_grad", out_grad)
    return imported, out_grad, origin


def _values(a: Any) -> Any:
    """``a``, or a copy holding its values: a PyTorch tensor with a lazy negation (``z.conj().imag``)
    exports its memory without the sign, through DLPack and ``__cuda_array_interface__`` alike."""
    if library_of(a) == "torch" and a.is_neg():
        return a.resolve_neg()
    return a


def _read_through_dlpack(a: Any) -> bool:
    """Whether ``a`` is read through DLPack: a producer on the host, a JAX array anywhere, or a device
    producer without ``__cuda_array_interface__`` (the CUDA backend reads the others directly)."""
    return is_dlpack(a) and (_on_host(a) or library_of(a) == "jax" or not _is_cuda_array(a))


def _on_host(a: Any) -> bool:
    """A DLPack producer on the host (asked first: the ``__cuda_array_interface__`` probe is slow for JAX)."""
    try:
        return int(a.__dlpack_device__()[0]) == KDL_CPU
    except Exception:  # noqa: BLE001 - import_array reports it
        return False


def _is_cuda_array(a: Any) -> bool:
    """A ``__cuda_array_interface__`` producer: the CUDA backend reads it directly (no DLPack)."""
    try:
        return hasattr(a, "__cuda_array_interface__")
    except Exception:  # noqa: BLE001 - e.g. a CUDA tensor that requires grad: the device path explains
        return True


def export_results(result: tuple[Any, Any], origin: str, keep: tuple[Any, ...]) -> tuple[Any, Any]:
    """``(value, grads)`` with every fresh result converted to ``origin``'s array type.

    Fresh NumPy results are converted; so are fresh CuPy results when
    ``origin`` is ``"jax"`` (the inputs were JAX arrays on a GPU). Arrays in
    ``keep`` (the caller's ``out`` / ``grad_out`` buffers) and ``None`` are
    returned unchanged.
    """
    convert = _to_jax if origin == "jax" else _to_torch

    def one(a: Any) -> Any:
        if a is None or any(a is k for k in keep):
            return a
        if isinstance(a, np.ndarray):
            return convert(a)
        if origin == "jax" and library_of(a) == "cupy":
            return _device_to_jax(a)
        return a

    value, grads = result
    return one(value), (None if grads is None else tuple(one(g) for g in grads))


def _to_jax(a: np.ndarray) -> Any:
    import jax

    if a.dtype != jax.dtypes.canonicalize_dtype(a.dtype):  # float64 without jax_enable_x64: JAX's own rule
        return jax.numpy.asarray(a)
    return jax.dlpack.from_dlpack(a if a.flags.c_contiguous else np.ascontiguousarray(a))


def _device_to_jax(a: Any) -> Any:
    """A fresh CuPy result as a JAX array on the same GPU (DLPack, no copy unless JAX's dtype rule casts)."""
    import jax

    want = jax.dtypes.canonicalize_dtype(a.dtype)
    return jax.dlpack.from_dlpack(a if a.dtype == want else a.astype(want))


def _to_torch(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a if a.flags.writeable else a.copy())
