r"""Scalar rules of the softmax family, shared by the CPU and CUDA kernels.

MXNet's ``pick(..., mode='clip')`` turns a sparse label into a class id
(docs/semantics.rst section 5): a float label is truncated toward zero by a C cast, where
NaN, infinities and values outside int32 become ``INT_MIN`` on x86; an integer
label is first reduced to int32 modulo :math:`2^{32}`; then ids :math:`\le 0`
give class 0 and ids :math:`\ge C` give class :math:`C - 1`. The class id is
therefore never out of bounds.

Label smoothing (``label_smoothing`` :math:`\varepsilon`, PyTorch's
definition) replaces the target :math:`t` (one-hot or the dense label) by

.. math:: q_k = (1 - \varepsilon)\, t_k + \varepsilon / C .
"""

import numpy as np
from numba.extending import register_jitable

from ._options import HELPER

_INT32_END = 2147483648.0  # 2**31: float labels at or above it become INT_MIN


@register_jitable(**HELPER)
def pick_float(v, n_classes):
    """Class id of a floating-point label ``v`` (any float dtype) among ``n_classes``."""
    j = 0
    if v >= 1.0 and v < _INT32_END:  # NaN fails both tests: class 0
        j = np.int64(v)  # truncates as int(v), without compiling an overload of int
        if j > n_classes - 1:
            j = n_classes - 1
    return j


@register_jitable(**HELPER)
def pick_int(v, n_classes):
    """Class id of an integer label ``v``: int32 wrap-around, then clipped to ``[0, n_classes)``."""
    j = np.int64(np.int32(v))  # C cast: keeps the low 32 bits
    if j < 0:
        j = 0
    if j > n_classes - 1:
        j = n_classes - 1
    return j


@register_jitable(**HELPER)
def smoothing(eps, n_classes):
    """``(q1, q0)`` with :math:`q_k = q_1 t_k + q_0`: :math:`(1 - \\varepsilon, \\varepsilon / C)`."""
    return 1.0 - eps, eps / n_classes
