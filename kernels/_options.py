"""Compile-time knobs of every kernel, in one place.

``CPU_FASTMATH`` only allows FMA contraction: ``reassoc`` would let LLVM fold
the two-part constants and compensation terms of :mod:`.vmath`, and
``nnan``/``ninf`` would break MXNet's NaN/inf semantics. The reassociating
block sum lives in its own function with ``SUM_FASTMATH`` so LLVM can
vectorise it; its flags do not leak into the scalar math.

Environment variables:

``NUMBA_LOSSES_CACHE``
    ``0`` disables the on-disk kernel cache (default on).
``NUMBA_LOSSES_SERIAL_BELOW``
    element count below which the serial kernel variant is used
    (default 32768).
``NUMBA_LOSSES_BACKGROUND_COMPILE``
    ``0`` makes a parallel kernel's first call compile it and wait, instead
    of running the serial twin while it compiles in the background (read by
    :mod:`.cpu.tiered`).
"""

import functools
import hashlib
import os
from pathlib import Path

from .cache import CACHE as CACHE_ENABLED

CPU_FASTMATH = frozenset({"contract"})
#: Options of every inlined helper, CPU and CUDA: ``register_jitable(**HELPER)``. Numba compiles a
#: helper on its own before LLVM inlines it into the calling kernel; ``register_jitable`` leaves out
#: the CPython wrapper, but builds a C-callable wrapper that nothing here calls, about a third of a
#: small helper's compile (relu: 18 -> 12 ms, the float32 exp's polynomial: 26 -> 19 ms). A loss
#: built on :mod:`.vmath`'s exp and log compiles a dozen helpers at its first use.
HELPER = {"forceinline": True, "no_cfunc_wrapper": True}
#: Options of the ``@njit`` functions that only kernels call (block sums, CTC's label helpers): no
#: CPython wrapper either (block_sum's first compile: 50 -> 30 ms).
NO_WRAPPERS = {"no_cfunc_wrapper": True, "no_cpython_wrapper": True}
SUM_FASTMATH = frozenset({"contract", "reassoc"})
ERROR_MODEL = "numpy"  # float division by zero gives inf/NaN, never raises
CACHE = CACHE_ENABLED  # NUMBA_LOSSES_CACHE=0 turns it off; see .cache for the fallbacks
SERIAL_BELOW = int(os.environ.get("NUMBA_LOSSES_SERIAL_BELOW", "32768"))

# Elements evaluated per block before the block is summed (fits in L1).
BLOCK = 512
# Elements per parallel task along a row. Fixed (never derived from the thread
# count) so that reductions are bit-identical whatever NUMBA_NUM_THREADS is.
CHUNK = 1 << 16


@functools.cache
def source_fingerprint() -> int:
    """A hash of every kernel source file, for kernel factories to capture.

    Numba's on-disk cache only notices changes to the file that defines a
    kernel, not to the ``register_jitable`` functions it inlines from other
    files. Factories capture this number in their closures; Numba hashes
    closure contents into the cache key, so editing any kernel source (or
    installing another version) recompiles instead of loading stale code.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return int.from_bytes(digest.digest()[:7], "little")


# CUDA launch shape. Threads per block (a power of two, at most 1024) and the
# shared-memory reduction buffer size; the simulator runs every thread as a Python
# thread, so it gets small blocks.
CUDA_THREADS = 256
CUDA_SIM_THREADS = 32
# Fewest elements a thread handles before a row gets more threads.
CUDA_ITEMS = 8
# Blocks per multiprocessor a launch aims for (occupancy) and at most launches
# (the rest is covered by grid-stride loops).
CUDA_BLOCKS_PER_SM = 8
CUDA_GRID_PER_SM = 32
