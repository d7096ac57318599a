"""asv benchmarks of numba_losses against vectorised NumPy versions of the same losses."""
