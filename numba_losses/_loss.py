"""The ``Loss`` base class: gluon's calling convention, weighting and the public methods."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import check_weight


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
        Accepted and ignored (gluon's ``prefix`` / ``params``).

    Notes
    -----
    Subclasses declare their inputs in ``_inputs`` (gluon's ``hybrid_forward``
    order, the first ``_n_required`` mandatory) and the differentiable ones in
    ``_differentiable``; they implement ``_run``. Every input may be given
    positionally (``None`` skips an optional one) or by keyword.

    Three entry points share one kernel pass:

    * ``loss(*inputs)`` - forward values;
    * ``loss.forward_backward(*inputs, out_grad=None)`` - ``(out, grads)``;
    * ``loss.backward(*inputs, out_grad=None)`` - ``grads`` only.

    ``grads`` is a tuple with one array per differentiable input: the gradient
    of ``sum(out * out_grad)`` (``out_grad`` defaults to ones).
    """

    _inputs: tuple[str, ...] = ("pred", "label", "sample_weight")
    _n_required: int = 2
    _differentiable: tuple[str, ...] = ("pred",)
    _scalar_inputs: dict[str, Any] = {}
    _output_ndim: int | None = None  # when fixed: lets MakeLoss(normalization='batch') fuse its pass

    def __init__(self, weight: float | None, batch_axis: int, **kwargs: Any) -> None:
        self._weight = weight
        self._batch_axis = batch_axis

    def __repr__(self) -> str:
        params = ", ".join(f"{k.lstrip('_')}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    # -- public API -------------------------------------------------------
    def __call__(self, *args: Any, out: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Forward pass: the loss per sample (shape per the class docstring)."""
        inputs = self._bind(args, kwargs)
        value, _ = self._run(inputs, want_value=True, want_grad=False, out=out)
        return value

    def forward_backward(
        self,
        *args: Any,
        out_grad: Any = None,
        out: np.ndarray | None = None,
        grad_out: np.ndarray | tuple[np.ndarray, ...] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Forward values and gradients in one fused pass.

        Parameters
        ----------
        *args, **kwargs
            The loss inputs, as for ``__call__``.
        out_grad : array_like, optional
            Head gradient, the shape of the output; default ones.
        out, grad_out : ndarray, optional
            Preallocated buffers for the output and the gradient(s) (one array,
            or a tuple with one per differentiable input), reused across calls.

        Returns
        -------
        out : ndarray
        grads : tuple of ndarray
            One gradient per differentiable input, in input order.
        """
        inputs = self._bind(args, kwargs)
        return self._run(inputs, want_value=True, want_grad=True, out_grad=out_grad, out=out, grad_out=grad_out)

    def backward(
        self,
        *args: Any,
        out_grad: Any = None,
        grad_out: np.ndarray | tuple[np.ndarray, ...] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, ...]:
        """Gradients only (same arguments as :meth:`forward_backward`)."""
        inputs = self._bind(args, kwargs)
        _, grads = self._run(inputs, want_value=False, want_grad=True, out_grad=out_grad, grad_out=grad_out)
        return grads

    # -- helpers for subclasses ---------------------------------------------
    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map positional and keyword inputs onto ``_inputs`` (gluon order)."""
        names = self._inputs
        name = type(self).__name__
        if len(args) > len(names):
            raise TypeError(f"{name} takes at most {len(names)} inputs ({', '.join(names)}), got {len(args)}")
        bound: dict[str, Any] = dict(zip(names, args, strict=False))
        for key, val in kwargs.items():
            if key not in names:
                raise TypeError(f"{name} got an unexpected input {key!r}; inputs are {', '.join(names)}")
            if key in bound:
                raise TypeError(f"{name} got input {key!r} both positionally and by keyword")
            bound[key] = val
        missing = [n for n in names[: self._n_required] if bound.get(n) is None]
        if missing:
            raise TypeError(f"{name} is missing required input(s): {', '.join(missing)}")
        for n in names:
            if bound.get(n) is None:
                bound[n] = self._scalar_inputs.get(n)  # None, or a scalar input's default
        return bound

    def _scalar_weight(self) -> float:
        """The global weight as a float (MXNet's call-time check)."""
        return check_weight(self._weight)

    def _run(
        self,
        inputs: dict[str, Any],
        *,
        want_value: bool,
        want_grad: bool,
        out_grad: Any = None,
        out: np.ndarray | None = None,
        grad_out: Any = None,
    ) -> tuple[Any, Any]:
        raise NotImplementedError


def single_grad_out(grad_out: Any) -> np.ndarray | None:
    """Accept ``grad_out`` as one array or a 1-tuple for single-gradient losses."""
    if isinstance(grad_out, (tuple, list)):
        if len(grad_out) != 1:
            raise ValueError(f"grad_out: expected 1 buffer, got {len(grad_out)}")
        return grad_out[0]
    return grad_out
