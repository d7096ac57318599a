"""The ``Loss`` base class: gluon's calling convention and the three public methods.

A call is bound and its backend chosen once (:func:`._core.request.make_call`);
the subclass then describes it as a frozen *spec* of its family
(``numba_losses._plan.<family>``), and the family's execution module for that
backend (``numba_losses._cpu.<family>`` or ``numba_losses._cuda.<family>``)
runs it. The CUDA modules are imported on the first call with device arrays,
so ``import numba_losses`` never imports ``numba.cuda``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ._core import compilelog
from ._core.interop import export_results
from ._core.request import DASK, Call, bind, make_call
from ._core.validate import check_weight, layout_of

Array = Any  # a NumPy array, or a CUDA device array (CuPy, PyTorch, Numba) on the CUDA backend


class ShapeDtype(NamedTuple):
    """The shape and dtype of a result, known before anything runs (:meth:`Loss.result_shapes`)."""

    shape: tuple[int, ...]
    dtype: np.dtype


@functools.cache
def family_module(backend: str, family: str) -> ModuleType:
    """The execution module of ``family`` (a file stem shared by every layer) on ``backend``."""
    return importlib.import_module(f"numba_losses._{backend}.{family}")


class Loss:
    """Base class of every loss (gluon's ``mxnet.gluon.loss.Loss``).

    Parameters
    ----------
    weight : float or None
        Global scalar weight multiplied into the loss; ``None`` means 1.
        Checked at call time: a non-number raises ``AssertionError`` as in MXNet.
    batch_axis : int
        The axis that indexes samples; the loss is reduced over all others.
        Negative values count from the end.
    **kwargs
        gluon's ``prefix`` and ``params``, accepted and ignored. Any other
        keyword raises ``TypeError`` (with the name to use where a PyTorch or
        MXNet-operator spelling has an equivalent here): a misspelt parameter
        never runs silently with its default.

    Notes
    -----
    Subclasses declare their inputs in ``_inputs`` (gluon's ``hybrid_forward``
    order, the first ``_n_required`` mandatory) and the differentiable ones in
    ``_differentiable``, and implement ``_spec``, which returns their family's
    spec for a call. Every input may be given positionally (``None`` skips an
    optional one) or by keyword.

    Three entry points share one kernel pass:

    * ``loss(*inputs)`` - forward values;
    * ``loss.forward_backward(*inputs, out_grad=None)`` - ``(out, grads)``;
    * ``loss.backward(*inputs, out_grad=None)`` - ``grads`` only.

    ``grads`` is a tuple with one array per differentiable input: the gradient
    of ``sum(out * out_grad)`` (``out_grad`` defaults to ones).
    """

    _inputs: ClassVar[tuple[str, ...]] = ("pred", "label", "sample_weight")
    _n_required: ClassVar[int] = 2
    _differentiable: ClassVar[tuple[str, ...]] = ("pred",)
    _scalar_inputs: ClassVar[dict[str, Any]] = {}
    _output_ndim: ClassVar[int | None] = None  # when fixed: lets MakeLoss(normalization='batch') fuse its pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each loss class methods whose signatures name its inputs (``help()``, IDEs, the API pages)."""
        super().__init_subclass__(**kwargs)
        for method, extra in _BUFFERS.items():
            if method not in cls.__dict__:
                setattr(cls, method, _named_method(cls, method, extra))

    def __init__(self, weight: float | None, batch_axis: int, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in _GLUON_KWARGS]
        if unknown:
            name = unknown[0]
            hint = _HINTS.get(name, "")
            raise TypeError(
                f"{type(self).__name__} got an unexpected keyword argument {name!r}"
                + (f"; {hint}" if hint else f" (gluon's {' and '.join(_GLUON_KWARGS)} are accepted and ignored)")
            )
        self._weight = weight  # checked at call time, as MXNet does (SDMLLoss never reads it)
        self._batch_axis = batch_axis  # checked at call time against the input's rank

    def __repr__(self) -> str:
        params = ", ".join(f"{k.lstrip('_')}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    # -- public API -------------------------------------------------------
    def __call__(self, *args: Any, out: np.ndarray | None = None, **kwargs: Any) -> Array:
        """Forward pass: the loss per sample (shape per the class docstring)."""
        value, _ = self._run(self._call(args, kwargs, True, False, None, out, None))
        return value

    def forward_backward(
        self,
        *args: Any,
        out_grad: Any = None,
        out: Array | None = None,
        grad_out: Array | tuple[Array | None, ...] | None = None,
        **kwargs: Any,
    ) -> tuple[Array, tuple[Array, ...]]:
        """Forward values and gradients in one fused pass.

        Parameters
        ----------
        *args, **kwargs
            The loss inputs, as for ``__call__``.
        out_grad : array_like, optional
            Head gradient, broadcastable to the output's shape; default ones.
        out, grad_out : array, optional
            Preallocated buffers for the output and the gradient(s) (one array,
            or a tuple with one entry per differentiable input, ``None`` for
            any not supplied), reused across calls.

        Returns
        -------
        out : array
        grads : tuple of array
            One gradient per differentiable input, in input order.
        """
        return self._run(self._call(args, kwargs, True, True, out_grad, out, grad_out))

    def backward(
        self,
        *args: Any,
        out_grad: Any = None,
        grad_out: Array | tuple[Array | None, ...] | None = None,
        **kwargs: Any,
    ) -> tuple[Array, ...]:
        """Gradients only (same arguments as :meth:`forward_backward`)."""
        _, grads = self._run(self._call(args, kwargs, False, True, out_grad, None, grad_out))
        return grads

    def result_shapes(self, *args: Any, **kwargs: Any) -> tuple[ShapeDtype, tuple[ShapeDtype, ...]]:
        """Shapes and dtypes of the output and of every gradient, without running a kernel.

        Parameters
        ----------
        *args, **kwargs
            The inputs as for ``__call__``: arrays, or anything with ``.shape``
            and ``.dtype`` (a ``jax.ShapeDtypeStruct``, a Dask array, a device
            array); their values are never read (CTCLoss's labels neither).

        Returns
        -------
        out : ShapeDtype
            ``(shape, dtype)`` of what ``loss(*inputs)`` returns.
        grads : tuple of ShapeDtype
            One ``(shape, dtype)`` per differentiable input, in input order.

        Raises
        ------
        ValueError, TypeError
            Exactly as a call with such inputs would (shapes that do not
            broadcast, unsupported dtypes, a bad axis).

        Examples
        --------
        >>> import numpy as np, numba_losses as nl
        >>> nl.SoftmaxCELoss(axis=1).result_shapes(np.empty((8, 21, 4, 4), np.float32), np.empty((8, 4, 4)))
        (ShapeDtype(shape=(8,), dtype=dtype('float32')), (ShapeDtype(shape=(8, 21, 4, 4), dtype=dtype('float32')),))
        """
        inputs = {name: layout_of(name, a) for name, a in self._bind(args, kwargs).items()}
        call = Call(inputs, want_value=True, want_grad=True, grad_out=(None,) * len(self._differentiable))
        spec = self._spec(call)
        out, grads = importlib.import_module(f"numba_losses._plan.{spec.family}").result_shapes(spec, inputs)
        return ShapeDtype(tuple(out[0]), np.dtype(out[1])), tuple(ShapeDtype(tuple(s), np.dtype(d)) for s, d in grads)

    # -- the path every call takes ------------------------------------------
    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The inputs by name (``None`` for an optional one left out), as a call binds them."""
        return bind(type(self).__name__, self._inputs, self._n_required, self._scalar_inputs, args, kwargs)

    def _call(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        want_value: bool,
        want_grad: bool,
        out_grad: Any,
        out: Any,
        grad_out: Any,
    ) -> Call:
        """Bind the inputs and choose the backend (once per call)."""
        cls = type(self)
        return make_call(
            cls.__name__,
            cls._inputs,
            cls._n_required,
            cls._scalar_inputs,
            cls._differentiable,
            args,
            kwargs,
            want_value,
            want_grad,
            out_grad,
            out,
            grad_out,
        )

    def _run(self, call: Call) -> tuple[Any, tuple[Any, ...] | None]:
        """Run ``call`` on its backend: ``(value or None, grads or None)``."""
        if call.backend == DASK:
            from .dask import run_dask  # Dask arrays: lazy, block by block (imports dask only now)

            return run_dask(self, call)
        spec = self._spec(call)
        token = compilelog.enter(type(self).__name__, call.want_value, call.want_grad)
        try:
            result = family_module(call.backend, spec.family).run(spec, call)
        finally:
            compilelog.leave(token)
        return result if call.origin is None else export_results(result, call.origin, (call.out, *call.grad_out))

    def _spec(self, call: Call) -> Any:
        """The family's spec for this call (``numba_losses._plan.<family>``)."""
        raise NotImplementedError

    def _scalar_weight(self) -> float:
        """The global weight as a float (MXNet's call-time check)."""
        return check_weight(self._weight)


_GLUON_KWARGS = ("prefix", "params")
# Spellings from PyTorch or MXNet's operators, and what this library calls them.
_HINTS = {
    "delta": "did you mean rho= (HuberLoss's threshold)?",
    "beta": "did you mean rho= (HuberLoss's threshold)?",
    "ignore_index": "did you mean ignore_label= (SoftmaxCELoss)?",
    "blank": "did you mean blank_label='first' or 'last' (CTCLoss)?",
    "reduction": "losses return one value per sample as in gluon (reduction='none'); reduce the output yourself",
    "size_average": "losses return one value per sample as in gluon; reduce the output yourself",
    "reduce": "losses return one value per sample as in gluon; reduce the output yourself",
    "log_target": "not supported: KLDivLoss's label holds probabilities, as in MXNet",
    "pos_weight": "pos_weight is an input of SigmoidBCELoss: loss(pred, label, sample_weight, pos_weight)",
    "sample_weight": "sample_weight is an input: loss(pred, label, sample_weight)",
    "smoothing": "did you mean label_smoothing= (SoftmaxCELoss) or smoothing_parameter= (SDMLLoss)?",
    "eps": "epsilon is an input of PoissonNLLLoss: loss(pred, target, sample_weight, epsilon)",
    "epsilon": "epsilon is an input of PoissonNLLLoss: loss(pred, target, sample_weight, epsilon)",
    "full": "did you mean compute_full= (PoissonNLLLoss)?",
    "log_input": "did you mean from_logits= (PoissonNLLLoss)?",
    "sparse": "did you mean sparse_label= (SoftmaxCELoss)?",
    "label_smoothing": "label_smoothing is a keyword of SoftmaxCELoss",
    "ignore_label": "ignore_label is a keyword of SoftmaxCELoss",
}
_P = inspect.Parameter
_OPTIONAL = "Array | None"
_BUFFERS = {  # the keyword-only arguments of each public method, after the inputs
    "__call__": (("out", _OPTIONAL),),
    "forward_backward": (("out_grad", _OPTIONAL), ("out", _OPTIONAL), ("grad_out", f"{_OPTIONAL} | tuple")),
    "backward": (("out_grad", _OPTIONAL), ("grad_out", f"{_OPTIONAL} | tuple")),
}
_RETURNS = {"__call__": "Array", "forward_backward": "tuple[Array, tuple[Array, ...]]", "backward": "tuple[Array, ...]"}


def _named_method(cls: type[Loss], method: str, extra: tuple[tuple[str, str], ...]) -> Any:
    """``Loss.<method>`` for ``cls``, with a signature that names ``cls``'s inputs."""
    base = getattr(Loss, method)

    def named(self: Loss, *args: Any, **kwargs: Any) -> Any:
        return base(self, *args, **kwargs)

    params = [_P("self", _P.POSITIONAL_OR_KEYWORD)]
    for i, name in enumerate(cls._inputs):
        if name in cls._scalar_inputs:
            params.append(_P(name, _P.POSITIONAL_OR_KEYWORD, default=cls._scalar_inputs[name], annotation="float"))
        elif i < cls._n_required:
            params.append(_P(name, _P.POSITIONAL_OR_KEYWORD, annotation="Array"))
        else:
            params.append(_P(name, _P.POSITIONAL_OR_KEYWORD, default=None, annotation=_OPTIONAL))
    params += [_P(name, _P.KEYWORD_ONLY, default=None, annotation=ann) for name, ann in extra]
    named.__signature__ = inspect.Signature(params, return_annotation=_RETURNS[method])
    named.__name__ = base.__name__
    named.__qualname__ = f"{cls.__qualname__}.{base.__name__}"
    named.__doc__ = base.__doc__
    named.__module__ = cls.__module__
    return named
