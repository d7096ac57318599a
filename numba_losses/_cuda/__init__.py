"""Device execution: CUDA arrays to strided device views, the caller's allocator and stream, then
the kernels of ``numba_losses.kernels.cuda``.

One module per loss family, named like the family everywhere else; each has
``run(spec, call) -> (value, grads)``. Imported on the first call with device
arrays (``numba_losses.loss.family_module``).
"""
