"""How every CPU kernel is compiled: one set of Numba options, one name rule, one cache key.

Kernel factories build each variant (parallel or serial, and the factory's own
flags) as a closure and hand it to :func:`compile_kernel`. Numba's on-disk
cache key covers a closure's contents but not compile options such as
``parallel``, nor the ``register_jitable`` helpers inlined from other files;
so each kernel body starts with ``if key < 0: return`` on the value of
:func:`cache_key` (never true), which ties its cache entry to the variant and
to a hash of every kernel source file.
"""

from numba import njit

from .._options import CPU_FASTMATH, ERROR_MODEL, source_fingerprint
from ..cache import cached
from .tiered import TieredKernel


def cache_key(parallel: bool) -> int:
    """The constant a kernel closure captures: the kernel sources' hash and the variant."""
    return source_fingerprint() * 2 + int(parallel)


def compile_kernel(fn, name: str, parallel: bool, cache: bool = True, serial=None):
    """``fn`` as a lazily compiled Numba kernel named ``{name}_{parallel|serial}_kernel``.

    ``cache=False`` keeps it out of the on-disk cache (a user's functions may
    not be importable by a later process). ``serial``: for a parallel kernel, a
    function returning its serial twin (the factory's kernel for the same flags
    with ``parallel=False``); the kernel is then a :class:`.tiered.TieredKernel`,
    whose first call runs the twin while the parallel kernel compiles in the
    background.
    """
    fn.__qualname__ = fn.__name__ = f"{name}_{'parallel' if parallel else 'serial'}_kernel"
    # no_cfunc_wrapper: kernels are called from Python (the CPython wrapper) or from other
    # kernels (the native entry point), never as first-class function values, so the C
    # wrapper Numba compiles by default would only cost compile time.
    options = {"fastmath": set(CPU_FASTMATH), "error_model": ERROR_MODEL, "no_cfunc_wrapper": True}
    kernel = cached(njit(parallel=parallel, **options)(fn), cache)
    if parallel and serial is not None and hasattr(kernel, "typeof_pyval"):  # not under NUMBA_DISABLE_JIT
        return TieredKernel(kernel, serial)
    return kernel
