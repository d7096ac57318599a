"""The ``torch.library`` custom operators: one per loss family, with fake and autograd rules.

Loss objects carry parameters that are not tensors (axes, margins, user
functions), so they are kept in a registry and the operator receives the
registry key, an ``int``. An ``int`` argument is a constant of a compiled
graph, so the key survives ``torch.compile`` (a new key is a new constant:
a recompile, never a wrong result).

Every family has two operators:

* ``numba_losses::<family>(int key, Tensor x0, Tensor? x1, ..., Tensor? x4, bool want_grad) -> Tensor[]``
  (the loss's inputs in order, ``None`` past the last; autograd sees tensors only as separate arguments):
  ``[out]``, or ``[out, grad, ...]`` (one gradient per differentiable input,
  the library's fused ``forward_backward`` with a head gradient of ones) when
  ``want_grad`` and the gradient for any head gradient is that one scaled per
  sample (:func:`plan`);
* ``numba_losses::<family>_backward(int key, Tensor?[] inputs, Tensor out_grad) -> Tensor[]``:
  the gradients for a head gradient, for the calls where scaling is not exact.

Their fake implementations read shapes from ``Loss.result_shapes`` (no kernel
runs); their autograd rule saves at most one gradient per input that requires
grad (fused) or only the inputs (not fused). :class:`EagerFunction` runs the
same functions without the dispatcher for eager calls.
"""

from __future__ import annotations

import functools
import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from ..ctc import CTCLoss
from ..elementwise import ElementwiseLoss, KLDivLoss
from ..loss import Loss
from ..makeloss import MakeLoss
from ..pairwise import CosineEmbeddingLoss, TripletLoss
from ..sdml import SDMLLoss
from ..softmax import SoftmaxCrossEntropyLoss
from ._bridge import Meta, to_array, to_tensor, torch_dtype

FAMILIES = ("elementwise", "softmax", "ctc", "pairwise", "sdml", "makeloss")
#: Input slots of the forward operator (CTCLoss has the most inputs).
N_SLOTS = 5

_LOSSES: dict[int, Loss | MakeLoss] = {}
_INFO: dict[int, Info] = {}
_KEYS = itertools.count()


@dataclass(frozen=True)
class Info:
    """What every call of a registered loss reads: its inputs' count, the differentiable ones, MakeLoss or not."""

    n_inputs: int
    diff: tuple[int, ...]
    makeloss: bool


def register(loss: Loss | MakeLoss, owner: Any = None) -> int:
    """Put ``loss`` in the registry; the key is dropped when ``owner`` is collected (never if ``None``)."""
    key = next(_KEYS)
    names = inner(loss)._inputs
    _LOSSES[key] = loss
    diff = tuple(names.index(n) for n in inner(loss)._differentiable)
    _INFO[key] = Info(len(names), diff, isinstance(loss, MakeLoss))
    if owner is not None:
        weakref.finalize(owner, _forget, key)
    return key


def _forget(key: int) -> None:
    _LOSSES.pop(key, None)
    _INFO.pop(key, None)


def family_of(loss: Loss | MakeLoss) -> str:
    """The loss family (the operator) of a loss object."""
    if isinstance(loss, MakeLoss):
        return "makeloss"
    if isinstance(loss, KLDivLoss):
        return "elementwise" if loss._from_logits else "softmax"
    for cls, family in (
        (ElementwiseLoss, "elementwise"),
        (SoftmaxCrossEntropyLoss, "softmax"),
        (CTCLoss, "ctc"),
        ((TripletLoss, CosineEmbeddingLoss), "pairwise"),
        (SDMLLoss, "sdml"),
    ):
        if isinstance(loss, cls):
            return family
    raise TypeError(f"expected a numba_losses loss or MakeLoss, got {type(loss).__name__}")


def inner(loss: Loss | MakeLoss) -> Loss:
    """The loss whose inputs a call binds (MakeLoss's wrapped loss)."""
    return loss.loss if isinstance(loss, MakeLoss) else loss


@dataclass(frozen=True)
class Plan:
    """Shapes of one call and how its backward is done.

    ``fused``: the forward computes the gradients for ones; the backward
    multiplies gradient ``i`` by ``out_grad.reshape(views[i])`` (MakeLoss: by
    nothing, its head gradient is its own).
    """

    out: tuple[tuple[int, ...], torch.dtype]
    grads: tuple[tuple[tuple[int, ...], torch.dtype], ...]
    fused: bool
    views: tuple[tuple[int, ...] | None, ...]


def _args(loss: Loss, inputs: list[torch.Tensor | None], fake: bool) -> list[Any]:
    """The loss's positional inputs: arrays (or shape descriptions), scalar inputs as floats."""
    scalars = inner(loss)._scalar_inputs
    if not scalars:
        return [None if t is None else Meta(t) if fake else to_array(t) for t in inputs]
    out = []
    for name, t in zip(inner(loss)._inputs, inputs, strict=True):
        if t is None:
            out.append(None)
        elif name in scalars:
            out.append(scalars[name] if fake else float(t.item()))
        else:
            out.append(Meta(t) if fake else to_array(t))
    return out


def _signature(inputs: list[torch.Tensor | None]) -> tuple[Any, ...]:
    """Shapes and dtypes: the ``torch.Size`` itself (a tuple, no conversion per call), or ints for symbolic sizes."""
    sig = tuple(None if t is None else (t.shape, t.dtype) for t in inputs)
    try:
        hash(sig)
    except TypeError:  # SymInts (torch.compile's dynamic shapes) do not hash: read them as ints (a guard)
        sig = tuple(None if t is None else (tuple(int(n) for n in t.shape), t.dtype) for t in inputs)
    return sig


def plan(key: int, inputs: list[torch.Tensor | None], want_grad: bool) -> Plan:
    """The :class:`Plan` of a call (cached by key, shapes and dtypes)."""
    return _plan(key, _signature(inputs), want_grad)


@functools.lru_cache(maxsize=4096)
def _plan(key: int, sig: tuple[Any, ...], want_grad: bool) -> Plan:
    loss = _LOSSES[key]
    metas = [None if s is None else _Shape(*s) for s in sig]
    out, grads = loss.result_shapes(*_args(loss, metas, fake=True))
    out_t = (tuple(out.shape), torch_dtype(out.dtype))
    grads_t = tuple((tuple(g.shape), torch_dtype(g.dtype)) for g in grads)
    views = _scale_views(loss, [None if s is None else s[0] for s in sig], out_t[0]) if want_grad else None
    fused = want_grad and views is not None
    return Plan(out_t, grads_t, fused, views or ())


class _Shape:
    """A tensor-like description (shape, torch dtype) for :class:`Meta`."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.shape, self.dtype = shape, dtype


def _scale_views(loss: Loss | MakeLoss, shapes: list[tuple[int, ...] | None], out: tuple[int, ...]) -> Any:
    """Per differentiable input, the shape ``out_grad`` takes to scale the gradient for ones exactly; ``None``
    when that is not exact for this call (the backward then runs the kernel with ``out_grad``).

    Exact when every element of an input's gradient comes from one output element: a one-element output,
    or a per-sample output ``(n,)`` whose sample ``b`` reads only slice ``b`` of each differentiable input
    along the batch axis (the element- and row-wise families, CTC and Triplet when no broadcast input adds
    axes in front of ``pred``'s), or CosineEmbeddingLoss's ``(rows, 1)`` output, one per row (last axis)
    of its two inputs of one shape.
    """
    names = inner(loss)._inputs
    diff = [names.index(n) for n in inner(loss)._differentiable]
    if isinstance(loss, MakeLoss):
        return tuple(() for _ in diff)  # MXNet's MakeLoss ignores the head gradient
    n_out = 1
    for n in out:
        n_out *= n
    if n_out == 1:
        return tuple((1,) * len(shapes[i]) if shapes[i] is not None else None for i in diff)
    if isinstance(loss, CosineEmbeddingLoss):  # one output row per row (last axis) of both inputs
        first = shapes[diff[0]]
        if not first or any(shapes[i] != first for i in diff) or out != (math.prod(first[:-1]), 1):
            return None
        return tuple(first[:-1] + (1,) for _ in diff)
    if family_of(loss) not in ("elementwise", "softmax", "ctc") and not isinstance(loss, TripletLoss):
        return None
    pred = shapes[0]
    if len(out) != 1 or not pred:
        return None
    if any(s is not None and len(s) > len(pred) for s in shapes if s is not None) and family_of(loss) != "ctc":
        return None  # a broadcast input with more axes than pred shifts pred's axes
    axis = loss._batch_axis
    if not -len(pred) <= axis < len(pred) or pred[axis] != out[0]:
        return None
    axis %= len(pred)
    views = []
    for i in diff:
        if shapes[i] != pred:
            return None
        v = [1] * len(pred)
        v[axis] = out[0]
        views.append(tuple(v))
    return tuple(views)


def _device(inputs: list[torch.Tensor | None]) -> torch.device:
    return inputs[0].device  # x0 (pred) is never None: the schema's only non-optional tensor


def _slots(key: int, xs: tuple[torch.Tensor | None, ...]) -> list[torch.Tensor | None]:
    return list(xs[: len(inner(_LOSSES[key])._inputs)])


def _forward(key: int, *args: Any) -> list[torch.Tensor]:
    *xs, want_grad = args
    inputs = _slots(key, xs)
    return _run(key, inputs, want_grad and plan(key, inputs, want_grad).fused)


def _run(key: int, inputs: list[torch.Tensor | None], fused: bool) -> list[torch.Tensor]:
    """``[out]``, or ``[out, grad, ...]`` for a head gradient of ones when ``fused``."""
    loss = _LOSSES[key]
    device = _device(inputs)
    args = _args(loss, inputs, fake=False)
    if not fused:
        return [_own(to_tensor(loss(*args), device), inputs)]
    out, grads = loss.forward_backward(*args)
    return [_own(to_tensor(a, device), inputs) for a in (out, *grads)]


def _own(t: torch.Tensor, inputs: list[torch.Tensor | None]) -> torch.Tensor:
    """``t`` as a custom operator may return it: contiguous (the fake's layout) and not an input's memory."""
    if not t.is_contiguous():
        return t.contiguous()
    ptr = t.data_ptr()
    for x in inputs:
        if x is not None and ptr == x.data_ptr() and x.numel():
            return t.clone()
    return t


def planned_empty(
    shapes: list[tuple[Any, torch.dtype]], device: torch.device, lead: tuple[int, ...] = ()
) -> list[torch.Tensor]:
    """Uninitialised tensors of a plan's ``(shape, dtype)`` pairs, with the axes ``lead`` in front."""
    return [torch.empty((*lead, *s), dtype=d, device=device) for s, d in shapes]


def _forward_fake(key: int, *args: Any) -> list[torch.Tensor]:
    *xs, want_grad = args
    inputs = _slots(key, xs)
    p = plan(key, inputs, want_grad)
    return planned_empty([p.out, *p.grads] if p.fused else [p.out], _device(inputs))


def _backward_impl(key: int, inputs: list[torch.Tensor | None], out_grad: torch.Tensor) -> list[torch.Tensor]:
    return _backward_of(_LOSSES[key], inputs, out_grad)


def _backward_of(
    loss: Loss | MakeLoss, inputs: list[torch.Tensor | None], out_grad: torch.Tensor
) -> list[torch.Tensor]:
    device = _device(inputs)
    grads = loss.backward(*_args(loss, inputs, fake=False), out_grad=to_array(out_grad))
    return [_own(to_tensor(g, device), inputs) for g in grads]


def _backward_fake(key: int, inputs: list[torch.Tensor | None], out_grad: torch.Tensor) -> list[torch.Tensor]:
    return planned_empty(list(plan(key, inputs, False).grads), _device(inputs))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: list[torch.Tensor]) -> None:
    key, *xs, want_grad = inputs
    tensors = _slots(key, tuple(xs))
    loss = _LOSSES[key]
    names = inner(loss)._inputs
    ctx.key = key
    ctx.n_inputs = N_SLOTS
    ctx.diff = [names.index(n) for n in inner(loss)._differentiable]
    ctx.fused = len(output) > 1
    ctx.makeloss = isinstance(loss, MakeLoss)
    if ctx.fused:
        ctx.mark_non_differentiable(*output[1:])  # the gradients for ones: internal outputs
        ctx.set_materialize_grads(False)  # no zero-filled grad_output for them
        views = plan(key, list(tensors), want_grad).views
        kept = [i for i, _ in enumerate(ctx.diff) if tensors[ctx.diff[i]] is not None]
        kept = [i for i in kept if tensors[ctx.diff[i]].requires_grad]
        ctx.kept = kept
        ctx.views = [views[i] for i in kept]
        ctx.save_for_backward(*[output[1 + i] for i in kept])  # one gradient per input that requires grad
    else:
        ctx.present = [t is not None for t in tensors]
        ctx.save_for_backward(*[t for t in tensors if t is not None])


def _make_backward(backward_op: Any) -> Any:
    """The backward rule. The fused path scales a copy of the saved gradient (``saved * grad_output``): in
    place would save a gradient-sized allocation per step but break a second backward through the graph
    (``retain_graph=True``, as ``gradcheck`` and ``torch.autograd.functional.jacobian`` do)."""

    def backward(ctx: Any, grads: Any) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: the kernels give first derivatives only
            raise RuntimeError(
                "numba_losses: double backward (create_graph=True) is not supported; the kernels compute first "
                "derivatives only"
            )
        g = grads[0]
        result: list[torch.Tensor | None] = [None] * ctx.n_inputs
        if ctx.fused:
            for i, view, saved in zip(ctx.kept, ctx.views, ctx.saved_tensors, strict=True):
                if ctx.makeloss:  # MXNet's MakeLoss ignores grad_output
                    result[ctx.diff[i]] = saved.clone()
                elif g is not None:
                    result[ctx.diff[i]] = saved * g.reshape(view)
        elif g is not None and any(ctx.needs_input_grad[1 + i] for i in ctx.diff):
            it = iter(ctx.saved_tensors)
            tensors = [next(it) if present else None for present in ctx.present]
            for i, dx in zip(ctx.diff, backward_op(ctx.key, tensors, g), strict=True):
                result[i] = dx
        return (None, *result, None)

    return backward


_FORWARD_SCHEMA = (
    "(int key, Tensor x0, " + ", ".join(f"Tensor? x{i}" for i in range(1, N_SLOTS)) + ", bool want_grad) -> Tensor[]"
)


def _define(family: str) -> tuple[Any, Any]:
    forward = torch.library.custom_op(
        f"numba_losses::{family}",
        _forward,
        mutates_args=(),
        schema=_FORWARD_SCHEMA,
    )
    forward.register_fake(_forward_fake)
    backward = torch.library.custom_op(
        f"numba_losses::{family}_backward",
        _backward_impl,
        mutates_args=(),
        schema="(int key, Tensor?[] inputs, Tensor out_grad) -> Tensor[]",
    )
    backward.register_fake(_backward_fake)
    forward.register_autograd(_make_backward(backward), setup_context=_setup_context)
    return forward, backward


#: ``family -> (forward operator, backward operator)``.
OPS = {family: _define(family) for family in FAMILIES}


#: Gradients of at least this many bytes are scaled in place by the eager backward (see :class:`EagerFunction`).
#: Below it autograd copies the kept gradient into ``.grad`` (or the backward multiplies into a new tensor);
#: at 64 KiB that copy costs a few microseconds, as much as the in-place path's bookkeeping. (At 1 MiB, the
#: former value, a (256, 1000) float32 SoftmaxCE step spent about half its time on the new tensor.)
IN_PLACE_BYTES = 1 << 16


@dataclass(frozen=True)
class EagerPlan:
    """What an eager call does, fixed by its key, shapes, dtypes and which inputs require grad (cached).

    ``fused``: the forward runs the fused kernel and the node keeps gradient ``diff[i]`` for every ``i``
    in ``kept`` (the differentiable inputs that require grad); ``views[k]`` is the shape ``grad_output``
    takes to scale ``kept[k]``'s gradient; ``in_place``: those gradients are scaled in place (at least
    :data:`IN_PLACE_BYTES` each); ``dtype``: the gradients' torch dtype.
    """

    info: Info
    fused: bool
    kept: tuple[int, ...]
    views: tuple[tuple[int, ...], ...]
    in_place: bool
    dtype: torch.dtype | None


@functools.lru_cache(maxsize=4096)
def _eager_plan(key: int, sig: tuple[Any, ...], requires: tuple[bool, ...]) -> EagerPlan:
    info = _INFO[key]
    p = _plan(key, sig, True)
    kept = tuple(i for i, j in enumerate(info.diff) if requires[j]) if p.fused else ()
    nbytes = [p.grads[i][1].itemsize * math.prod(p.grads[i][0]) for i in kept]
    return EagerPlan(
        info=info,
        fused=p.fused,
        kept=kept,
        views=tuple(p.views[i] for i in kept),
        in_place=any(n >= IN_PLACE_BYTES for n in nbytes),
        dtype=p.grads[0][1] if p.grads else None,
    )


class EagerFunction(torch.autograd.Function):
    """The forward operator's implementation and autograd rule without the dispatcher, for eager calls.

    ``EagerFunction.apply(key, requires, *inputs)`` (the loss's inputs only, not the operator's padded
    slots; ``requires``: per input, whether it requires grad, at least one of the differentiable ones)
    returns the loss output. Same kernels and plan as the operators, called directly: a custom
    operator's dispatch costs tens of microseconds per call, as much as a small loss. Under
    ``torch.compile`` the modules call the registered operators instead. Everything that depends on
    shapes, dtypes and ``requires`` only is planned once per combination (:class:`EagerPlan`).

    Where the plan is fused, the forward runs the fused kernel and the node keeps the gradients for a
    head gradient of ones (one per input that requires grad; they are not outputs of the node). The
    backward gives autograd:

    * the kept gradient when ``grad_output`` is ones broadcast (``loss.sum()``): no
      multiplication; below :data:`IN_PLACE_BYTES` a copy of it, as the node keeps it for a further
      backward (a caller of ``torch.autograd.grad`` owns what it gets and may change it in place;
      accumulating into ``.grad`` would copy a tensor referenced elsewhere anyway);
    * below :data:`IN_PLACE_BYTES`, ``kept * grad_output`` in a new tensor;
    * from :data:`IN_PLACE_BYTES` on, the kept gradient scaled **in place** and handed over: it
      was allocated by the forward for this node alone, so nothing else reads it, and no
      gradient-sized tensor is allocated and faulted in per step (a large part of a big SoftmaxCE
      step; autograd then stores it as the leaf's ``.grad`` without a copy). A ``grad_output`` that
      is one number broadcast (``loss.mean()``: zero strides) is one ``mul_`` by a 0-d view of it.
      The node drops the gradient as it hands it over, so a second backward through the graph
      (``retain_graph=True``) cannot read a scaled tensor: it runs the backward kernel on the
      inputs instead, which the node holds weakly for the differentiable ones (a fused forward
      keeps no large input alive, as before), and raises ``RuntimeError`` if one was freed or
      modified in place since.

    Elsewhere the node saves the inputs and its backward runs the backward kernel with
    ``grad_output``.
    """

    @staticmethod
    def forward(ctx: Any, key: int, requires: tuple[bool, ...], *inputs: torch.Tensor | None) -> torch.Tensor:  # noqa: D102
        plan = _eager_plan(key, _signature(inputs), requires)
        loss = _LOSSES[key]
        ctx.loss, ctx.plan = loss, plan  # the loss: a temporary module may be gone by the backward
        if not plan.fused:
            ctx.save_for_backward(*inputs)
            return _run(key, list(inputs), False)[0]
        out, *grads = _run(key, list(inputs), True)
        ctx.grads = [grads[i] for i in plan.kept]  # not save_for_backward: may be scaled in place, then released
        if plan.in_place:  # what a second backward reruns the kernel on
            diff = plan.info.diff
            ctx.inputs = [None if j in diff else t for j, t in enumerate(inputs)]  # labels, weights: small
            ctx.weak = [(j, weakref.ref(inputs[j]), inputs[j]._version) for j in diff if inputs[j] is not None]
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        if torch.is_grad_enabled():  # create_graph=True: the kernels give first derivatives only
            raise RuntimeError(
                "numba_losses: double backward (create_graph=True) is not supported; the kernels compute first "
                "derivatives only"
            )
        plan = ctx.plan
        info = plan.info
        result: list[torch.Tensor | None] = [None] * info.n_inputs
        if not plan.fused:
            if g is not None and any(ctx.needs_input_grad[2 + i] for i in info.diff):
                inputs = list(ctx.saved_tensors)
                for i, dx in zip(info.diff, _backward_of(ctx.loss, inputs, g), strict=True):
                    result[i] = dx
            return (None, None, *result)
        kept = ctx.grads
        if kept is None:  # scaled in place by an earlier backward: the gradients again, from the inputs
            return (None, None, *_recompute(ctx, g))
        in_place = plan.in_place  # then released as handed over (like a saved tensor without retain_graph)
        if info.makeloss:  # MXNet's MakeLoss ignores grad_output
            if in_place:
                ctx.grads = None
            for i, grad in zip(plan.kept, kept, strict=True):
                result[info.diff[i]] = grad if in_place else grad.clone()  # kept: the caller gets its own
            return (None, None, *result)
        if g is None:
            return (None, None, *result)
        if in_place:
            ctx.grads = None
        # One number broadcast (zero strides): a 0-d view of it, in the gradients' dtype so the
        # product rounds as the broadcast one would.
        uniform = g.dtype == plan.dtype and g.dim() > 0 and not any(g.stride())
        scale = g.as_strided((), ()) if uniform else None
        ones = uniform and g.is_cpu and scale.item() == 1.0  # loss.sum(): the gradient for ones is the gradient
        for i, view, grad in zip(plan.kept, plan.views, kept, strict=True):
            if ones:
                grad = grad if in_place else grad.clone()  # kept: the caller gets its own
            else:
                factor = scale if uniform else g.reshape(view)
                grad = grad.mul_(factor) if in_place else grad * factor
            result[info.diff[i]] = grad
        return (None, None, *result)


def _recompute(ctx: Any, g: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The fused node's gradients for a further backward: the backward kernel on the inputs."""
    plan = ctx.plan
    info = plan.info
    result: list[torch.Tensor | None] = [None] * info.n_inputs
    inputs = list(ctx.inputs)
    for j, ref, version in ctx.weak:
        t = ref()
        if t is None or t._version != version:
            raise RuntimeError(
                "numba_losses: a second backward through this loss reruns its kernel on the inputs, but "
                f"{inner(ctx.loss)._inputs[j]} was freed or modified in place since the forward (the first "
                "backward scaled the large saved gradient in place)"
            )
        inputs[j] = t
    if g is None:
        return result
    loss = ctx.loss
    grads = loss.backward(*_args(loss, inputs, fake=False), out_grad=to_array(g))
    device = _device(inputs)
    for i in plan.kept:
        result[info.diff[i]] = _own(to_tensor(grads[i], device), inputs)
    return result
