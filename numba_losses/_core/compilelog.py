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
"""

from __future__ import annotations

import logging
import threading

from numba.core import event, types

logger = logging.getLogger("numba_losses")

_MODES = {(True, False): "forward", (True, True): "forward+backward", (False, True): "backward"}


class _State(threading.local):
    """The loss call now running in this thread (``None`` outside calls) and whether it was announced."""

    pending: tuple[str, bool, bool] | None = None
    logged: bool = False


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
        _STATE.pending = None


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
    if dispatcher is not None and getattr(dispatcher, "targetoptions", {}).get("parallel") is False:
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
