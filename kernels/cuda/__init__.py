"""CUDA kernels (numba-cuda), mirroring :mod:`..cpu` file for file.

Importing this package imports ``numba.cuda`` but needs no GPU: kernels are
compiled on first launch (or to PTX by the test suite). Under
``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's simulator with
small blocks and the shared-memory reduction path (the simulator has no warp
shuffles).
"""

from numba import cuda

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)
