"""Kernels of MXNet's product weighting on the GPU (CTC, CosineEmbeddingLoss).

The loss of these families is not reduced: the output is
``(loss * sample_weight) * weight``, broadcast to ``loss`` and
``sample_weight``'s common shape, and the gradient scale of a loss position is
the sum of ``out_grad * sample_weight * weight`` over the output elements it
was broadcast to. :mod:`numba_losses._core.weighting` views every operand as
the same ``(n_outer, n_rows, n_cols)`` shape (zero strides where broadcast),
so one elementwise kernel each does the work; the sum over copies is
:func:`.reduce.sum_middle_kernel`. The row reductions (mean over the
non-batch axes) run on the row kernels of :mod:`.elementwise`. On the CPU,
NumPy does the same in a few vectorised calls, so this file has no CPU twin.
"""

from numba import cuda, float64

from ..vmath import like
from . import jit_kernel


@cuda.jit(device=True, inline="always")
def index3(t, n_rows, n_cols):
    """``(o, r, j)`` of flat index ``t`` in a C-ordered ``(n_outer, n_rows, n_cols)`` array."""
    o = t // (n_rows * n_cols)
    rem = t - o * (n_rows * n_cols)
    r = rem // n_cols
    return o, r, rem - r * n_cols


@jit_kernel
def weigh_product_kernel(loss, sw, has_sw, weight, proto, out):
    """``out[o, r, j] = (loss[o, r, j] * sw[o, r, j]) * weight`` in the compute dtype of ``proto``.

    ``loss`` and ``sw`` are broadcast views of ``out``'s shape (``sw`` read when ``has_sw``);
    the result is stored in ``out``'s dtype.
    """
    n_outer, n_rows, n_cols = out.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, n_outer * n_rows * n_cols, step):
        o, r, j = index3(t, n_rows, n_cols)
        v = like(proto, loss[o, r, j])
        if has_sw:
            v = v * like(proto, sw[o, r, j])
        out[o, r, j] = v * like(proto, weight)


@jit_kernel
def head_product_kernel(og, has_og, sw, has_sw, weight, h):
    """``h[o, r, j] = out_grad * sample_weight * weight`` in float64 (``og`` / ``sw`` read when given)."""
    n_outer, n_rows, n_cols = h.shape
    start, step = cuda.grid(1), cuda.gridsize(1)
    for t in range(start, n_outer * n_rows * n_cols, step):
        o, r, j = index3(t, n_rows, n_cols)
        v = float64(1.0)
        if has_og:
            v = float64(og[o, r, j])
        if has_sw:
            v = v * float64(sw[o, r, j])
        h[o, r, j] = v * weight
