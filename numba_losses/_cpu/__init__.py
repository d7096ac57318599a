"""Host execution: NumPy inputs to views and buffers, then the kernels of ``numba_losses.kernels.cpu``.

One module per loss family, named like the family everywhere else; each has
``run(spec, call) -> (value, grads)``.
"""
