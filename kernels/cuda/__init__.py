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
from ..cache import FALLBACK_DIR, checked_cache_class

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)
# The on-disk cache on a real GPU (the simulator has none), with the CPU kernels' checks (see ..cache).
CACHED = CACHE and not SIMULATOR
_checked_cache = None


def jit_kernel(fn, *, cache: bool = True):
    """``cuda.jit(fn)``, cached on disk (unless ``cache=False``) in the checked cache of ``..cache``."""
    global _checked_cache
    dispatcher = cuda.jit(fn)
    if cache and CACHED:
        if _checked_cache is None:
            from numba.cuda.core import caching, config
            from numba.cuda.dispatcher import CUDACache

            if FALLBACK_DIR and not config.CACHE_DIR:  # no writable place: the CPU kernels' temporary one
                config.CACHE_DIR = FALLBACK_DIR
            _checked_cache = checked_cache_class(CUDACache, caching.IndexDataCacheFile, config)
        dispatcher._cache = _checked_cache(dispatcher.py_func)
    return dispatcher


# Threads per block of every kernel (the shared-memory reductions are sized by it).
THREADS = CUDA_SIM_THREADS if SIMULATOR else CUDA_THREADS


def grid_blocks(n: int, sm_count: int) -> int:
    """Blocks of :data:`THREADS` for a grid-stride loop over ``n`` items: enough to
    give every item a thread, at most ``CUDA_GRID_PER_SM`` per multiprocessor."""
    return max(1, min(math.ceil(n / THREADS), sm_count * CUDA_GRID_PER_SM))
