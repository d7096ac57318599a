"""One INFO line on the ``numba_losses`` logger when a loss call compiles a kernel.

A kernel variant is compiled the first time a loss meets a new combination of
dtype, forward-only or forward+backward, and input size (serial or parallel
kernel): seconds of silence otherwise. Every call enters :func:`enter` (a
thread-local record of the loss and what it computes); a listener on Numba's
``numba:compile`` event, which Numba raises only when it really compiles (never
when it loads a kernel from the on-disk cache), logs the first compilation of
the call::

    compiling SoftmaxCELoss float32 forward+backward (first use; cached afterwards)

and stays silent for the rest of that call (a call may compile several kernels).

A parallel kernel's first call runs its serial twin and then has the parallel
kernel compiled in a background thread (:mod:`numba_losses.kernels.cpu.tiered`).
If the call compiled the twin, its line says so and the background compile adds
none::

    compiling L2Loss float32 forward+backward, serial kernel now, parallel kernel in the background (first use; ...)

otherwise (the twin was compiled or cached already) the background thread takes
over the call's record and logs the line::

    compiling L2Loss float32 forward+backward, parallel kernel, in the background (first use; ...)
"""

from __future__ import annotations

import logging
import threading

from numba.core import event, types

from numba_losses.kernels.cpu import tiered

logger = logging.getLogger("numba_losses")

_MODES = {(True, False): "forward", (True, True): "forward+backward", (False, True): "backward"}


class _State(threading.local):
    """The loss call now running in this thread (``None`` outside calls) and whether it was announced."""

    pending: tuple[str, bool, bool] | None = None
    logged: bool = False
    background: bool = False  #: a background compile's thread, for the call recorded in ``pending``
    deferred: list | None = None  #: background compiles to start when the call ends


_STATE = _State()  # a thread-local attribute costs ~0.1 us per call (a ContextVar ~0.4 us)


def enter(loss: str, want_value: bool, want_grad: bool) -> bool:
    """Mark a call of ``loss`` as running; False inside an enclosing call (e.g. MakeLoss's), which keeps it."""
    state = _STATE
    if state.pending is not None:
        return False
    state.pending = (loss, want_value, want_grad)
    state.logged = False
    return True


def leave(token: bool) -> None:
    """End the call for which :func:`enter` returned ``token``."""
    if token:
        state = _STATE
        state.pending = None
        if state.deferred:
            starts, state.deferred = state.deferred, None
            for start in starts:
                start()


def _capture() -> tuple[str, bool, bool] | None:
    """The loss call running in this thread, for a background compile it starts (None: already logged)."""
    state = _STATE
    return None if state.logged else state.pending


def _enter_background(pending: tuple[str, bool, bool] | None) -> bool:
    """Record ``pending`` (captured by :func:`_capture`) in a background compile's thread."""
    if pending is None:
        return False
    state = _STATE
    state.pending, state.logged, state.background = pending, False, True
    return True


def _leave_background(token: bool) -> None:
    if token:
        _STATE.pending, _STATE.background = None, False


def _defer(start) -> bool:
    """Run ``start()`` when the loss call running in this thread ends (False: no call is running)."""
    state = _STATE
    if state.pending is None or state.background:
        return False
    if state.deferred is None:
        state.deferred = []
    state.deferred.append(start)
    return True


tiered.Hooks.capture = _capture
tiered.Hooks.defer = _defer
tiered.Hooks.enter_background = _enter_background
tiered.Hooks.leave = _leave_background


def message(data: dict | None) -> tuple[str, tuple] | None:
    """The log record's format and arguments for a ``numba:compile`` event's data (None outside a call)."""
    state = _STATE
    if state.pending is None or state.logged:
        return None
    state.logged = True
    loss, want_value, want_grad = state.pending
    data = data or {}
    dtype = next((str(t.dtype) for t in data.get("args", ()) if isinstance(t, types.Array)), "")
    dispatcher = data.get("dispatcher")
    variant = ""
    if state.background:
        variant = ", parallel kernel, in the background"
    elif tiered.STAND_IN.active:  # a parallel kernel's first call: its serial twin runs meanwhile
        variant = ", serial kernel now, parallel kernel in the background"
    elif dispatcher is not None and getattr(dispatcher, "targetoptions", {}).get("parallel") is False:
        variant = ", small inputs"  # the serial kernel (inputs under NUMBA_LOSSES_SERIAL_BELOW elements)
    cache = getattr(dispatcher, "_cache", None)
    cached = cache is not None and type(cache).__name__ != "NullCache"
    what = "first use; cached afterwards" if cached else "first use in this process; not cached"
    words = " ".join(w for w in (loss, dtype, _MODES[want_value, want_grad]) if w)
    return "compiling %s%s (%s)", (words, variant, what)


class _CompileListener(event.Listener):
    def on_start(self, ev: event.Event) -> None:
        found = message(ev.data)
        if found is not None and logger.isEnabledFor(logging.INFO):
            logger.info(found[0], *found[1])

    def on_end(self, ev: event.Event) -> None:
        pass


event.register("numba:compile", _CompileListener())
