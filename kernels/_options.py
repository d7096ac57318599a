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
"""

import os

CPU_FASTMATH = frozenset({"contract"})
SUM_FASTMATH = frozenset({"contract", "reassoc"})
ERROR_MODEL = "numpy"  # float division by zero gives inf/NaN, never raises
CACHE = os.environ.get("NUMBA_LOSSES_CACHE", "1") != "0"
SERIAL_BELOW = int(os.environ.get("NUMBA_LOSSES_SERIAL_BELOW", "32768"))

# Elements evaluated per block before the block is summed (fits in L1).
BLOCK = 512
# Elements per parallel task along a row. Fixed (never derived from the thread
# count) so that reductions are bit-identical whatever NUMBA_NUM_THREADS is.
CHUNK = 1 << 16
