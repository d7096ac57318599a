"""Constructor parameter checks: every loss validates its parameters when it is built.

``weight`` and ``batch_axis`` keep MXNet's call-time checks (``weight``:
``AssertionError``; see ``validate.check_weight``). MXNet checks little else (a string
``margin`` or ``rho=0`` fail deep inside a computation, or not at all). Here a
parameter that cannot mean anything raises at construction, with the class,
the parameter and what was expected in the message:

* a number of the wrong type (``'1'``, ``None``, ``[1]``, ``True``) ->
  ``TypeError``;
* NaN or infinity where the result would be NaN or meaningless, and values
  outside a documented range (``rho <= 0``, ``label_smoothing`` outside
  [0, 1]) -> ``ValueError``;
* a flag that is not a bool (``from_logits='False'`` is truthy in MXNet) ->
  ``TypeError``;
* an axis that is not an integer -> ``TypeError``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def check_real(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float, in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Raises
    ------
    TypeError
        ``value`` is not a real number (bools are refused).
    ValueError
        ``value`` is NaN, infinite, or out of range.
    """
    if not _is_real(value):
        raise TypeError(f"{owner}: {name} must be a real number, got {_describe(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    if low is not None and (result <= low if low_open else result < low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ValueError(f"{owner}: {name} must be {bound}, got {value!r}")
    if high is not None and result > high:
        raise ValueError(f"{owner}: {name} must be <= {high:g}, got {value!r}")
    return result


def check_flag(owner: str, name: str, value: Any) -> bool:
    """A bool parameter: ``True`` / ``False`` (NumPy bools and the integers 0 and 1 too)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{owner}: {name} must be True or False, got {_describe(value)}")


def check_int(owner: str, name: str, value: Any) -> int:
    """An axis or count parameter: an integer (bools are refused)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{owner}: {name} must be an integer, got {_describe(value)}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    """A string parameter with a fixed set of values."""
    if isinstance(value, str) and value in choices:
        return value
    listed = ", ".join(repr(c) for c in choices)
    raise ValueError(f"{owner}: {name} must be one of {listed}, got {_describe(value)}")
