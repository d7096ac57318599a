"""One call of a loss: its inputs by name, what is wanted back, the buffers, and the backend.

A :class:`Call` is built once per public call (``loss(...)``,
``loss.forward_backward(...)``, ``loss.backward(...)``) by :func:`make_call`,
which binds positional and keyword inputs to the loss's input names, splits
``grad_out`` into one entry per differentiable input, and chooses the backend
from the arrays (:func:`select_backend`). Nothing below the public classes
chooses a backend again or forwards these arguments one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .interop import import_inputs
from .validate import host_input, needs_host_check

CPU = "cpu"
CUDA = "cuda"
DASK = "dask"  # not a device: the call is split into blocks, each run on its own backend

_SCALARS = (int, float, bool, np.number, np.bool_)


def is_scalar(a: Any) -> bool:
    """A Python or NumPy number: never decides the backend (a 0-d device constant where needed)."""
    return isinstance(a, _SCALARS)


def is_dask_array(a: Any) -> bool:
    """True for a Dask collection (checked by module name: Dask is not imported)."""
    return a is not None and type(a).__module__.partition(".")[0] == "dask"


def is_simulated_array(a: Any) -> bool:
    """True for a device array of Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    t = type(a)
    return t.__name__ == "FakeCUDAArray" and t.__module__.startswith("numba.cuda.simulator")


def is_device_array(a: Any) -> bool:
    """True for anything exposing ``__cuda_array_interface__`` (CuPy, Numba, PyTorch CUDA) or simulated."""
    try:
        return hasattr(a, "__cuda_array_interface__") or is_simulated_array(a)
    except Exception:  # noqa: BLE001 - e.g. a CUDA tensor that requires grad: refused by DeviceArray.wrap
        return True


@dataclass(slots=True)
class Call:
    """What one call asks of a loss family.

    Attributes
    ----------
    inputs : dict
        Every input name of the loss (gluon's ``hybrid_forward`` order) to the
        value given, ``None`` for an optional input left out.
    want_value, want_grad : bool
        Whether the output and the gradients are wanted.
    out_grad : array or number or None
        Head gradient (``None`` means ones); only set when ``want_grad``.
    out : array or None
        Caller's buffer for the output.
    grad_out : tuple
        One entry (a buffer or ``None``) per differentiable input.
    backend : {"cpu", "cuda", "dask"}
        Where the call runs, decided from the arrays ("dask": any input is a
        Dask array; each block then runs on the backend of its chunks).
    origin : {"jax", "torch"} or None
        The library fresh host results are returned in (DLPack inputs, :mod:`.interop`).
    """

    inputs: dict[str, Any]
    want_value: bool
    want_grad: bool
    out_grad: Any = None
    out: Any = None
    grad_out: tuple[Any, ...] = field(default_factory=tuple)
    backend: str = CPU
    origin: str | None = None

    def arrays(self, skip: Sequence[str] = ()) -> dict[str, Any]:
        """The inputs and the head gradient that are given, by name (for messages and checks)."""
        named = {n: a for n, a in self.inputs.items() if a is not None and n not in skip}
        if self.want_grad and self.out_grad is not None:
            named["out_grad"] = self.out_grad
        return named


def select_backend(named: Mapping[str, Any]) -> str:
    """``"cpu"`` or ``"cuda"`` for these inputs (``None`` and numbers are skipped).

    Raises
    ------
    ValueError
        When host and device arrays are mixed; nothing is copied implicitly.
    """
    device = [n for n, a in named.items() if a is not None and is_device_array(a)]
    if not device:
        return CPU
    host = [n for n, a in named.items() if a is not None and not is_device_array(a) and not is_scalar(a)]
    if host:
        raise ValueError(
            f"inputs {', '.join(device)} are CUDA device arrays but {', '.join(host)} "
            "are host arrays; put all inputs on one side (no implicit copies are made)"
        )
    return CUDA


def bind(
    owner: str,
    names: Sequence[str],
    n_required: int,
    defaults: Mapping[str, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """Map positional and keyword inputs onto ``names`` (every name present, ``None`` when absent)."""
    if len(args) > len(names):
        raise TypeError(f"{owner} takes at most {len(names)} inputs ({', '.join(names)}), got {len(args)}")
    bound: dict[str, Any] = dict(zip(names, args, strict=False))
    if not kwargs and len(args) >= n_required and all(a is not None for a in args[:n_required]):
        for n in names[len(args) :]:  # the common positional call
            bound[n] = defaults.get(n)
        for n in names[n_required : len(args)]:
            if bound[n] is None:
                bound[n] = defaults.get(n)
        return bound
    for key, val in kwargs.items():
        if key not in names:
            raise TypeError(f"{owner} got an unexpected input {key!r}; inputs are {', '.join(names)}")
        if key in bound:
            raise TypeError(f"{owner} got input {key!r} both positionally and by keyword")
        bound[key] = val
    missing = [n for n in names[:n_required] if bound.get(n) is None]
    if missing:
        raise TypeError(f"{owner} is missing required input(s): {', '.join(missing)}")
    for n in names:
        if bound.get(n) is None:
            bound[n] = defaults.get(n)  # None, or a scalar input's default
    return bound


def split_grad_out(grad_out: Any, names: Sequence[str]) -> tuple[Any, ...]:
    """``grad_out`` as one entry (a buffer or ``None``) per differentiable input.

    A loss with one differentiable input takes one array or a 1-tuple; a loss
    with several takes a tuple (or list) with one entry per input, in input
    order, any of which may be ``None``.
    """
    n = len(names)
    if grad_out is None:
        return (None,) * n
    if not isinstance(grad_out, (tuple, list)):
        if n == 1:
            return (grad_out,)
        raise TypeError(f"grad_out must be a tuple of {n} buffers (for {', '.join(names)}) or None")
    if len(grad_out) != n:
        raise ValueError(f"grad_out: expected {n} buffer(s) (for {', '.join(names)}), got {len(grad_out)}")
    return tuple(grad_out)


def make_call(
    owner: str,
    names: Sequence[str],
    n_required: int,
    scalar_defaults: Mapping[str, Any],
    differentiable: Sequence[str],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    want_value: bool,
    want_grad: bool,
    out_grad: Any = None,
    out: Any = None,
    grad_out: Any = None,
) -> Call:
    """Bind the inputs, normalise the buffers and choose the backend, once per call.

    Inputs named in ``scalar_defaults`` (numbers such as PoissonNLLLoss's
    ``epsilon``) do not take part in the backend choice.
    """
    inputs = bind(owner, names, n_required, scalar_defaults, args, kwargs)
    for name, a in inputs.items():
        if type(a) is np.ndarray and needs_host_check(a):
            inputs[name] = host_input(name, a)
    if not want_grad:
        out_grad = None
    elif type(out_grad) is np.ndarray and needs_host_check(out_grad):
        out_grad = host_input("out_grad", out_grad)
    buffers = split_grad_out(grad_out, differentiable) if want_grad else (None,) * len(differentiable)
    backend, origin = CPU, None
    for a in (*inputs.values(), out_grad):  # NumPy arrays, numbers and None: the host, without asking more
        if a is not None and type(a) is not np.ndarray and not isinstance(a, _SCALARS):
            if any(is_dask_array(v) for v in (*inputs.values(), out_grad)):
                backend = DASK  # lazy, block by block (numba_losses.dask)
                break
            inputs, out_grad, origin = import_inputs(inputs, out_grad, out, buffers)  # DLPack objects: no copy
            named = {n: v for n, v in inputs.items() if n not in scalar_defaults}
            named["out_grad"] = out_grad
            backend = select_backend(named)
            break
    return Call(inputs, want_value, want_grad, out_grad, out if want_value else None, buffers, backend, origin)
