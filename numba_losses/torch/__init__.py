"""PyTorch adapter: the losses of this library as ``nn.Module`` objects and custom operators.

Importing this subpackage imports PyTorch (``import numba_losses`` does not).

* :class:`Module` wraps any loss object (``Module(nl.SoftmaxCELoss(axis=1))``);
  the classes named as in gluon (:class:`SoftmaxCELoss`, :class:`CTCLoss`, ...)
  build the wrapped loss from the same parameters.
* :mod:`numba_losses.torch.functional` holds drop-in ``cross_entropy`` and
  ``ctc_loss`` with PyTorch's semantics.
* Each loss family is one ``torch.library`` custom operator
  (``torch.ops.numba_losses.<family>``), with fake and autograd rules, so the
  modules run eagerly, under ``torch.compile(fullgraph=True)`` and under
  ``torch.autograd.gradcheck``.
"""

from . import functional
from .modules import (  # generated classes: numba_losses.torch.Module around the loss of the same name
    CosineEmbeddingLoss,
    CTCLoss,
    HingeLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    L2Loss,
    LogisticLoss,
    Module,
    PoissonNLLLoss,
    SDMLLoss,
    SigmoidBCELoss,
    SigmoidBinaryCrossEntropyLoss,
    SoftmaxCELoss,
    SoftmaxCrossEntropyLoss,
    SquaredHingeLoss,
    TripletLoss,
)

__all__ = [
    "functional",
    "Module",
    "L2Loss",
    "L1Loss",
    "SigmoidBinaryCrossEntropyLoss",
    "SigmoidBCELoss",
    "HuberLoss",
    "HingeLoss",
    "SquaredHingeLoss",
    "LogisticLoss",
    "PoissonNLLLoss",
    "KLDivLoss",
    "SoftmaxCrossEntropyLoss",
    "SoftmaxCELoss",
    "CTCLoss",
    "TripletLoss",
    "CosineEmbeddingLoss",
    "SDMLLoss",
]
