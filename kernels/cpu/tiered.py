"""Parallel kernels whose first call does not wait for their compilation.

A parallel kernel (``prange``) takes Numba about twice as long to compile as
the same kernel with a serial loop: the parallel lowering turns the loop body
into a function of its own and wraps it for the thread pool (about 0.7 s more
on a 2-core machine, for every variant). Every kernel here computes the same
tasks in the same order whatever runs them (the task layout comes from the
shapes alone, never from the thread count), so the serial variant gives
bit-identical results and can stand in for the parallel one.

:class:`TieredKernel` does that for a parallel kernel's first call in a
process when the on-disk cache does not hold the parallel kernel for the
call's argument types (if it does, it is loaded and called, as usual): it runs
the serial twin (compiled in the call, or loaded from the cache) and starts
compiling the parallel kernel for the same argument types in a background
thread when the loss call ends (the rest of the call may need Numba's
compiler lock for kernels of its own). The next call of the kernel (or of any
other parallel kernel) waits for that compile if it is still running (it would
otherwise share the GIL with it, call after call), then every call goes
straight to the parallel kernel. Argument types met after that (another dtype,
a strided view) compile in the call, as with any Numba kernel. The background
compile holds Numba's compiler lock, and mostly the GIL: other Python threads
run slower meanwhile, and a kernel that another thread must compile waits for
it.

The background thread is not a daemon: a process waits for it at exit, so the
compiled kernel reaches the on-disk cache. :func:`wait` waits for every
background compile, and a ``fork`` waits first too (a child must not inherit a
compiler lock held by a thread it does not have).

``NUMBA_LOSSES_BACKGROUND_COMPILE=0`` turns this off: a parallel kernel's
first call then compiles it and waits, as Numba does by default; so does
:func:`synchronous`, for code that compiles kernels on purpose (``precompile``:
a stand-in would compile serial twins that nothing else needs).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from numba.core.compiler_lock import global_compiler_lock

#: Whether a parallel kernel's first call runs its serial twin while it compiles in the background.
ENABLED = os.environ.get("NUMBA_LOSSES_BACKGROUND_COMPILE", "1") != "0"

_running: set[threading.Thread] = set()
_running_lock = threading.Lock()
_synchronous = 0  # > 0 inside synchronous()


@contextlib.contextmanager
def synchronous() -> Iterator[None]:
    """Inside the block, a parallel kernel's first call compiles it in the call (no serial stand-in)."""
    global _synchronous
    with _running_lock:
        _synchronous += 1
    try:
        yield
    finally:
        with _running_lock:
            _synchronous -= 1


class Hooks:
    """What the layer above does around compiles (its compile log); no-ops until it sets them.

    ``capture()`` returns the calling thread's context (what loss call is running);
    ``enter_background(context)`` installs it in the background thread and returns
    a token for ``leave(token)``. ``defer(start)`` returns True if it will call
    ``start()`` when the loss call now running ends (a compile started at once
    would hold the compiler lock that the rest of the call may need), False when
    no call is running.
    """

    capture: Callable[[], Any] = staticmethod(lambda: None)
    defer: Callable[[Callable[[], None]], bool] = staticmethod(lambda start: False)
    enter_background: Callable[[Any], Any] = staticmethod(lambda context: None)
    leave: Callable[[Any], None] = staticmethod(lambda token: None)


class _StandIn(threading.local):
    active = False


#: ``STAND_IN.active`` is true in a thread while it runs a serial twin for a parallel kernel's first call.
STAND_IN = _StandIn()


class TieredKernel:
    """A parallel kernel whose first call runs its serial twin and has it compiled in the background.

    Parameters
    ----------
    parallel : numba dispatcher
        The parallel kernel (``njit(parallel=True)``).
    serial : callable
        Returns the serial twin: the same kernel body and arguments with a serial
        loop, giving bit-identical results. Called at the first call only (the
        factories cache their kernels, so it is never compiled twice).

    Calling the object calls the kernel. Attributes it does not define (``py_func``,
    ``targetoptions``, ``stats``, ``signatures``, ...) are the parallel kernel's.
    """

    def __init__(self, parallel: Any, serial: Callable[[], Any]) -> None:
        self.parallel = parallel
        self._serial = serial
        self._ready = False  # True: every call goes to the parallel kernel (which may compile in the call)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parallel, name)

    def __call__(self, *args: Any) -> Any:
        if self._ready and not _running:
            return self.parallel(*args)
        return self._first_calls(args)

    def _first_calls(self, args: tuple[Any, ...]) -> Any:
        """The first call: the serial twin, and the parallel kernel's compile started (at the call's end).

        A later call waits for that compile and runs the parallel kernel: calls running
        the serial kernel meanwhile would share the GIL with the compile thread (Numba's
        compiler is mostly Python), each losing up to a switch interval (5 ms) to it, so
        a loop timed right after a first call would measure that, not the kernels. For
        the same reason a call of any ready kernel waits for every running background
        compile. Calls of the same kernel inside the first loss call (before the compile
        starts) run the twin too.
        """
        if self._ready:  # another kernel compiles in the background: wait for it (see below)
            wait()
            return self.parallel(*args)
        sig = None
        thread = self._thread
        if thread is None:
            sig = tuple(self.parallel.typeof_pyval(a) for a in args)
            if not ENABLED or _synchronous or _load_cached(self.parallel, sig):
                self._ready = True
                return self.parallel(*args)
        elif thread.ident is not None:  # a later call: wait for the compile rather than share the GIL with it
            thread.join()
            return self.parallel(*args)
        STAND_IN.active = True
        try:
            result = self._serial()(*args)  # compiles or loads the twin first: it must not wait for the lock
        finally:
            STAND_IN.active = False
        with self._lock:
            if self._thread is None and not self._ready and sig is not None:
                thread = threading.Thread(
                    target=self._compile,
                    args=(sig, Hooks.capture()),
                    name=f"numba_losses compile {self.parallel.py_func.__name__}",
                )
                self._thread = thread
                if not Hooks.defer(lambda: _start(thread)):
                    _start(thread)
        return result

    def _compile(self, sig: tuple[Any, ...], context: Any) -> None:
        token = Hooks.enter_background(context)
        try:
            self.parallel.compile(sig)
        except BaseException:  # noqa: BLE001 - the next call compiles in the caller's thread and raises there
            pass
        finally:
            Hooks.leave(token)
            self._ready = True
            with _running_lock:
                _running.discard(threading.current_thread())


def _start(thread: threading.Thread) -> None:
    with _running_lock:
        _running.add(thread)
    thread.start()


def _load_cached(dispatcher: Any, sig: tuple[Any, ...]) -> bool:
    """Whether ``dispatcher`` has a kernel for ``sig``, loading it from the on-disk cache if it is there.

    What Numba's ``Dispatcher.compile`` does before it compiles (the same steps,
    under the same lock), without compiling; False where that fails.
    """
    try:
        with global_compiler_lock:
            if dispatcher.overloads.get(sig) is not None:
                return True
            cres = dispatcher._cache.load_overload(sig, dispatcher.targetctx)
            if cres is None:
                return False
            dispatcher._cache_hits[sig] += 1
            dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            dispatcher.add_overload(cres)
            return True
    except Exception:  # noqa: BLE001 - another Numba's internals: compile (in the background) instead
        return False


def wait() -> None:
    """Wait for every background compile running in this process."""
    me = threading.current_thread()
    while True:
        with _running_lock:
            threads = [t for t in _running if t is not me]
        if not threads:
            return
        for thread in threads:
            thread.join()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=wait)
