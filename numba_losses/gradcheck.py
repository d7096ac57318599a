"""Finite-difference check of a loss's analytic gradients."""

from __future__ import annotations

from typing import Any

import numpy as np

from .loss import Loss


class GradientCheckError(AssertionError):
    """Raised by :func:`check_gradient` when an analytic gradient is off."""


def check_gradient(
    loss: Loss,
    *inputs: Any,
    out_grad: Any = None,
    eps: float = 1e-6,
    tol: float = 1e-5,
    seed: int = 0,
    **kw_inputs: Any,
) -> dict[str, float]:
    r"""Compare ``loss.forward_backward`` with float64 central differences.

    For each differentiable input :math:`x` the reference is

    .. math:: \frac{\partial}{\partial x_j} \sum_b \mathrm{out}_b\, g_b
              \approx \frac{f(x + \epsilon e_j) - f(x - \epsilon e_j)}{2 \epsilon}

    with a random head gradient :math:`g` (or ``out_grad``), all in float64.

    Parameters
    ----------
    loss : Loss
        Any loss of the library.
    *inputs, **kw_inputs
        The loss inputs, as for calling the loss. Differentiable ones are
        copied to float64; keep them small (two loss calls per element).
        Only ``forward_backward`` runs (its values give the finite
        differences), so a check compiles one kernel variant per loss.
    out_grad : array_like, optional
        Head gradient; default a fixed random array of the output's shape.
    eps : float
        Finite-difference step.
    tol : float
        Largest accepted error, ``max|fd - analytic| / max(1, max|fd|)``.
    seed : int
        Seed of the random head gradient.

    Returns
    -------
    dict
        The error for each differentiable input, by name.

    Raises
    ------
    GradientCheckError
        With a readable report when an error exceeds ``tol``.
    TypeError
        When ``loss`` is not a :class:`Loss`. A :class:`MakeLoss` replaces the
        head gradient with a constant, so its gradient is not the derivative of
        its output: check the loss it wraps, ``check_gradient(m.loss, ...)``.
    """
    if not isinstance(loss, Loss):
        hint = ""
        if isinstance(getattr(loss, "loss", None), Loss):
            hint = (
                f" {type(loss).__name__} replaces the head gradient with a constant, so its gradient is not"
                " the derivative of its output; check the loss it wraps: check_gradient(m.loss, ...)"
            )
        raise TypeError(f"check_gradient needs a numba_losses Loss, got {type(loss).__name__}.{hint}")
    bound = loss._bind(inputs, kw_inputs)
    names = loss._differentiable
    for name in names:
        bound[name] = np.array(bound[name], dtype=np.float64)
    call = {k: v for k, v in bound.items() if v is not None}
    out, grads = loss.forward_backward(out_grad=None, **call)
    head = (
        np.random.default_rng(seed).uniform(0.5, 1.5, np.shape(out))
        if out_grad is None
        else np.broadcast_to(np.asarray(out_grad, dtype=np.float64), np.shape(out))
    )
    _, grads = loss.forward_backward(out_grad=head, **call)

    def objective() -> float:  # forward_backward's values: the one kernel variant already compiled above
        return float(np.sum(np.asarray(loss.forward_backward(**call)[0], dtype=np.float64) * head))

    errors: dict[str, float] = {}
    report = []
    for name, analytic in zip(names, grads, strict=True):
        x = call[name]
        fd = np.empty(x.shape)
        flat, fd_flat = x.reshape(-1), fd.reshape(-1)
        for j in range(flat.size):
            keep = flat[j]
            flat[j] = keep + eps
            up = objective()
            flat[j] = keep - eps
            down = objective()
            flat[j] = keep
            fd_flat[j] = (up - down) / (2 * eps)
        diff = np.abs(fd - np.asarray(analytic, dtype=np.float64))
        err = float(diff.max() / max(1.0, float(np.abs(fd).max()))) if diff.size else 0.0
        errors[name] = err
        if not err <= tol:
            j = int(np.nanargmax(diff)) if diff.size else 0
            report.append(
                f"  {name}: error {err:.3g} > tol {tol:.3g}; worst element {np.unravel_index(j, x.shape)}: "
                f"finite difference {fd.reshape(-1)[j]:.9g}, analytic {np.asarray(analytic).reshape(-1)[j]:.9g}"
            )
    if report:
        raise GradientCheckError(f"gradient check of {type(loss).__name__} failed:\n" + "\n".join(report))
    return errors
