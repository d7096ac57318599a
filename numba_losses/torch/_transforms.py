"""The losses inside ``torch.func`` transforms and with forward-mode AD (dual tensors).

The eager node (:class:`~._ops.EagerFunction`) writes its context in ``forward``, which the
``torch.func`` transforms do not accept, and reads tensors' memory, which a transform's wrapped
tensors do not have. :class:`TransformFunction` is the same fused kernel in the form the transforms
need: ``forward`` without a context (``torch.func`` hands it the plain tensors under its wrappers),
``setup_context``, a ``backward`` and a ``jvp`` built from the gradients the forward computed, and a
``vmap`` rule. So ``torch.func.grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``vmap`` (over all
of these) and ``torch.autograd.forward_ad`` work, for the calls whose gradient for a head gradient
scales sample by sample (:func:`~._ops.plan`'s ``fused``: every element of a differentiable input
reaches one output element).

For such a call, with the kept gradient :math:`g = \\partial \\sum_j o_j / \\partial x` and
:math:`b(k)` the output element that input element :math:`k` reaches,

.. math::

    \\bar x_k = g_k\\, \\bar o_{b(k)} \\quad (\\text{backward}), \\qquad
    \\dot o_b = \\sum_{k:\\, b(k) = b} g_k\\, \\dot x_k \\quad (\\text{jvp}).

The other calls (SDMLLoss, an output grown by ``sample_weight``, a broadcast input) go through
:class:`KernelBackwardFunction`: reverse mode only, its backward runs the backward kernel with the
cotangent (mapped one element at a time under ``vmap``, as ``jacrev`` needs).

MakeLoss's backward is its gradient whatever the head gradient (MXNet's rule); it has no
forward-mode derivative. Second derivatives (``hessian``, ``grad`` of ``grad``, ``jvp`` of ``grad``)
raise: the kernels give first derivatives, and an outer transform would read the saved gradients as
constants (a Hessian of zeros).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd import forward_ad

from ._ops import _INFO, _LOSSES, _backward_of, _run, inner, plan, planned_empty

try:  # PyTorch's own record of the active transforms (absent in builds without functorch)
    from torch._functorch.pyfunctorch import TransformType, retrieve_all_functorch_interpreters
except ImportError:  # pragma: no cover - every supported PyTorch has it
    retrieve_all_functorch_interpreters = None

#: The innermost transform or ``None``: a cheap first test (a tenth of a microsecond) for every eager call.
_innermost = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", lambda: None)


def _active_transforms() -> list[Any]:
    """The ``torch.func`` interpreters on the stack, outermost first (empty outside every transform)."""
    return list(retrieve_all_functorch_interpreters()) if retrieve_all_functorch_interpreters else []


def _differentiating(transforms: list[Any]) -> int:
    """How many of ``transforms`` take derivatives (``grad`` / ``vjp`` / ``jvp`` levels; ``vmap`` does not)."""
    return sum(t.key() in (TransformType.Grad, TransformType.Jvp) for t in transforms)


def in_transform(tensors: list[torch.Tensor | None]) -> bool:
    """Whether a call runs inside a ``torch.func`` transform or has a dual tensor of forward-mode AD."""
    if _innermost() is not None:
        return True
    return _has_tangent(tensors)


def _has_tangent(tensors: list[torch.Tensor | None]) -> bool:
    """Whether a tensor is a dual tensor of ``torch.autograd.forward_ad`` (inside ``dual_level()``)."""
    if getattr(forward_ad, "_current_level", -1) >= 0:
        return any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors)
    return False


def transform_forward(key: int, owner: str, tensors: list[torch.Tensor | None]) -> torch.Tensor:
    """The loss of a call inside a transform (see :func:`in_transform`), through :class:`TransformFunction`."""
    if not plan(key, tensors, True).fused:  # reverse mode only: the backward kernel with the cotangent
        return KernelBackwardFunction.apply(key, *tensors)
    fused = (
        _differentiating(_active_transforms()) > 0
        or _has_tangent(tensors)
        or (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))
    )  # else (vmap alone) the plain forward: no gradient work
    return TransformFunction.apply(key, fused, *tensors)[0]


def _second_order(owner: str) -> NotImplementedError:
    return NotImplementedError(
        f"{owner}: second derivatives (hessian, grad of grad, jvp of grad, ...) are not supported; the kernels "
        "compute first derivatives only"
    )


class TransformFunction(torch.autograd.Function):
    """The fused loss as ``torch.func`` transforms and forward-mode AD need it (see the module docstring).

    ``TransformFunction.apply(key, fused, *inputs)`` returns ``(out, *grads)``: the loss and, when
    ``fused``, for every differentiable input its gradient for a head gradient of ones (not
    differentiable; callers use ``out``). Only for calls whose :func:`~._ops.plan` is fused;
    ``fused`` false (nothing differentiates the call: ``vmap`` alone) runs the plain forward.
    """

    @staticmethod
    def forward(key: int, fused: bool, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # noqa: D102
        return tuple(_run(key, list(inputs), fused))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:  # noqa: D102
        key, ctx.fused, *xs = inputs
        _, *grads = output
        ctx.mark_non_differentiable(*grads)
        ctx.set_materialize_grads(False)  # absent tangents stay None (not zeros): a constant label is no error
        ctx.save_for_backward(*grads)
        ctx.save_for_forward(*grads)
        ctx.plan = plan(key, xs, True)
        _record(ctx, key)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor | None, *_: Any) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        _check_backward(ctx, ctx.needs_input_grad[2:])
        info = ctx.info
        if not ctx.fused:  # pragma: no cover - fused whenever anything could differentiate the call
            raise RuntimeError(f"{ctx.owner}: no gradient was computed for this call")
        result: list[torch.Tensor | None] = [None] * info.n_inputs
        for k, (i, grad) in enumerate(zip(info.diff, ctx.saved_tensors, strict=True)):
            if info.makeloss:  # MXNet's MakeLoss ignores the head gradient
                result[i] = grad
            elif g is not None:
                result[i] = grad * g.reshape(ctx.plan.views[k])
        return (None, None, *result)

    @staticmethod
    def jvp(ctx: Any, _key: Any, _fused: Any, *tangents: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        info = ctx.info
        if info.makeloss:
            raise NotImplementedError(
                f"MakeLoss({ctx.owner}): forward-mode AD is not supported (MakeLoss replaces the head gradient, "
                "a rule of the backward pass only)"
            )
        for j, t in enumerate(tangents):
            if t is not None and j not in info.diff:
                raise _not_differentiated(ctx, j)
        if not ctx.fused:  # pragma: no cover - a tangent makes the call fused
            raise RuntimeError(f"{ctx.owner}: no gradient was computed for this call")
        out_shape = ctx.plan.out[0]
        total = None
        for k, (i, grad) in enumerate(zip(info.diff, ctx.saved_tensors, strict=True)):
            t = tangents[i]
            if t is None:
                continue
            term = grad * t
            dims = [d for d, v in enumerate(ctx.plan.views[k]) if v == 1]
            term = (term.sum(dims) if dims else term).reshape(out_shape)  # sum([]) would sum everything
            total = term if total is None else total + term
        if total is None:
            total = torch.zeros(out_shape, dtype=ctx.plan.out[1], device=ctx.saved_tensors[0].device)
        return (total, *(None for _ in info.diff))

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], key: int, fused: bool, *inputs: Any) -> tuple[Any, Any]:  # noqa: D102
        # One call per mapped element, stacked: the mapped axis must not become the loss's batch axis.
        dims = in_dims[2:]
        if info.batch_size:
            results = _map(info, dims, inputs, lambda *xs: TransformFunction.apply(key, fused, *xs))
        else:  # an empty stack: the shapes from the plan of one element
            each = [
                x if d is None else x.new_empty(x.movedim(d, 0).shape[1:]) for x, d in zip(inputs, dims, strict=True)
            ]
            p = plan(key, each, True)
            device = next(x for x in inputs if x is not None).device
            results = tuple(planned_empty([p.out, *p.grads] if fused else [p.out], device, lead=(0,)))
        return results, (0,) * len(results)


class KernelBackwardFunction(torch.autograd.Function):
    """Reverse mode for the calls whose gradient does not scale per sample (SDMLLoss, grown outputs, ...).

    ``KernelBackwardFunction.apply(key, *inputs)`` returns the loss; its backward runs the backward
    kernel with the cotangent (:class:`_BackwardCall`, which ``vmap`` maps one element at a time,
    as ``jacrev`` and per-sample gradients need). No forward-mode rule: ``jvp`` raises.
    """

    @staticmethod
    def forward(key: int, *inputs: torch.Tensor | None) -> torch.Tensor:  # noqa: D102
        return _run(key, list(inputs), False)[0]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: D102
        key, *xs = inputs
        ctx.loss = _LOSSES[key]  # the object: a temporary module (and its registry key) may be gone by the backward
        ctx.save_for_backward(*xs)
        _record(ctx, key)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        _check_backward(ctx, ctx.needs_input_grad[1:])
        info = ctx.info
        result: list[torch.Tensor | None] = [None] * info.n_inputs
        if g is not None:
            for i, dx in zip(info.diff, _BackwardCall.apply(ctx.loss, g, *ctx.saved_tensors), strict=True):
                result[i] = dx
        return (None, *result)

    @staticmethod
    def jvp(ctx: Any, *_: Any) -> Any:  # noqa: D102
        raise NotImplementedError(
            f"{ctx.owner}: forward-mode AD (jvp, jacfwd, dual tensors) is supported only for losses whose gradient "
            "scales sample by sample (not SDMLLoss, an output grown by sample_weight, an input broadcast along the "
            "batch axis, or a softmax over the batch axis); use reverse mode (grad, vjp, jacrev)"
        )

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], key: int, *inputs: Any) -> tuple[Any, Any]:  # noqa: D102
        return _map(info, in_dims[1:], inputs, lambda *xs: (KernelBackwardFunction.apply(key, *xs),))[0], 0


class _BackwardCall(torch.autograd.Function):
    """``_BackwardCall.apply(loss, out_grad, *inputs)``: the gradients of the differentiable inputs for
    ``out_grad`` (the backward kernel), with a ``vmap`` rule. Not differentiable (first derivatives only)."""

    @staticmethod
    def forward(loss: Any, out_grad: torch.Tensor, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # noqa: D102
        return tuple(_backward_of(loss, list(inputs), out_grad))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:  # noqa: D102
        ctx.mark_non_differentiable(*output)

    @staticmethod
    def backward(ctx: Any, *_: Any) -> Any:  # noqa: D102
        raise _second_order("numba_losses")

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], loss: Any, *args: Any) -> tuple[Any, Any]:  # noqa: D102
        results = _map(info, in_dims[1:], args, lambda *a: _BackwardCall.apply(loss, *a))
        return results, (0,) * len(results)


def _map(info: Any, dims: tuple[Any, ...], args: tuple[Any, ...], fn: Any) -> tuple[torch.Tensor, ...]:
    """``fn`` once per mapped element (``dims``: each argument's mapped axis or ``None``), results stacked."""
    if info.batch_size == 0:
        raise NotImplementedError(
            "numba_losses: vmap over an empty batch of a loss whose gradient does not scale per sample"
        )
    moved = [a if d is None else a.movedim(d, 0) for a, d in zip(args, dims, strict=True)]
    calls = [fn(*(a if d is None else a[b] for a, d in zip(moved, dims, strict=True))) for b in range(info.batch_size)]
    return tuple(torch.stack(parts) for parts in zip(*calls, strict=True))


def _record(ctx: Any, key: int) -> None:
    """What both rules' backward and jvp read, and the refusal of second derivatives at the forward.

    An outer differentiating transform (``grad`` / ``jvp`` level) besides the one differentiating this
    call would differentiate the backward, reading the saved gradients as constants.
    """
    loss = inner(_LOSSES[key])
    ctx.info, ctx.owner, ctx.names = _INFO[key], type(loss).__name__, loss._inputs
    transforms = _active_transforms()
    ctx.in_transform = bool(transforms)
    if _differentiating(transforms) > 1:
        raise _second_order(ctx.owner)


def _check_backward(ctx: Any, needs_input_grad: tuple[bool, ...]) -> None:
    """Refuse a differentiated backward (plain autograd's ``create_graph=True``) and gradients for inputs
    the loss does not differentiate."""
    if not ctx.in_transform and torch.is_grad_enabled():
        raise _second_order(ctx.owner)
    for j, needed in enumerate(needs_input_grad):
        if needed and j not in ctx.info.diff:
            raise _not_differentiated(ctx, j)


def _not_differentiated(ctx: Any, j: int) -> NotImplementedError:
    names = ctx.names
    return NotImplementedError(
        f"{ctx.owner}: a transform differentiates {names[j]}, but the loss is not differentiated with respect to "
        f"it (only {', '.join(names[i] for i in ctx.info.diff)}); treat it as a constant"
    )
