"""The built-in loss configurations and sample inputs for each: what the tour runs and precompile warms.

:data:`CASES` lists one configuration per distinct CPU kernel set (every loss,
and the constructor options that select another kernel: ``from_sigmoid``,
``label_format``, ``from_logits``, ``sparse_label``). :func:`sampler_for` finds
valid sample inputs for any built-in loss instance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .ctc import CTCLoss
from .elementwise import (
    HingeLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    L2Loss,
    LogisticLoss,
    PoissonNLLLoss,
    SigmoidBCELoss,
    SquaredHingeLoss,
)
from .loss import Loss
from .pairwise import CosineEmbeddingLoss, TripletLoss
from .sdml import SDMLLoss
from .softmax import SoftmaxCELoss

Sample = Callable[[np.random.Generator, tuple[int, int]], tuple[np.ndarray, ...]]


def _regression(rng, shape):
    return rng.standard_normal(shape), rng.standard_normal(shape)


def _signed(rng, shape):
    return rng.standard_normal(shape), rng.choice([-1.0, 1.0], size=shape)


def _binary(rng, shape):
    return rng.standard_normal(shape), rng.integers(0, 2, size=shape).astype(np.float64)


def _probabilities(rng, shape):
    return rng.uniform(0.05, 0.95, shape), rng.integers(0, 2, size=shape).astype(np.float64)


def _counts(rng, shape):
    return 0.5 * rng.standard_normal(shape), rng.poisson(2.0, size=shape).astype(np.float64)


def _rates(rng, shape):
    return rng.uniform(0.5, 3.0, shape), rng.poisson(2.0, size=shape).astype(np.float64)


def _distributions(rng, shape):
    logits = rng.standard_normal(shape)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    q = rng.random(shape)
    return logp, q / q.sum(axis=-1, keepdims=True)


def _classes(rng, shape):
    return 2.0 * rng.standard_normal(shape), rng.integers(0, shape[1], size=shape[0]).astype(np.float64)


def _soft_targets(rng, shape):
    q = rng.random(shape)
    return rng.standard_normal(shape), q / q.sum(axis=-1, keepdims=True)


def _triplets(rng, shape):
    return rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape)


def _pairs(rng, shape):
    return rng.standard_normal(shape), rng.standard_normal(shape), rng.choice([-1.0, 1.0], size=shape[0])


def _embeddings(rng, shape):
    x1 = rng.standard_normal(shape)
    return x1, x1 + 0.3 * rng.standard_normal(shape)


def _sequences(rng, shape):
    """CTC: activations (N, T, C) and -1-padded labels of up to T/4 classes (blank = C - 1)."""
    n, t, c = shape[0], max(6, shape[1] // 8), max(5, shape[1] // 16)
    lab = rng.integers(0, c - 1, size=(n, t // 4)).astype(np.float64)
    lab[rng.random(n) < 0.5, -1] = -1.0
    return rng.standard_normal((n, t, c)), lab


CASES: list[tuple[str, Callable[[], Loss], Sample]] = [
    ("L2Loss", L2Loss, _regression),
    ("L1Loss", L1Loss, _regression),
    ("HuberLoss(rho=0.5)", lambda: HuberLoss(rho=0.5), _regression),
    ("HingeLoss", HingeLoss, _signed),
    ("SquaredHingeLoss", SquaredHingeLoss, _signed),
    ("SigmoidBCELoss", SigmoidBCELoss, _binary),
    ("SigmoidBCELoss(from_sigmoid)", lambda: SigmoidBCELoss(from_sigmoid=True), _probabilities),
    ("LogisticLoss", LogisticLoss, _signed),
    ("LogisticLoss(binary)", lambda: LogisticLoss(label_format="binary"), _binary),
    ("PoissonNLLLoss", PoissonNLLLoss, _counts),
    ("PoissonNLLLoss(rates)", lambda: PoissonNLLLoss(from_logits=False), _rates),
    ("KLDivLoss", KLDivLoss, _distributions),
    ("KLDivLoss(from_logits=False)", lambda: KLDivLoss(from_logits=False), _soft_targets),
    ("SoftmaxCELoss", SoftmaxCELoss, _classes),
    ("SoftmaxCELoss(dense labels)", lambda: SoftmaxCELoss(sparse_label=False), _soft_targets),
    ("TripletLoss", TripletLoss, _triplets),
    ("CosineEmbeddingLoss(margin=0.2)", lambda: CosineEmbeddingLoss(margin=0.2), _pairs),
    ("SDMLLoss", SDMLLoss, _embeddings),
    ("CTCLoss", CTCLoss, _sequences),
]


# Compile cost rank of a loss class (higher: more and larger kernels), measured in the cold tour
# (CTC and SDML ~5x an elementwise loss, the softmax family ~2x): a pool starts the costly ones
# first, so that no process is left compiling one of them alone at the end.
COST = {"CTCLoss": 5, "SDMLLoss": 5, "SoftmaxCrossEntropyLoss": 3, "KLDivLoss": 2, "TripletLoss": 2}


def cost_rank(loss: Loss) -> int:
    """How long ``loss`` takes to compile, relative to an elementwise loss (1)."""
    if type(loss).__name__ == "KLDivLoss" and getattr(loss, "_from_logits", True):
        return 1  # the elementwise kernel only
    return COST.get(type(loss).__name__, 1)


def sampler_for(loss: Loss) -> Sample:
    """Sample inputs valid for ``loss`` (a built-in loss instance): ``sample(rng, (rows, cols))``."""
    if isinstance(loss, SoftmaxCELoss):
        return _classes if getattr(loss, "_sparse_label", True) else _soft_targets
    if isinstance(loss, KLDivLoss):
        return _distributions if getattr(loss, "_from_logits", True) else _soft_targets
    if isinstance(loss, SigmoidBCELoss):
        return _probabilities
    if isinstance(loss, PoissonNLLLoss):
        return _rates
    if isinstance(loss, LogisticLoss):
        return _binary if getattr(loss, "_label_format", "signed") == "binary" else _signed
    for cls, sample in _BY_CLASS:
        if isinstance(loss, cls):
            return sample
    raise TypeError(f"no sample inputs known for {type(loss).__name__} (a built-in loss is needed)")


_BY_CLASS: tuple[tuple[type, Sample], ...] = (
    (L2Loss, _regression),
    (L1Loss, _regression),
    (HuberLoss, _regression),
    (HingeLoss, _signed),
    (SquaredHingeLoss, _signed),
    (TripletLoss, _triplets),
    (CosineEmbeddingLoss, _pairs),
    (SDMLLoss, _embeddings),
    (CTCLoss, _sequences),
)


SMALL = (4, 6)  # the gradient check's inputs (serial kernels, float64)


def tour_inputs(sample: Sample, rng: np.random.Generator, shape: tuple[int, int]):
    """``(small, big)``: float64 inputs of :data:`SMALL` and float32 inputs of ``shape`` (the timed call)."""
    small = sample(rng, SMALL)
    big = tuple(a.astype(np.float32) for a in sample(rng, tuple(shape)))
    return small, big


def run_cpu_case(loss: Loss, small: tuple, big: tuple, time_call: Callable | None = None):
    """The tour's CPU row of one loss: ``(value, gradient error or None, seconds per call or NaN, failure)``.

    Runs only ``forward_backward`` (one kernel variant for the float64 check, one
    for the float32 timing): the gradient check, the value and the buffers' shapes
    (``result_shapes``, no kernel) need nothing else.
    """
    from .gradcheck import GradientCheckError, check_gradient

    failure = None
    try:
        err = max(check_gradient(loss, *small).values())
    except GradientCheckError as exc:
        err, failure = None, str(exc)
    value = float(np.mean(loss.forward_backward(*small)[0]))
    out_sd, grad_sd = loss.result_shapes(*big)
    out = np.empty(out_sd.shape, out_sd.dtype)
    grad = tuple(np.empty(g.shape, g.dtype) for g in grad_sd)

    def call():
        loss.forward_backward(*big, out=out, grad_out=grad)

    seconds = time_call(call) if time_call is not None else (call(), float("nan"))[1]
    return value, err, seconds, failure
