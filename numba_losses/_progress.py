"""A progress line for long compilations: ``[7/19] HuberLoss(rho=0.5) compiling ... 2.1 s``.

On a terminal the line of the running task is rewritten in place with a running
clock (a carriage return, from a background thread); elsewhere (a log, a CI job)
each finished task prints one plain line. Both end with the total.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """Progress of ``total`` tasks on ``stream`` (default stderr); ``enabled=False`` prints nothing."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.done = 0
        self.start = time.perf_counter()
        self._label = ""
        self._since = self.start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, label: str, verb: str = "compiling") -> None:
        """Task ``label`` starts (on a terminal: the live line)."""
        with self._lock:
            self._label = f"{label} {verb}"
            self._since = time.perf_counter()
        if not self.tty:
            return
        self._draw()
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def end(self, label: str, note: str, seconds: float | None = None) -> None:
        """Task ``label`` finished: ``[k/N] label note 2.1 s`` on its own line."""
        with self._lock:
            self.done += 1
            self._label = ""
            took = time.perf_counter() - self._since if seconds is None else seconds
            line = f"[{self.done}/{self.total}] {label} {note} {took:.1f} s"
        self._write(line, final=True)

    def close(self, summary: str) -> None:
        """Stop the clock and print ``summary`` with the total time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._write(f"{summary} in {self.elapsed():.1f} s", final=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if not self._label:
                return
            line = f"[{self.done + 1}/{self.total}] {self._label} ... {time.perf_counter() - self._since:.1f} s"
        self._write(line, final=False)

    def _write(self, line: str, final: bool) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.tty:
                self.stream.write(f"\r\x1b[K{line}" + ("\n" if final else ""))
            elif final:
                self.stream.write(line + "\n")
            self.stream.flush()
