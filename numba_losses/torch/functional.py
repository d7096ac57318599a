r"""Drop-in ``cross_entropy`` and ``ctc_loss`` with ``torch.nn.functional``'s semantics.

Both call this library's losses through the adapter's operators
(:class:`numba_losses.torch.SoftmaxCELoss`, whose ``class_weight`` and
``normalization='valid'`` are PyTorch's class weights and weighted mean;
:class:`numba_losses.torch.CTCLoss` with a few tensor operations for the
blank index and the reductions). Values and gradients match ``torch.nn.functional`` to rounding;
a case that cannot be composed exactly raises ``NotImplementedError``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..ctc import CTCLoss
from ..softmax import SoftmaxCELoss
from .modules import Module

__all__ = ["cross_entropy", "ctc_loss"]

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}, got {reduction!r}")


@functools.lru_cache(maxsize=64)
def _softmax_module(
    sparse: bool, ignore_index: int | None, label_smoothing: float, normalization: str, weight: bytes | None
) -> Module:
    class_weight = None if weight is None else np.frombuffer(weight, dtype=np.float64)
    return Module(
        SoftmaxCELoss(
            axis=1,
            sparse_label=sparse,
            ignore_label=ignore_index,
            label_smoothing=label_smoothing,
            class_weight=class_weight,
            normalization=normalization,
        )
    )


@functools.lru_cache(maxsize=16)
def _ctc_module(blank_label: str) -> Module:
    return Module(CTCLoss(layout="TNC", label_layout="NT", zero_infinity=False, blank_label=blank_label))


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""``torch.nn.functional.cross_entropy`` computed by :class:`numba_losses.SoftmaxCELoss`.

    With :math:`\mathrm{lp} = \log\mathrm{softmax}(x)` over the class axis 1,
    class weights :math:`w` (ones by default), :math:`\varepsilon` =
    ``label_smoothing`` and :math:`C` classes, each position costs

    .. math::

        \ell = (1 - \varepsilon)\, w_y (-\mathrm{lp}_y) + \frac{\varepsilon}{C} \sum_c w_c (-\mathrm{lp}_c)

    for a class index :math:`y` (0 where :math:`y` = ``ignore_index``), or
    :math:`\ell = -\sum_c w_c q_c \mathrm{lp}_c` with
    :math:`q = (1 - \varepsilon) t + \varepsilon / C` for class probabilities
    :math:`t`. ``'mean'`` divides the sum by :math:`\sum w_y` over the
    positions not ignored (class indices) or by the number of positions
    (probabilities).

    Parameters
    ----------
    input : Tensor
        Logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``; float16 and
        bfloat16 are computed in float32.
    target : Tensor
        Class indices (integer dtype, ``input``'s shape without the class
        axis) or class probabilities (floating dtype, ``input``'s shape).
    weight : Tensor, optional
        ``(C,)`` class weights (not differentiated).
    ignore_index : int, default -100
        Class-index targets equal to it cost 0 and are left out of the mean.
    reduction : {'mean', 'sum', 'none'}
    label_smoothing : float, default 0.0

    Returns
    -------
    Tensor
        A scalar, or the per-position losses (``target``'s shape for class
        indices) for ``'none'``.

    Notes
    -----
    One call of :class:`numba_losses.SoftmaxCELoss` with ``class_weight=weight``
    and ``normalization='valid'`` (``'mean'``) or ``'sum'``, whose per-sample
    values are summed. ``weight`` is read on the host once per call (a copy
    from the device); class indices with weights and label smoothing, and
    class probabilities with weights, make the loss build a weighted dense
    target of ``input``'s size. ``'none'`` on inputs with extra axes
    ``d1..dk`` copies ``input`` to ``(N d1 .. dk, C)`` (the library reduces
    over them otherwise).

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not ``ignore_index``.
    ValueError
        A NaN or infinite ``weight`` (PyTorch would return NaN or infinite values).
    NotImplementedError
        ``weight`` or probability ``target`` that requires grad.
    """
    _check_reduction(reduction)
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if input.dim() == 0:
        raise ValueError("input: expected at least one axis (the classes)")
    if input.dim() == 1:  # unbatched
        out = cross_entropy(input.unsqueeze(0), target.unsqueeze(0), weight, ignore_index, reduction, eps)
        return out.squeeze(0) if reduction == "none" else out
    n_classes = input.shape[1]
    key = None
    if weight is not None:
        if weight.shape != (n_classes,):
            raise ValueError(f"weight: expected shape ({n_classes},), got {tuple(weight.shape)}")
        if weight.requires_grad:
            raise NotImplementedError("cross_entropy: gradients with respect to weight are not computed")
        # PyTorch weighs in the input's dtype: the same values, held in float64 by the loss
        key = weight.detach().to(input.dtype).cpu().to(torch.float64).numpy().tobytes()
    probabilities = target.shape == input.shape and target.is_floating_point()
    if probabilities:
        if target.requires_grad:
            raise NotImplementedError("cross_entropy: gradients with respect to probability targets are not computed")
        ignore = None
    else:
        if target.is_floating_point() or target.shape != input.shape[:1] + input.shape[2:]:
            raise ValueError(
                f"target: expected class indices of shape {tuple(input.shape[:1] + input.shape[2:])} (integer dtype) "
                f"or class probabilities of shape {tuple(input.shape)} (floating dtype), "
                f"got {tuple(target.shape)} {target.dtype}"
            )
        if target.numel():
            low, high = (int(v) for v in torch.aminmax(target))  # one pass; the masks only if it may be out
            if low < 0 or high >= n_classes:
                bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
                if bool(bad.any()):
                    raise IndexError(
                        f"target: class index {int(target[bad][0])} is out of bounds for {n_classes} classes"
                    )
        ignore = int(ignore_index)
    if reduction != "none":  # one value per sample whose sum is PyTorch's reduction
        normalization = "valid" if reduction == "mean" else "sum"
        total = _softmax_module(not probabilities, ignore, eps, normalization, key)(input, target).sum()
        if reduction == "mean" and math.prod(target.shape[:1] + input.shape[2:]) == 0:
            total = total * math.nan  # no position: PyTorch's 0 / 0 (the loss has no sample to make NaN)
        return total
    module = _softmax_module(not probabilities, ignore, eps, "sum", key)
    if input.dim() == 2:
        return module(input, target)
    # one loss per position: positions as samples, (N d1 .. dk, C)
    flat_shape = (-1, n_classes)
    x = input.movedim(1, -1).reshape(flat_shape)
    y = target.movedim(1, -1).reshape(flat_shape) if probabilities else target.reshape(-1)
    return module(x, y).reshape(input.shape[:1] + input.shape[2:])


class _NaNGradient(torch.autograd.Function):
    """A zero term whose gradient is NaN on ``mask``: PyTorch's CTC gradient for infeasible samples."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(mask)
        return x.new_zeros(x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        (mask,) = ctx.saved_tensors
        nan = torch.full((), math.nan, dtype=grad.dtype, device=grad.device)
        return torch.where(mask, nan, torch.zeros((), dtype=grad.dtype, device=grad.device)), None


def _lengths(name: str, v: torch.Tensor | Sequence[int] | int, n: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(v, device=device)
    if t.is_floating_point():
        raise TypeError(f"{name}: expected integer lengths, got {t.dtype}")
    t = t.reshape(-1).to(torch.int64)
    if t.shape != (n,):
        raise ValueError(f"{name}: expected {n} lengths, got shape {tuple(t.shape)}")
    return t


def ctc_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor | Sequence[int],
    target_lengths: torch.Tensor | Sequence[int],
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> torch.Tensor:
    r"""``torch.nn.functional.ctc_loss`` computed by :class:`numba_losses.CTCLoss`.

    For sample :math:`b` with :math:`T_b` frames and target :math:`l`, the
    cost is :math:`-\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_{t < T_b} e^{x_{t,\pi_t}}`
    with :math:`x` = ``log_probs`` as given. The library applies the
    log-softmax itself, so the cost is the library's minus
    :math:`\sum_{t < T_b} \mathrm{logsumexp}(x_t)` (0 for normalised
    ``log_probs``); the gradient is PyTorch's
    :math:`e^{x_{t,k}} - e^{\gamma_t(k) - x_{t,k} + \mathrm{cost}}` on the
    used frames, 0 past them, NaN for infeasible samples unless
    ``zero_infinity``.

    Parameters
    ----------
    log_probs : Tensor
        ``(T, N, C)`` or ``(T, C)`` log-probabilities (float32 or float64).
    targets : Tensor
        ``(N, S)`` padded class indices, or the targets of all samples
        concatenated (1-D, ``sum(target_lengths)`` long); never ``blank``.
    input_lengths, target_lengths : Tensor or sequence of int
        ``(N,)`` frames and target lengths per sample.
    blank : int, default 0
        The blank class (any index: other than 0 and ``C - 1`` the classes
        are reordered, a copy of ``log_probs``).
    reduction : {'mean', 'sum', 'none'}
        ``'mean'`` divides each cost by its target length (at least 1) and
        averages over the batch.
    zero_infinity : bool, default False
        Infeasible samples cost 0 with gradient 0 instead of ``inf``.

    Returns
    -------
    Tensor
        ``(N,)`` costs for ``'none'``, else a scalar.

    Raises
    ------
    NotImplementedError
        A target length greater than the number of frames ``T`` (the
        library's label width must fit ``T``).
    ValueError
        Lengths outside the arrays, target values outside the classes (the
        library names the sample), the blank inside a target.
    """
    _check_reduction(reduction)
    if log_probs.dim() == 2:  # unbatched
        out = ctc_loss(
            log_probs.unsqueeze(1),
            targets.reshape(1, -1),
            _lengths("input_lengths", input_lengths, 1, log_probs.device),
            _lengths("target_lengths", target_lengths, 1, log_probs.device),
            blank,
            reduction,
            zero_infinity,
        )
        return out.squeeze(0) if reduction == "none" else out
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs: expected (T, N, C) or (T, C), got shape {tuple(log_probs.shape)}")
    n_frames, batch, n_classes = log_probs.shape
    if not 0 <= blank < n_classes:
        raise ValueError(f"blank must be in [0, {n_classes}), got {blank}")
    in_len = _lengths("input_lengths", input_lengths, batch, log_probs.device)
    tg_len = _lengths("target_lengths", target_lengths, batch, log_probs.device)
    width = int(tg_len.max()) if batch else 0
    if width > n_frames:
        raise NotImplementedError(
            f"ctc_loss: a target length ({width}) greater than the number of frames ({n_frames}) is not supported"
        )
    labels = _padded(targets, tg_len, width, batch)
    inside = torch.arange(width, device=labels.device).unsqueeze(0) < tg_len.unsqueeze(1)
    if bool(((labels == blank) & inside).any()):  # PyTorch gives an undefined cost: refused, not guessed
        raise ValueError(f"targets: the blank class ({blank}) appears inside a target (within target_lengths)")
    x = log_probs
    if blank == 0:
        convention = "first"
    elif blank == n_classes - 1:
        convention = "last"
    else:  # put the blank first: a copy of the activations
        order = torch.cat([torch.tensor([blank]), torch.arange(blank), torch.arange(blank + 1, n_classes)])
        x = log_probs.index_select(2, order.to(log_probs.device))
        labels = torch.where(labels < blank, labels + 1, labels)
        convention = "first"
    cost = _ctc_module(convention)(x, labels, in_len, tg_len)
    # The library's cost is that of log_softmax(x); PyTorch's is that of x, with the gradient e^x - posterior.
    frames = torch.arange(n_frames, device=x.device).unsqueeze(1) < in_len.unsqueeze(0)  # (T, N)
    feasible = torch.isfinite(cost)
    used = frames & feasible.unsqueeze(0)
    lse = torch.logsumexp(log_probs, dim=2)
    exp_sum = (log_probs.exp() * used.unsqueeze(2)).sum(dim=(0, 2))
    cost = cost - (lse * used).sum(dim=0) + (exp_sum - exp_sum.detach())
    if zero_infinity:
        cost = torch.where(feasible, cost, cost.new_zeros(()))
    elif not bool(feasible.all()) and log_probs.requires_grad:
        nan_frames = (frames & ~feasible.unsqueeze(0)).unsqueeze(2).expand(log_probs.shape)
        cost = cost + _NaNGradient.apply(log_probs, nan_frames)
    if reduction == "none":
        return cost
    if reduction == "sum":
        return cost.sum()
    return (cost / tg_len.clamp_min(1).to(cost.dtype)).mean()


def _padded(targets: torch.Tensor, lengths: torch.Tensor, width: int, batch: int) -> torch.Tensor:
    """``(N, width)`` labels: a view of padded targets, or concatenated targets laid out in rows."""
    if targets.is_floating_point():
        raise TypeError(f"targets: expected integer class indices, got {targets.dtype}")
    if targets.dim() == 2:
        if targets.shape[0] != batch:
            raise ValueError(f"targets: expected {batch} rows, got shape {tuple(targets.shape)}")
        if targets.shape[1] < width:
            raise ValueError(f"targets: {targets.shape[1]} columns but a target length is {width}")
        return targets[:, :width]
    if targets.dim() != 1:
        raise ValueError(f"targets: expected (N, S) or 1-D concatenated targets, got shape {tuple(targets.shape)}")
    total = int(lengths.sum())
    if targets.shape[0] < total:
        raise ValueError(f"targets: {targets.shape[0]} values but the target lengths sum to {total}")
    rows = targets.new_zeros((batch, width))
    rows[torch.arange(width, device=targets.device).unsqueeze(0) < lengths.unsqueeze(1)] = targets[:total]
    return rows
