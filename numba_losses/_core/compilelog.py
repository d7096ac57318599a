"""One INFO line on the ``numba_losses`` logger when a loss call compiles a kernel.

A kernel variant is compiled the first time a loss meets a new combination of
dtype, forward-only or forward+backward, and input size (serial or parallel
kernel): seconds of silence otherwise. Every call enters :func:`enter` (a
context variable naming the loss and what it computes); a listener on Numba's
``numba:compile`` event, which Numba raises only when it really compiles (never
when it loads a kernel from the on-disk cache), logs the first compilation of
the call::

    compiling SoftmaxCELoss float32 forward+backward (first use; cached afterwards)

and stays silent for the rest of that call (a call may compile several kernels).
"""

from __future__ import annotations

import contextvars
import logging

from numba.core import event, types

logger = logging.getLogger("numba_losses")

_MODES = {(True, False): "forward", (True, True): "forward+backward", (False, True): "backward"}


class _Pending:
    """The loss call now running and whether its compilation has been announced."""

    __slots__ = ("loss", "mode", "logged")

    def __init__(self, loss: str, mode: str) -> None:
        self.loss = loss
        self.mode = mode
        self.logged = False


_CURRENT: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar("numba_losses_call", default=None)


def enter(loss: str, want_value: bool, want_grad: bool) -> contextvars.Token | None:
    """Mark a call of ``loss`` as running (None inside an enclosing call, e.g. MakeLoss's)."""
    if _CURRENT.get() is not None:
        return None
    return _CURRENT.set(_Pending(loss, _MODES[want_value, want_grad]))


def leave(token: contextvars.Token | None) -> None:
    """End the call that :func:`enter` returned ``token`` for."""
    if token is not None:
        _CURRENT.reset(token)


def message(data: dict | None) -> tuple[str, tuple] | None:
    """The log record's format and arguments for a ``numba:compile`` event's data (None outside a call)."""
    pending = _CURRENT.get()
    if pending is None or pending.logged:
        return None
    pending.logged = True
    data = data or {}
    dtype = next((str(t.dtype) for t in data.get("args", ()) if isinstance(t, types.Array)), "")
    dispatcher = data.get("dispatcher")
    variant = ""
    if dispatcher is not None and getattr(dispatcher, "targetoptions", {}).get("parallel") is False:
        variant = ", small inputs"  # the serial kernel (inputs under NUMBA_LOSSES_SERIAL_BELOW elements)
    cache = getattr(dispatcher, "_cache", None)
    cached = cache is not None and type(cache).__name__ != "NullCache"
    what = "first use; cached afterwards" if cached else "first use in this process; not cached"
    words = " ".join(w for w in (pending.loss, dtype, pending.mode) if w)
    return "compiling %s%s (%s)", (words, variant, what)


class _CompileListener(event.Listener):
    def on_start(self, ev: event.Event) -> None:
        found = message(ev.data)
        if found is not None and logger.isEnabledFor(logging.INFO):
            logger.info(found[0], *found[1])

    def on_end(self, ev: event.Event) -> None:
        pass


event.register("numba:compile", _CompileListener())
