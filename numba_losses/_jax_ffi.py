"""Host functions as XLA FFI custom calls on JAX's CPU backend (the fast path of :mod:`numba_losses.jax`).

:func:`jax.pure_callback` hands its arguments to Python through JAX's host
callback machinery, about 0.35 ms per call with no work in it. XLA's typed FFI
calls a C function pointer directly from the compiled program instead. This
module registers one such handler, a :mod:`ctypes` callback (so it runs Python,
under the GIL, as a callback does), under the target name :data:`TARGET` for
the ``cpu`` platform. Each call site carries an int64 attribute ``callback``:
the index of a Python function ``fn(inputs, outputs)`` in a table, which reads
its inputs and writes its results into XLA's result buffers, both given as
NumPy views of XLA's memory (inputs read-only; no copies). A call costs about
a microsecond more than the function itself.

A Python exception raised by ``fn`` becomes an XLA error carrying its type and
message (raised by JAX where the result is awaited), so errors found from
values (CTC labels and lengths) reach the caller as with a callback.

The handler follows the C API of ``xla/ffi/api/c_api.h`` (major version 0):
the call frame, its buffers and attributes, the metadata extension XLA uses to
query a handler's API version, and ``XLA_FFI_Error_Create``. :func:`available`
is false where JAX has no ``jax.ffi`` or its FFI has another major version;
callers then use :func:`jax.pure_callback`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TARGET = "numba_losses_host_call"
_API_MAJOR = 0  # the C API version this module was written against
_API_MINOR = 3

_METADATA_EXTENSION = 1  # XLA_FFI_Extension_Metadata
_STAGE_EXECUTE = 3  # XLA_FFI_ExecutionStage_EXECUTE
_ATTR_SCALAR = 3  # XLA_FFI_AttrType_SCALAR
_S64 = 5  # XLA_FFI_DataType_S64
_INVALID_ARGUMENT = 3  # XLA_FFI_Error_Code_*
_INTERNAL = 13

# XLA_FFI_DataType -> NumPy dtype, for the dtypes numba_losses reads and writes
_DTYPES = {
    1: np.dtype(np.bool_),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.uint8),
    7: np.dtype(np.uint16),
    8: np.dtype(np.uint32),
    9: np.dtype(np.uint64),
    10: np.dtype(np.float16),
    11: np.dtype(np.float32),
    12: np.dtype(np.float64),
}


class _ExtensionBase(ctypes.Structure):
    pass


_ExtensionBase._fields_ = [
    ("struct_size", ctypes.c_size_t),
    ("type", ctypes.c_int),
    ("next", ctypes.POINTER(_ExtensionBase)),
]


class _ApiVersion(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("major_version", ctypes.c_int),
        ("minor_version", ctypes.c_int),
    ]


class _Metadata(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("api_version", _ApiVersion),
        ("traits", ctypes.c_uint32),
        ("state_type_id", ctypes.c_int64),
    ]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _ExtensionBase), ("metadata", ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("rank", ctypes.c_int64),
        ("dims", ctypes.POINTER(ctypes.c_int64)),
    ]


class _ByteSpan(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("len", ctypes.c_size_t)]


class _Scalar(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("value", ctypes.c_void_p)]


class _List(ctypes.Structure):
    """``XLA_FFI_Args`` and ``XLA_FFI_Rets`` (same layout): ``size`` entries of ``types`` and pointers."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.POINTER(ctypes.c_int)),
        ("items", ctypes.POINTER(ctypes.c_void_p)),
    ]


class _Attrs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("size", ctypes.c_int64),
        ("types", ctypes.POINTER(ctypes.c_int)),
        ("names", ctypes.POINTER(ctypes.POINTER(_ByteSpan))),
        ("items", ctypes.POINTER(ctypes.c_void_p)),
    ]


class _CallFrame(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.POINTER(_ExtensionBase)),
        ("api", ctypes.c_void_p),
        ("ctx", ctypes.c_void_p),
        ("stage", ctypes.c_int),
        ("args", _List),
        ("rets", _List),
        ("attrs", _Attrs),
        ("future", ctypes.c_void_p),
    ]


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("message", ctypes.c_char_p),
        ("errc", ctypes.c_int),
    ]


# XLA_FFI_Error_Create_Args_STRUCT_SIZE: offsetof(errc) + sizeof(errc), without the trailing padding
_ERROR_ARGS_SIZE = _ErrorCreateArgs.errc.offset + ctypes.sizeof(ctypes.c_int)
_ErrorCreate = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorCreateArgs))


class _Api(ctypes.Structure):
    """The head of ``XLA_FFI_Api``: its version and the first function of its table."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("api_version", _ApiVersion),
        ("internal_api", ctypes.c_void_p),
        ("error_create", _ErrorCreate),
    ]


_Handler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))

# The host functions call sites refer to by index. An entry lives as long as the process: a compiled
# program may call it at any time (as JAX keeps the functions of its host callbacks).
_FUNCTIONS: list[Callable[[list[np.ndarray], list[np.ndarray]], None]] = []


def _view(address: int, writeable: bool) -> np.ndarray:
    """A NumPy array over the ``XLA_FFI_Buffer`` at ``address`` (C order, no copy)."""
    buf = _Buffer.from_address(address)
    dtype = _DTYPES.get(buf.dtype)
    if dtype is None:
        raise TypeError(f"XLA buffer of FFI data type {buf.dtype} is not supported")
    shape = tuple(buf.dims[: buf.rank])
    size = math.prod(shape) * dtype.itemsize
    if size == 0:
        return np.empty(shape, dtype)
    memory = (ctypes.c_char * size).from_address(buf.data)
    return np.ndarray(shape, dtype, buffer=memory if writeable else memoryview(memory).toreadonly())


def _function_index(attrs: _Attrs) -> int:
    """The ``callback`` attribute of a call site (an int64 scalar, the call's only attribute)."""
    if attrs.size == 1 and attrs.types[0] == _ATTR_SCALAR:
        scalar = _Scalar.from_address(attrs.items[0])
        if scalar.dtype == _S64:
            return ctypes.c_int64.from_address(scalar.value).value
    raise ValueError(f"a call of {TARGET} without its one attribute, the int64 'callback'")


def _error(api: int, exc: BaseException) -> int | None:
    """An ``XLA_FFI_Error`` carrying ``exc``'s type and message (``None``: no API to make one)."""
    if not api:
        return None
    code = _INVALID_ARGUMENT if isinstance(exc, (ValueError, TypeError)) else _INTERNAL
    message = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
    args = _ErrorCreateArgs(_ERROR_ARGS_SIZE, None, message, code)
    return _Api.from_address(api).error_create(ctypes.byref(args))


def _fill_metadata(frame: _CallFrame) -> None:
    """Answer XLA's metadata query: the C API version this handler speaks, no traits.

    Raises ``RuntimeError`` (an XLA error at compile time) where XLA's own API has another
    major version, whose structures this module cannot read.
    """
    minor = _API_MINOR
    if frame.api:
        version = _Api.from_address(frame.api).api_version
        if version.major_version != _API_MAJOR:
            raise RuntimeError(
                f"numba_losses.jax speaks XLA FFI API version {_API_MAJOR}.x, this jaxlib has "
                f"{version.major_version}.x: install a numba_losses release made for it"
            )
        minor = min(minor, version.minor_version)  # the structures read here are those of every 0.x
    ext = ctypes.cast(frame.extension_start, ctypes.POINTER(_MetadataExtension)).contents
    meta = ext.metadata.contents
    meta.api_version.struct_size = ctypes.sizeof(_ApiVersion)
    meta.api_version.extension_start = None
    meta.api_version.major_version = _API_MAJOR
    meta.api_version.minor_version = minor
    meta.traits = 0
    if meta.struct_size >= _Metadata.state_type_id.offset + ctypes.sizeof(ctypes.c_int64):  # newer field
        meta.state_type_id = 0  # XLA_FFI_UNKNOWN_TYPE_ID: no state


def _handle(frame_ptr: Any) -> int | None:
    frame = frame_ptr.contents
    try:
        start = frame.extension_start
        if start and start.contents.type == _METADATA_EXTENSION:
            _fill_metadata(frame)
            return None
        if frame.stage != _STAGE_EXECUTE:
            return None
        fn = _FUNCTIONS[_function_index(frame.attrs)]
        args, rets = frame.args, frame.rets
        inputs = [_view(args.items[i], False) for i in range(args.size)]
        outputs = [_view(rets.items[i], True) for i in range(rets.size)]
        fn(inputs, outputs)
        return None
    except BaseException as exc:  # an exception must not unwind through XLA's C++ frames
        return _error(frame.api, exc)


_HANDLER = _Handler(_handle)


@functools.cache
def available() -> bool:
    """Whether JAX has the typed FFI this module speaks; registers the handler once if so."""
    try:
        import jax
        import jax.ffi
    except ImportError:
        return False
    if not hasattr(jax.ffi, "ffi_call") or not hasattr(jax.ffi, "register_ffi_target"):
        return False
    try:
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(_HANDLER), platform="cpu", api_version=1)
    except Exception as exc:  # a jaxlib that refuses typed FFI handlers: the callbacks still work
        warnings.warn(
            f"numba_losses.jax: XLA FFI registration failed ({exc}); using jax.pure_callback (slower)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def call(
    fn: Callable[[list[np.ndarray], list[np.ndarray]], None],
    result_shape_dtypes: Sequence[Any],
    *args: Any,
    vmap_method: str,
) -> Any:
    """Stage a call of ``fn(inputs, outputs)`` on the host, as :func:`jax.ffi.ffi_call` (CPU only).

    ``fn`` gets the arguments as read-only NumPy arrays and one writable array per
    entry of ``result_shape_dtypes``, which it must fill. Returns the results (a list).
    """
    import jax

    index = len(_FUNCTIONS)
    _FUNCTIONS.append(fn)
    staged = jax.ffi.ffi_call(TARGET, tuple(result_shape_dtypes), vmap_method=vmap_method)
    return staged(*args, callback=np.int64(index))
