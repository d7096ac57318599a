"""Which row of a per-thread scratch array a kernel task uses.

Kernels that need small work arrays take them from the caller instead of
allocating them per task: each ``np.empty`` / ``np.zeros`` signature in a
kernel is a function Numba compiles at a process's first call (a tenth of a
second or more each), and the caller keeps the arrays from call to call. A
scratch array has one row per thread of Numba's pool
(:func:`scratch_rows`); the parallel variant of a kernel picks the row of the
thread running the task (``numba.get_thread_id()``, documented to lie in
``[0, get_num_threads())``), the serial variant always row 0.
"""

from numba import get_thread_id
from numba.core import config
from numba.extending import register_jitable


def scratch_rows() -> int:
    """Rows of a per-thread scratch array: one per thread of Numba's pool (``NUMBA_NUM_THREADS``)."""
    return config.NUMBA_NUM_THREADS


@register_jitable(forceinline=True)
def _thread_zero():
    """The serial variant's "thread id": its scratch row is row 0."""
    return 0


def thread_row(parallel: bool):
    """The function a kernel variant calls for its scratch row: ``get_thread_id`` or row 0.

    The serial variant must not reference ``get_thread_id``: a kernel loaded
    from the on-disk cache has it resolved only once Numba's threading layer is
    up, which loading a parallel kernel ensures and loading a serial one does
    not (it crashed).
    """
    return get_thread_id if parallel else _thread_zero
