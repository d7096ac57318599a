"""numba_losses: MXNet gluon's loss functions as Numba kernels for CPU (and CUDA).

>>> import numpy as np, numba_losses as nl
>>> loss = nl.L2Loss()
>>> out, (dpred,) = loss.forward_backward(np.ones((2, 3)), np.zeros((2, 3)))
>>> out
array([0.5, 0.5])

Importing the package compiles nothing; each kernel is compiled at its first
use and cached on disk.
"""

import os as _os

# OpenMP threads that spin between parallel regions cost ~8 ms on the first call
# after an idle pause and ~16 ms per call when other processes share the cores
# (measured on 2-core machines); passive waiting costs ~0.1 ms. Set before
# Numba's OpenMP runtime starts; an explicit OMP_WAIT_POLICY of the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .ctc import CTCLoss  # noqa: E402
from .custom import UserCompileError, elementwise_loss  # noqa: E402
from .elementwise import (  # noqa: E402
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
from .gradcheck import GradientCheckError, check_gradient  # noqa: E402
from .kernels.cache import CacheWarning  # noqa: E402
from .loss import Loss  # noqa: E402
from .makeloss import MakeLoss, make_loss  # noqa: E402
from .pairwise import CosineEmbeddingLoss, TripletLoss  # noqa: E402
from .precompile import precompile  # noqa: E402
from .sdml import SDMLLoss  # noqa: E402
from .softmax import SoftmaxCELoss, SoftmaxCrossEntropyLoss  # noqa: E402

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
    "SoftmaxCrossEntropyLoss",
    "SoftmaxCELoss",
    "CTCLoss",
    "TripletLoss",
    "CosineEmbeddingLoss",
    "SDMLLoss",
    "check_gradient",
    "GradientCheckError",
    "MakeLoss",
    "make_loss",
    "elementwise_loss",
    "UserCompileError",
    "CacheWarning",
    "precompile",
]
