"""asv benchmarks of numba_losses against NumPy (CuPy on a GPU) and PyTorch versions of the same losses.

One ``bench_<family>.py`` per loss family; ``device`` ("cpu", "cuda") is an asv parameter.
"""
