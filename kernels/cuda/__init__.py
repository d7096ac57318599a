"""CUDA kernels (numba-cuda), mirroring :mod:`..cpu` file for file.

Importing this package imports ``numba.cuda`` but needs no GPU: kernels are
compiled on first launch (or to PTX by the test suite). Under
``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator with
small blocks and the shared-memory reduction path (the simulator has no warp
shuffles).
"""

import math

from numba import cuda

from .._options import CACHE, CUDA_GRID_PER_SM, CUDA_SIM_THREADS, CUDA_THREADS

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)
# Options of every ``@cuda.jit`` kernel: the on-disk cache on a real GPU (the simulator has none).
JIT = {"cache": CACHE and not SIMULATOR}
# Threads per block of every kernel (the shared-memory reductions are sized by it).
THREADS = CUDA_SIM_THREADS if SIMULATOR else CUDA_THREADS


def grid_blocks(n: int, sm_count: int) -> int:
    """Blocks of :data:`THREADS` for a grid-stride loop over ``n`` items: enough to
    give every item a thread, at most ``CUDA_GRID_PER_SM`` per multiprocessor."""
    return max(1, min(math.ceil(n / THREADS), sm_count * CUDA_GRID_PER_SM))
