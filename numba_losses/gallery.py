r"""The loss gallery: every plot computed by this library, drawn with matplotlib.

The documentation build and the tour (``python -m numba_losses --plot DIR``) call
:func:`write_gallery`. Each figure shows values and gradients returned by the
library's own ``forward_backward``, never a formula restated here:

* regression losses (L2, L1, Huber) against the prediction with label 0;
* classification losses (Hinge, SquaredHinge, Logistic, SigmoidBCE) against the
  prediction (a logit or a score) with label 1, and PoissonNLL with count 1;
* softmax cross-entropy against one logit, with the gradient of every class;
* a CTC alignment heat-map: the per-frame class occupancy
  :math:`\gamma_t(k) = \mathrm{softmax}(x_t)_k - \partial\,\mathrm{cost}/\partial x_{tk}`
  of a tiny example, read back from the gradient with head gradient 1.

matplotlib is needed only here (``pip install "numba-losses[docs]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import numba_losses as nl

__all__ = ["GalleryFigure", "FIGURES", "loss_curve", "ctc_occupancy", "write_gallery", "gallery_rst"]


@dataclass(frozen=True)
class GalleryFigure:
    """One gallery image: its file stem, title, caption and drawing function.

    Attributes
    ----------
    name : str
        File stem of the PNG (``name + ".png"``).
    title : str
        Heading shown above the image in the documentation.
    caption : str
        One or two sentences saying what is plotted.
    draw : callable
        ``draw(fig)`` fills a matplotlib figure using the library's results.
    """

    name: str
    title: str
    caption: str
    draw: Callable[[Any], None]


def loss_curve(loss: nl.Loss, pred: np.ndarray, label: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Loss value and gradient at each prediction, each computed as a one-element sample.

    Parameters
    ----------
    loss : Loss
        An elementwise loss (``loss(pred, label)`` with ``pred`` of shape ``(1, 1)``).
    pred : ndarray, shape (n,)
        Prediction values to evaluate.
    label : float
        The label used at every point.

    Returns
    -------
    value, grad : ndarray, shape (n,)
        ``loss(x, label)`` and :math:`\partial\,\mathrm{loss} / \partial x` for each ``x`` in ``pred``.
    """
    value = np.empty(len(pred))
    grad = np.empty(len(pred))
    lab = np.full((1, 1), label, dtype=np.float64)
    for i, x in enumerate(pred):
        out, (dpred,) = loss.forward_backward(np.full((1, 1), x), lab)
        value[i], grad[i] = out[0], dpred[0, 0]
    return value, grad


def ctc_occupancy(activations: np.ndarray, label: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    r"""CTC cost, softmax and alignment occupancy of one sequence.

    Parameters
    ----------
    activations : ndarray, shape (T, C)
        Unnormalised activations of one sequence (blank is class ``C - 1``).
    label : ndarray, shape (L,)
        The target classes, each in ``[0, C - 1)``.

    Returns
    -------
    cost : float
        :math:`-\log p(\mathrm{label} \mid x)`.
    probs : ndarray, shape (T, C)
        ``softmax(activations)`` along the classes.
    occupancy : ndarray, shape (T, C)
        Posterior probability that frame ``t`` emits class ``k`` on a valid
        alignment: ``probs - dcost/dactivations`` (each row sums to 1).
    """
    x = activations[None].astype(np.float64)
    cost, (dx,) = nl.CTCLoss().forward_backward(x, label[None].astype(np.float64))
    e = np.exp(x[0] - x[0].max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    return float(cost[0]), probs, probs - dx[0]


# -- drawing --------------------------------------------------------------------------------

# An even number of points: the grid never lands exactly on 0 or on a margin, where MXNet's
# autograd takes one-sided subgradients (SigmoidBCE's gradient at x == 0 is exactly -label).
_PRED = np.linspace(-3.0, 3.0, 240)


def _curve_figure(make: Callable[[], nl.Loss], label: float, xlabel: str, pred: np.ndarray = _PRED):
    """A ``draw`` function plotting a loss and its gradient against the prediction."""

    def draw(fig) -> None:
        value, grad = loss_curve(make(), pred, label)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(pred, value, label="loss", linewidth=2)
        ax.plot(pred, grad, label="gradient", linestyle="--")
        ax.axhline(0.0, color="0.7", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.legend(loc="upper center")
        ax.grid(alpha=0.3)

    return draw


def _draw_softmax_ce(fig) -> None:
    """Softmax CE over 4 classes with logits (z, 1, 0, -1), label 0, against z."""
    z = np.linspace(-4.0, 6.0, 201)
    logits = np.column_stack([z, np.full_like(z, 1.0), np.zeros_like(z), np.full_like(z, -1.0)])
    label = np.zeros(len(z))
    plain, (dplain,) = nl.SoftmaxCELoss().forward_backward(logits, label)
    smooth = nl.SoftmaxCELoss(label_smoothing=0.1)(logits, label)
    left, right = fig.subplots(1, 2)
    left.plot(z, plain, linewidth=2, label="loss")
    left.plot(z, smooth, linestyle="--", label="label_smoothing=0.1")
    left.set_xlabel("logit of the true class z")
    left.set_title("loss", fontsize="medium")
    left.legend()
    for k, name in enumerate(["class 0 (true)", "class 1", "class 2", "class 3"]):
        right.plot(z, dplain[:, k], label=name)
    right.axhline(0.0, color="0.7", linewidth=0.8)
    right.set_xlabel("logit of the true class z")
    right.set_title("gradient per logit", fontsize="medium")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.grid(alpha=0.3)


def _ctc_example() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Activations of a partly trained 'cat' recogniser: 14 frames, classes c, a, t and blank."""
    names = ["c", "a", "t", "blank"]
    rng = np.random.default_rng(7)
    x = 0.6 * rng.standard_normal((14, 4))
    # a rough alignment the network has half learned: b c c b a a a b b t t b b b
    for t, k in enumerate([3, 0, 0, 3, 1, 1, 1, 3, 3, 2, 2, 3, 3, 3]):
        x[t, k] += 1.5
    return x, np.array([0, 1, 2]), names


def _draw_ctc(fig) -> None:
    x, label, names = _ctc_example()
    cost, probs, occupancy = ctc_occupancy(x, label)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, data, title in (
        (top, probs, "softmax(x): what the network emits"),
        (bottom, occupancy, f"occupancy softmax(x) - dcost/dx: where 'cat' aligns (cost {cost:.2f})"),
    ):
        im = ax.imshow(data.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_yticks(range(len(names)), names)
        ax.set_title(title, fontsize="medium")
        fig.colorbar(im, ax=ax, fraction=0.03)
    bottom.set_xlabel("frame t")


FIGURES: list[GalleryFigure] = [
    GalleryFigure(
        "l2",
        "L2Loss",
        "Half squared error, label 0: the gradient is the residual.",
        _curve_figure(nl.L2Loss, 0.0, "prediction (label 0)"),
    ),
    GalleryFigure(
        "l1",
        "L1Loss",
        "Absolute error, label 0: a constant-magnitude gradient, 0 at the kink.",
        _curve_figure(nl.L1Loss, 0.0, "prediction (label 0)"),
    ),
    GalleryFigure(
        "huber",
        "HuberLoss(rho=1)",
        "Quadratic within rho of the label, linear outside; label 0.",
        _curve_figure(nl.HuberLoss, 0.0, "prediction (label 0)"),
    ),
    GalleryFigure(
        "hinge",
        "HingeLoss",
        "max(0, margin - label * pred) for label 1: zero once the margin is met.",
        _curve_figure(nl.HingeLoss, 1.0, "score (label 1)"),
    ),
    GalleryFigure(
        "squared_hinge",
        "SquaredHingeLoss",
        "The squared hinge for label 1: smooth at the margin.",
        _curve_figure(nl.SquaredHingeLoss, 1.0, "score (label 1)"),
    ),
    GalleryFigure(
        "logistic",
        "LogisticLoss",
        "log(1 + exp(-label * pred)) for signed label 1.",
        _curve_figure(nl.LogisticLoss, 1.0, "logit (label 1)"),
    ),
    GalleryFigure(
        "sigmoid_bce",
        "SigmoidBCELoss",
        "Binary cross-entropy on a logit, label 1: the gradient is sigmoid(x) - 1"
        " (exactly -1 at x = 0, MXNet's subgradient).",
        _curve_figure(nl.SigmoidBCELoss, 1.0, "logit (label 1)"),
    ),
    GalleryFigure(
        "poisson_nll",
        "PoissonNLLLoss",
        "exp(x) - label * x on a log-rate x, count 1: minimal at rate 1.",
        _curve_figure(nl.PoissonNLLLoss, 1.0, "log-rate (count 1)"),
    ),
    GalleryFigure(
        "softmax_ce",
        "SoftmaxCrossEntropyLoss",
        "Four classes with logits (z, 1, 0, -1) and label 0. Left: the loss, plain and with label_smoothing=0.1."
        " Right: the gradient softmax(x) - onehot for each logit.",
        _draw_softmax_ce,
    ),
    GalleryFigure(
        "ctc_alignment",
        "CTCLoss alignment",
        "A tiny CTC example: 14 frames, label 'cat', blank last. The occupancy, read from CTCLoss's gradient,"
        " is the posterior of each frame emitting each class over all valid alignments.",
        _draw_ctc,
    ),
]


DPI = 192  # twice the CSS pixel density: sharp on high-DPI screens
WIDTH_PX = 672  # the figures' 7 inches at 96 CSS pixels per inch


def write_gallery(
    directory: str | Path, names: list[str] | None = None, *, titles: bool = True, dpi: int = DPI
) -> list[Path]:
    """Draw the gallery PNGs into ``directory`` (created if missing).

    Parameters
    ----------
    directory : str or Path
        Where to write ``<name>.png`` for each figure.
    names : list of str, optional
        Only these figures (default: all of :data:`FIGURES`).
    titles : bool
        Draw each figure's title into its image (the documentation's gallery
        has section headings instead).
    dpi : int
        Pixels per inch; the figures are 7 inches wide, so the default 192
        gives 1344-pixel images, sharp at 672 CSS pixels on a high-DPI screen.

    Returns
    -------
    list of Path
        The files written, in :data:`FIGURES` order.

    Raises
    ------
    ImportError
        matplotlib is not installed.
    ValueError
        A name in ``names`` is not a gallery figure.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('the gallery needs matplotlib: pip install "numba-losses[docs]"') from exc
    known = {f.name for f in FIGURES}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise ValueError(f"unknown gallery figure(s) {unknown}; choose from {sorted(known)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in FIGURES:
        if names is not None and spec.name not in names:
            continue
        tall = spec.name == "ctc_alignment"
        fig = Figure(figsize=(7.0, 4.6 if tall else 3.4), layout="constrained")
        spec.draw(fig)
        if titles:
            fig.suptitle(spec.title)
        path = out / f"{spec.name}.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    return written


def gallery_rst(image_dir: str) -> str:
    """reStructuredText with one section and figure per gallery image.

    Parameters
    ----------
    image_dir : str
        The images' directory relative to the including document.
    """
    parts = []
    for spec in FIGURES:
        parts += [
            spec.title,
            "-" * len(spec.title),
            "",
            f".. figure:: {image_dir}/{spec.name}.png",
            f"   :alt: {spec.title}",
            f"   :width: {WIDTH_PX}px",
            "",
            f"   {spec.caption}",
            "",
        ]
    return "\n".join(parts)
