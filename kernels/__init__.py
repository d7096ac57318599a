"""Numba kernels of numba_losses, shipped as ``numba_losses.kernels``.

Layout:

* :mod:`.vmath` - vectorisable exp / log / log1p (target-neutral scalar math).
* :mod:`.scalar` - one value/derivative pair per elementwise loss term.
* :mod:`.registry` - the table of those pairs, looped over by the dispatcher,
  tests, benchmarks and docs.
* :mod:`.cpu` - CPU kernel factories (``@njit``, ``prange``).
* :mod:`._options` - every compile knob in one place.

Importing this package compiles nothing: kernels are built by their factories
at first use and cached on disk (``cache=True``).
"""
