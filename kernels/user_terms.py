"""Loss terms written by users, adapted to the kernels' scalar signature.

:func:`make_term` turns two plain scalar Python functions, ``value(pred,
label, *params)`` and ``grad(pred, label, *params)`` (the derivative w.r.t.
``pred``), into a pair with the signature of :mod:`.scalar`,
``f(x, y, a, p0, p1)``, that both kernel factories (CPU and CUDA) inline
exactly like the built-in terms. At most two float parameters (the kernels'
``p0`` and ``p1`` slots). Results are rounded to the compute dtype (Python
float literals in a user's function promote float32 arithmetic to float64;
the rounding keeps the kernel's own loop in float32).
"""

from numba.extending import register_jitable

from ._options import HELPER
from .vmath import like

MAX_PARAMS = 2


def make_term(value_fn, grad_fn, n_params: int, name: str):
    """``(value, grad)`` in the kernels' signature, calling ``value_fn`` / ``grad_fn``."""
    if not 0 <= n_params <= MAX_PARAMS:
        raise ValueError(f"a user loss takes at most {MAX_PARAMS} float parameters, got {n_params}")
    uv = register_jitable(**HELPER)(value_fn)
    ug = register_jitable(**HELPER)(grad_fn)
    if n_params == 0:

        def value(x, y, a, p0, p1):
            return like(x, uv(x, y))

        def grad(x, y, a, p0, p1):
            return like(x, ug(x, y))

    elif n_params == 1:

        def value(x, y, a, p0, p1):
            return like(x, uv(x, y, p0))

        def grad(x, y, a, p0, p1):
            return like(x, ug(x, y, p0))

    else:

        def value(x, y, a, p0, p1):
            return like(x, uv(x, y, p0, p1))

        def grad(x, y, a, p0, p1):
            return like(x, ug(x, y, p0, p1))

    value.__name__ = value.__qualname__ = f"{name}_value"
    grad.__name__ = grad.__qualname__ = f"{name}_grad"
    return register_jitable(**HELPER)(value), register_jitable(**HELPER)(grad)
