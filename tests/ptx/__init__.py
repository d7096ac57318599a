"""PTX compilation of every CUDA kernel, without a GPU (run by ``tests/test_ptx.py``).

``catalogue`` compiles the whole catalogue and prints one JSON report:
``python -m tests.ptx.catalogue [--jobs N] [--only TEXT]`` from the repository
root. Every other module lists one structured-loss family's kernels (``jobs()``
and ``build(job)``, see ``catalogue``) and is found by its presence here.
"""
