r"""Make your own elementwise loss from two scalar functions.

:func:`elementwise_loss` compiles a user's value and derivative functions with
the same kernel factories as the built-in losses (CPU threads and CUDA), and
wraps them in a :class:`~numba_losses.Loss` subclass with the base class's
``weight``, ``batch_axis`` and ``sample_weight`` semantics:

.. math:: \mathrm{out}_b = \frac{w}{K} \sum_{i \ne b} s_{bi}\, \ell(x_{bi}, y_{bi}; \theta),
          \qquad
          \frac{\partial\, \mathrm{out}_b}{\partial x_{bi}} = \frac{w}{K}\, s_{bi}\,
          \partial_x \ell(x_{bi}, y_{bi}; \theta)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from numba.core.errors import NumbaError

from numba_losses.kernels.user_terms import MAX_PARAMS, make_term

from ._core.params import check_real
from .elementwise import ElementwiseLoss


class UserCompileError(TypeError):
    """A user's loss function could not be compiled by Numba."""


def elementwise_loss(
    value_fn: Callable[..., float],
    grad_fn: Callable[..., float],
    *,
    name: str | None = None,
    params: Sequence[str] | Mapping[str, float] = (),
) -> type[ElementwiseLoss]:
    r"""A new loss class from a scalar loss term and its derivative.

    Parameters
    ----------
    value_fn : callable
        ``value_fn(pred, label, *params) -> float``: the term :math:`\ell` for
        one element. Plain Python that Numba can compile (``math`` functions,
        arithmetic, comparisons, ``if``); called with the compute dtype's
        scalars. NumPy ufuncs such as ``np.sign`` compile for the CPU but not
        for CUDA (numba-cuda lacks them): prefer ``math`` and comparisons.
    grad_fn : callable
        ``grad_fn(pred, label, *params) -> float``: :math:`\partial\ell/\partial\,\mathrm{pred}`.
    name : str, optional
        Class name (default: ``value_fn``'s name in CamelCase plus ``Loss``).
    params : sequence of str or mapping of str to float
        Names of up to two float parameters, passed to the constructor by
        keyword (with defaults when given as a mapping) and to both functions
        after ``label``.

    Returns
    -------
    type
        A :class:`~numba_losses.elementwise.ElementwiseLoss` subclass:
        ``Cls(weight=None, batch_axis=0, **params)``, called as
        ``loss(pred, label, sample_weight=None)``, with ``forward_backward``
        and ``backward``, on NumPy and CUDA arrays.

    Raises
    ------
    ValueError
        More than two parameters.
    UserCompileError
        At first use, when Numba cannot compile ``value_fn`` or ``grad_fn``.

    Examples
    --------
    >>> import numpy as np, numba_losses as nl
    >>> def l1(pred, label):
    ...     return abs(label - pred)
    >>> def l1_grad(pred, label):
    ...     return 1.0 if pred > label else (-1.0 if pred < label else 0.0)
    >>> MyL1 = nl.elementwise_loss(l1, l1_grad)
    >>> MyL1()(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    array([1.5])
    """
    value_fn = _python_function("value_fn", value_fn)
    grad_fn = _python_function("grad_fn", grad_fn)
    defaults = dict(params) if isinstance(params, Mapping) else dict.fromkeys(params)
    if len(defaults) > MAX_PARAMS:
        raise ValueError(f"a user loss takes at most {MAX_PARAMS} float parameters, got {len(defaults)}")
    cls_name = name or "".join(p.capitalize() for p in value_fn.__name__.split("_")) + "Loss"
    n_params = len(defaults)
    _term_for(value_fn, grad_fn, n_params, cls_name)  # checks the functions' arity limits now
    param_names = tuple(defaults)
    fn_names = f"value_fn {value_fn.__qualname__!r} / grad_fn {grad_fn.__qualname__!r}"

    def __init__(self, weight: float | None = None, batch_axis: int = 0, **kwargs: Any) -> None:
        values = {}
        for p in param_names:
            if p in kwargs:
                values[p] = check_real(cls_name, p, kwargs.pop(p))
            elif defaults[p] is None:
                raise TypeError(f"{cls_name} needs the parameter {p!r}")
            else:
                values[p] = check_real(cls_name, p, defaults[p])
        if kwargs:
            raise TypeError(f"{cls_name} got unexpected parameter(s) {', '.join(kwargs)}")
        ElementwiseLoss.__init__(self, weight, batch_axis)
        self._params = values

    def _term(self, inputs):
        vals = [self._params[p] for p in param_names] + [0.0, 0.0]
        return _term_for(value_fn, grad_fn, n_params, cls_name), vals[0], vals[1]

    def __reduce__(self):
        # Rebuilt from the user's functions in the receiving process (pickle, cloudpickle, Dask workers):
        # the compiled term is never pickled, it is made again there.
        return _rebuild, (value_fn, grad_fn, cls_name, tuple(defaults.items()), dict(self.__dict__))

    def _run(self, call):
        try:
            return ElementwiseLoss._run(self, call)
        except (NumbaError, LookupError) as exc:  # numba-cuda reports unknown ufuncs as KeyError
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = " | ".join(lines[:6])[:800] or type(exc).__name__
            raise UserCompileError(f"{cls_name}: Numba cannot compile {fn_names}: {detail}") from exc

    doc = f"User-made elementwise loss ``{value_fn.__qualname__}`` (see :func:`numba_losses.elementwise_loss`)."
    return type(
        cls_name,
        (ElementwiseLoss,),
        {
            "__init__": __init__,
            "_term": _term,
            "_run": _run,
            "__reduce__": __reduce__,
            "__doc__": doc,
            "__module__": value_fn.__module__,
        },
    )


def _python_function(name: str, fn: Any) -> Callable[..., float]:
    """The plain Python function behind ``fn``: a Numba-compiled one (``@njit``) gives its ``py_func``,
    which the library compiles for each target itself."""
    py_func = getattr(fn, "py_func", None)
    if callable(py_func):
        return py_func
    if not callable(fn) or isinstance(fn, type):
        raise TypeError(f"elementwise_loss: {name} must be a function, got {fn!r} ({type(fn).__name__})")
    return fn


# A user's term is registered with Numba (``register_jitable``) in each process. The registered pair
# is kept here, never in the class: a class or function pickled by value (cloudpickle) would carry a
# copy of the pair that Numba no longer knows ("Untyped global name 'value'" on a Dask worker).
_TERMS: dict[Any, tuple[Any, Any, Any]] = {}
_CLASSES: dict[Any, type[ElementwiseLoss]] = {}


def _fn_key(fn: Callable[..., float]) -> Any:
    """A key equal for copies of one function (unpickled by value again and again on a worker).

    Code, defaults, closure values and the values of the globals it names are
    part of the key: Numba freezes globals at compilation, so a function
    redefined with another global value (a notebook) gets a new term.
    """
    try:
        cells = tuple(c.cell_contents for c in fn.__closure__ or ())
        names = fn.__code__.co_names
        glob = tuple((n, fn.__globals__[n]) for n in names if n in fn.__globals__)
        key = (fn.__module__, fn.__qualname__, fn.__code__, fn.__defaults__, cells, glob)
        hash(key)
    except (AttributeError, TypeError, ValueError):  # a callable object, an unhashable closure value, an empty cell
        return ("id", id(fn))
    return key


def _term_for(value_fn: Callable[..., float], grad_fn: Callable[..., float], n_params: int, name: str) -> Any:
    """The kernels' ``(value, grad)`` pair of a user term, made once per process and function pair."""
    key = (_fn_key(value_fn), _fn_key(grad_fn), n_params, name)
    entry = _TERMS.get(key)
    if entry is None:  # the functions are kept with the pair: an id in a key stays theirs
        entry = _TERMS[key] = (make_term(value_fn, grad_fn, n_params, name), value_fn, grad_fn)
    return entry[0]


def _rebuild(value_fn, grad_fn, name: str, params: tuple, state: dict) -> ElementwiseLoss:
    """Unpickle a user-made loss: its class made again from the functions (once per process)."""
    key = (_fn_key(value_fn), _fn_key(grad_fn), name, params)
    cls = _CLASSES.get(key)
    if cls is None:
        cls = _CLASSES[key] = elementwise_loss(value_fn, grad_fn, name=name, params=dict(params))
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj
