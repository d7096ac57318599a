"""``nn.Module`` wrappers: :class:`Module` around any loss object, and one class per gluon loss."""

from __future__ import annotations

import inspect
import numbers
from typing import Any

import numpy as np
import torch

from .. import ctc, elementwise, pairwise, sdml, softmax
from .._core.validate import as_host_array
from ..loss import Loss
from ..makeloss import MakeLoss
from ._bridge import LOW_PRECISION
from ._ops import N_SLOTS, OPS, EagerFunction, family_of, inner, register
from ._ops import _run as run_forward
from ._transforms import in_transform, transform_forward

__all__ = ["Module"]


class Module(torch.nn.Module):
    r"""A loss of this library as an ``nn.Module``, differentiable by autograd and ``torch.compile``.

    ``Module(loss)(*inputs)`` returns what ``loss(*inputs)`` returns (the
    per-sample loss, MXNet gluon's semantics: see the loss's docstring), as a
    tensor on the inputs' device. Gradients flow to every input the loss
    differentiates (``type(loss)._differentiable``: ``pred``; TripletLoss's
    three; CosineEmbeddingLoss's and SDMLLoss's two); the others get none.

    Parameters
    ----------
    loss : Loss or MakeLoss
        Any loss object of this library: the built-in classes, those made by
        :func:`numba_losses.elementwise_loss`, or :class:`numba_losses.MakeLoss`
        (whose backward ignores ``grad_output``, as MXNet's does).

    Notes
    -----
    * When no differentiable input requires grad (or grad mode is off) only the
      forward kernel runs.
    * Otherwise, where the gradient for any head gradient is the gradient for
      ones scaled per sample (per-sample outputs of the element-, row-wise,
      CTC and Triplet losses), the forward runs the fused forward+backward
      kernel and keeps one gradient per input that requires grad; the backward
      multiplies it by ``grad_output``. Elsewhere (CosineEmbeddingLoss, SDMLLoss,
      outputs grown by a broadcast ``sample_weight``) the backward runs the
      kernel again with ``grad_output``.
    * CPU tensors are read in place (no copy, strided views too); CUDA tensors
      through ``__cuda_array_interface__``. float16 and bfloat16 inputs are
      computed in float32 and the output is returned in ``pred``'s dtype.
    * Python numbers and NumPy arrays are accepted for the non-tensor inputs
      (``sample_weight``, PoissonNLLLoss's ``epsilon``).
    * An input the loss does not differentiate (a label, ``sample_weight``) that
      requires grad raises ``NotImplementedError`` rather than silently getting
      no gradient; detach it.
    """

    def __init__(self, loss: Loss | MakeLoss) -> None:
        super().__init__()
        self.family = family_of(loss)  # raises TypeError for anything else
        self.loss = loss
        self.key = register(loss, owner=self)
        self.names = tuple(inner(loss)._inputs)
        self.n_required = inner(loss)._n_required
        self.scalar_names = tuple(inner(loss)._scalar_inputs)
        self.differentiable = tuple(self.names.index(n) for n in inner(loss)._differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (``copy.deepcopy``, unpickling) registers its own loss: keys are never shared."""
        super().__setstate__(state)
        self.key = register(self.loss, owner=self)

    def extra_repr(self) -> str:
        return repr(self.loss)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The loss per sample (the wrapped loss's output) for these inputs, by position or by name."""
        values = self._bind(args, kwargs)
        pred = values[0]
        if not isinstance(pred, torch.Tensor):
            raise TypeError(f"{self.names[0]} must be a torch.Tensor, got {type(pred).__name__}")
        low = pred.dtype in LOW_PRECISION
        tensors = [
            v
            if type(v) is torch.Tensor and name not in self.scalar_names and v.dtype not in LOW_PRECISION
            else self._tensor(name, v, pred)
            for name, v in zip(self.names, values, strict=True)
        ]  # plain tensors as they are; the others converted (and checked) by _tensor
        requires = tuple(t is not None and t.requires_grad for t in tensors) if torch.is_grad_enabled() else ()
        want_grad = any(requires)
        if want_grad:
            for i, r in enumerate(requires):
                if r and i not in self.differentiable:
                    raise NotImplementedError(
                        f"{self.names[i]} requires grad, but {type(inner(self.loss)).__name__} is not "
                        f"differentiated with respect to {self.names[i]} (only "
                        f"{', '.join(self.names[j] for j in self.differentiable)}); detach it"
                    )
        if torch.compiler.is_compiling():
            slots = tensors + [None] * (N_SLOTS - len(tensors))
            out = OPS[self.family][0](self.key, *slots, want_grad)[0]
            return out.to(pred.dtype) if low else out
        if in_transform(tensors):  # torch.func transforms, forward-mode AD
            out = transform_forward(self.key, type(inner(self.loss)).__name__, tensors)
        elif want_grad:  # the operator's implementation and autograd rule, without its dispatch cost
            out = EagerFunction.apply(self.key, requires, *tensors)
        else:
            out = run_forward(self.key, tensors, False)[0]
        return out.to(pred.dtype) if low else out

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        n, required = len(args), self.n_required
        if not kwargs and required <= n <= len(self.names) and all(v is not None for v in args[:required]):
            return [*args, *(None,) * (len(self.names) - n)]  # inputs by position, the required ones given
        owner = type(self.loss).__name__
        if len(args) > len(self.names):
            raise TypeError(
                f"{owner} takes at most {len(self.names)} inputs ({', '.join(self.names)}), got {len(args)}"
            )
        values = list(args) + [None] * (len(self.names) - len(args))
        for key, v in kwargs.items():
            if key not in self.names:
                raise TypeError(f"{owner} got an unexpected input {key!r}; inputs are {', '.join(self.names)}")
            i = self.names.index(key)
            if i < len(args):
                raise TypeError(f"{owner} got input {key!r} both positionally and by keyword")
            values[i] = v
        missing = [n for n, v in zip(self.names[: self.n_required], values, strict=False) if v is None]
        if missing:
            raise TypeError(f"{owner} is missing required input(s): {', '.join(missing)}")
        return values

    def _tensor(self, name: str, v: Any, pred: torch.Tensor) -> torch.Tensor | None:
        """Input ``v`` as a tensor the operator takes (float32 for float16/bfloat16 inputs)."""
        if v is None:
            return None
        if name in self.scalar_names:
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(f"{name} must be a number or a one-element tensor, got shape {tuple(v.shape)}")
                return v.detach().reshape(()).to("cpu", torch.float64)
            if not isinstance(v, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
            return torch.tensor(float(v), dtype=torch.float64)
        if isinstance(v, np.ndarray):  # checked as the NumPy API checks it (dtype, byte order, mask)
            v = torch.from_numpy(as_host_array(name, v)).to(pred.device)
        elif isinstance(v, (numbers.Real, np.generic)):
            v = torch.tensor(v, device=pred.device)
        elif not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, a NumPy array or a number, got {type(v).__name__}")
        return v.float() if v.dtype in LOW_PRECISION else v


def _module_class(loss_cls: type[Loss], name: str) -> type[Module]:
    """An ``nn.Module`` class taking ``loss_cls``'s constructor parameters."""

    def __init__(self: Module, *args: Any, **kwargs: Any) -> None:
        Module.__init__(self, loss_cls(*args, **kwargs))

    doc = (
        f"``nn.Module`` form of :class:`numba_losses.{name}`: same parameters, inputs and output.\n\n"
        f"``numba_losses.torch.{name}(...)`` is ``numba_losses.torch.Module(numba_losses.{name}(...))``;\n"
        "see :class:`numba_losses.torch.Module` for devices, dtypes and gradients.\n"
    )
    init = __init__
    init.__signature__ = inspect.signature(loss_cls.__init__)
    init.__doc__ = f"Build the wrapped ``numba_losses.{name}`` with these parameters."
    return type(name, (Module,), {"__init__": init, "__doc__": doc, "__module__": __name__})


_CLASSES = {
    "L2Loss": elementwise.L2Loss,
    "L1Loss": elementwise.L1Loss,
    "SigmoidBinaryCrossEntropyLoss": elementwise.SigmoidBinaryCrossEntropyLoss,
    "SigmoidBCELoss": elementwise.SigmoidBCELoss,
    "HuberLoss": elementwise.HuberLoss,
    "HingeLoss": elementwise.HingeLoss,
    "SquaredHingeLoss": elementwise.SquaredHingeLoss,
    "LogisticLoss": elementwise.LogisticLoss,
    "PoissonNLLLoss": elementwise.PoissonNLLLoss,
    "KLDivLoss": elementwise.KLDivLoss,
    "SoftmaxCrossEntropyLoss": softmax.SoftmaxCrossEntropyLoss,
    "SoftmaxCELoss": softmax.SoftmaxCELoss,
    "CTCLoss": ctc.CTCLoss,
    "TripletLoss": pairwise.TripletLoss,
    "CosineEmbeddingLoss": pairwise.CosineEmbeddingLoss,
    "SDMLLoss": sdml.SDMLLoss,
}

_made: dict[type[Loss], type[Module]] = {}
for _name, _cls in _CLASSES.items():  # aliases (SoftmaxCELoss, SigmoidBCELoss) name the same class, as in the library
    globals()[_name] = _made.setdefault(_cls, _module_class(_cls, _name))
    __all__.append(_name)
