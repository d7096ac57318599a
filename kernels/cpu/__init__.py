"""CPU kernels: ``@njit`` factories over the target-neutral scalar definitions."""
