"""numba_losses: MXNet gluon's loss functions as Numba kernels for CPU (and CUDA).

>>> import numpy as np, numba_losses as nl
>>> loss = nl.L2Loss()
>>> out, (dpred,) = loss.forward_backward(np.ones((2, 3)), np.zeros((2, 3)))
>>> out
array([0.5, 0.5])

Importing the package compiles nothing; each kernel is compiled at its first
use and cached on disk.
"""

from ._loss import Loss
from .elementwise import (
    ElementwiseLoss,
    HingeLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    L2Loss,
    LogisticLoss,
    PoissonNLLLoss,
    SigmoidBCELoss,
    SigmoidBinaryCrossEntropyLoss,
    SquaredHingeLoss,
)

__version__ = "0.1.0"

__all__ = [
    "Loss",
    "ElementwiseLoss",
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
]
