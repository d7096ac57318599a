"""Strided gather: copy any N-d strided (or zero-stride) view into a contiguous array.

The CPU path gets this from NumPy (``np.ascontiguousarray``); device arrays
need a kernel. It is only used when a broadcast input has no strided view in
the row kernels' ``(n_outer, n_rows, n_inner)`` layout, which is rare (e.g. a
``sample_weight`` that adds leading axes to ``pred``).
"""

from numba import cuda

from . import jit_kernel


@jit_kernel
def gather_kernel(src, base, shape, strides, dst):
    """``dst[t] = src[base + sum_d i_d * strides[d]]`` for the C-order index ``(i_d)`` of ``t``.

    ``src`` is a flat view of the source's memory, ``shape`` and ``strides``
    (in elements, possibly zero or negative) tuples of equal length; the store
    converts to ``dst``'s dtype.
    """
    start, step = cuda.grid(1), cuda.gridsize(1)
    ndim = len(shape)
    for t in range(start, dst.shape[0], step):
        rem = t
        off = base
        for j in range(ndim):
            d = ndim - 1 - j
            i = rem % shape[d]
            rem //= shape[d]
            off += i * strides[d]
        dst[t] = src[off]
