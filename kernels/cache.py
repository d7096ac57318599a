"""The on-disk kernel cache: where it lives, and a cache that can never break a call.

Numba's own cache (``cache=True``) fails in three ways that this module turns
into at most one warning and a correct result:

* **No writable location** (a read-only install and no writable ``$HOME``, as
  in many containers): ``@njit(cache=True)`` raises ``RuntimeError: cannot
  cache function ...: no locator available`` when the module is imported.
  :func:`cache_enabled` checks once, at import, whether Numba can place a cache;
  if not, it points Numba's ``NUMBA_CACHE_DIR`` setting at a new temporary
  directory (or, if none can be made, turns caching off) and warns once.
* **A read-only cache that is already filled** (a ``NUMBA_CACHE_DIR`` warmed
  when a container image was built, mounted read-only later): Numba skips any
  directory it cannot write to and recompiles everything. The cache here also
  reads from such a directory (and skips saving).
* **A damaged cache file** (truncated, emptied or overwritten ``.nbi`` /
  ``.nbc``): Numba raises from the call that loads it. Here every data file
  carries a SHA-256 digest of its contents; a file that fails to load or to
  verify is ignored, the kernel is recompiled and, where the directory is
  writable, the entry rewritten (one warning per process).
* **Processes that compile at the same time** can give two variants of one
  kernel the same data file (Numba numbers the files), so one variant would
  load the other's machine code: a wrong result or a crash, not an error.
  Here data files are named after their key and hold it; see
  :func:`_checked_cache_file`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import warnings

try:
    import fcntl
except ImportError:  # not POSIX: index updates are not locked (a lost entry costs a recompilation)
    fcntl = None

from numba import njit
from numba.core import caching, config

_DIGEST = 32  # bytes of SHA-256 in front of every data file written here
_warned: set[str] = set()


class CacheWarning(UserWarning):
    """The on-disk kernel cache could not be used as configured; results are unaffected.

    Issued at most once per kind per process: no writable cache location (a
    temporary directory is used instead), a cache directory that cannot be
    written (compiled kernels are not saved), or a damaged cache entry (it is
    recompiled). Each message says what to set, usually ``NUMBA_CACHE_DIR``.
    Filter it like any warning, e.g.
    ``warnings.filterwarnings("ignore", category=numba_losses.CacheWarning)``.
    """


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, CacheWarning, stacklevel=3)


def _readable_cache_dir(user_provided, settings):
    """A locator for ``NUMBA_CACHE_DIR`` when it exists but cannot be written: read what it holds."""

    class ReadableCacheDir(user_provided):
        @classmethod
        def from_function(cls, py_func, py_file):
            where = settings.CACHE_DIR
            if not where or not os.path.isdir(where) or not os.path.isfile(py_file):
                return None
            return cls(py_func, py_file) if os.access(where, os.R_OK | os.X_OK) else None

        def ensure_cache_path(self):
            """Nothing to create: the directory exists and is only read."""

    return ReadableCacheDir


@contextlib.contextmanager
def _index_lock(index_path):
    """An exclusive ``flock`` on ``<index>.lock`` while an index is read, changed and written back.

    Without it two processes that add entries at once each write the index they read, and one
    entry is lost (its kernel is compiled again by a later process). Where no lock file can be
    made (a read-only directory, where saving fails anyway) or on a platform without ``fcntl``,
    the update goes ahead unlocked.
    """
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _checked_cache_file(index_data_file):
    """Data files named after their key and holding it, with a SHA-256 digest of their contents in front.

    Numba numbers a function's data files in the order its index learns of
    them, and several processes compiling new variants of one kernel at once
    (test workers, a process pool, Dask workers) can each pick the same number:
    the last writer's machine code then sits under another variant's index
    entry, and a call of that variant loads code compiled for other argument
    types. Here a data file's name comes from a digest of its key (the
    signature, the target and the source), and the file stores the key, so a
    load checks that it got the variant it asked for: a mismatch is a miss and
    the variant is compiled again. Index updates hold a file lock
    (:func:`_index_lock`), so processes adding entries at once keep all of them.
    """

    class CheckedCacheFile(index_data_file):
        def save(self, key, data):
            with _index_lock(self._index_path):
                overloads = self._load_index()
                name = overloads.get(key)
                if name is None:
                    tag = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
                    name = f"{self._index_name[: -len('.nbi')]}.{tag}.nbc"
                    overloads[key] = name
                    self._save_index(overloads)
            self._save_data(name, (key, data))

        def load(self, key):
            entry = super().load(key)
            if entry is None:
                return None
            stored_key, data = entry
            return data if stored_key == key else None  # written for another variant: a miss

        def _save_data(self, name, data):
            payload = self._dump(data)
            with self._open_for_write(self._data_path(name)) as f:
                f.write(hashlib.sha256(payload).digest() + payload)

        def _load_data(self, name):
            with open(self._data_path(name), "rb") as f:
                blob = f.read()
            digest, payload = blob[:_DIGEST], blob[_DIGEST:]
            if hashlib.sha256(payload).digest() != digest:
                raise ValueError(f"cache file {self._data_path(name)!r} is damaged (digest mismatch)")
            return pickle.loads(payload)

    return CheckedCacheFile


def checked_cache_class(base, index_data_file, settings):
    """``base`` (Numba's ``FunctionCache``, or numba-cuda's ``CUDACache``) made unable to fail a call.

    ``index_data_file``: the ``IndexDataCacheFile`` class of the same caching
    module; ``settings``: the config module whose ``CACHE_DIR`` it reads.
    """
    impl = base._impl_class
    user_provided, *others = impl._locator_classes
    cache_file = _checked_cache_file(index_data_file)

    class CheckedImpl(impl):
        _locator_classes = [user_provided, _readable_cache_dir(user_provided, settings), *others]

        def get_filename_base(self, fullname, abiflags):
            """Numba's file name with ``-sha256k`` added: files without digests and keys are never read as ours."""
            return super().get_filename_base(fullname, abiflags) + "-sha256k"

    class CheckedCache(base):
        _impl_class = CheckedImpl

        def __init__(self, py_func):
            super().__init__(py_func)
            self._cache_file.__class__ = cache_file

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception as exc:  # noqa: BLE001 - any damage means: recompile
                _warn_once(
                    "damaged",
                    f"numba_losses: ignoring a damaged kernel cache entry in {self._cache_path!r} ({exc}); "
                    "the kernel is recompiled. Delete that directory's .nbi/.nbc files to clean it up.",
                )
                try:
                    os.unlink(self._cache_file._index_path)  # the next save rewrites it
                except OSError:
                    pass  # read-only or already gone
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs compile time
                _warn_once(
                    "unwritable",
                    f"numba_losses: cannot write the kernel cache in {self._cache_path!r} ({exc}); kernels "
                    "compiled in this process are not saved. Set NUMBA_CACHE_DIR to a writable directory to "
                    "keep them.",
                )

    CheckedCache.__name__ = CheckedCache.__qualname__ = f"Checked{base.__name__}"
    return CheckedCache


CheckedFunctionCache = checked_cache_class(caching.FunctionCache, caching.IndexDataCacheFile, config)


def _probe() -> int:  # a function of this package, to ask Numba where its cache would go
    return 0


def _location_available() -> bool:
    try:
        CheckedFunctionCache(_probe)
    except RuntimeError:
        return False
    return True


FALLBACK_DIR: str | None = None  # the temporary cache directory, when one had to be made


def cache_enabled() -> bool:
    """Whether kernels are cached on disk; called once when the kernels are imported.

    ``NUMBA_LOSSES_CACHE=0`` turns the cache off. Otherwise, when Numba finds no
    place for it, ``NUMBA_CACHE_DIR`` is pointed at a new temporary directory
    (for the whole process, so the caller's own cached Numba functions work
    too) with one :class:`CacheWarning`; if even that fails, caching is off.
    """
    if os.environ.get("NUMBA_LOSSES_CACHE", "1") == "0":
        return False
    if _location_available():
        return True
    global FALLBACK_DIR
    try:
        config.CACHE_DIR = FALLBACK_DIR = tempfile.mkdtemp(prefix="numba-losses-cache-")
        fallback = _location_available()
    except OSError:
        fallback = False
    if fallback:
        _warn_once(
            "location",
            "numba_losses: no writable place for Numba's kernel cache (the install directory and the user cache "
            f"directory are read-only); using the temporary directory {config.CACHE_DIR!r} for this process. Set "
            "NUMBA_CACHE_DIR to a writable directory to keep compiled kernels between runs.",
        )
        return True
    _warn_once(
        "location",
        "numba_losses: no writable place for Numba's kernel cache and no temporary directory; kernels are "
        "compiled in every process. Set NUMBA_CACHE_DIR to a writable directory to cache them.",
    )
    return False


CACHE = cache_enabled()


def cached(dispatcher, enabled: bool = True):
    """``dispatcher`` (a CPU ``@njit`` one built without ``cache=``) with the checked on-disk cache."""
    if enabled and CACHE:
        dispatcher._cache = CheckedFunctionCache(dispatcher.py_func)
    return dispatcher


def njit_cached(**options):
    """``@njit(**options)`` with the checked on-disk cache (for module-level helpers)."""
    return lambda fn: cached(njit(**options)(fn))
