"""Planning: shapes, dtypes and layouts of a call, from layout arrays; reads no data, knows no backend.

Each module takes the *layout* of the inputs (a NumPy array on the host, or a
device array's layout array, :mod:`numba_losses._core.device`) and says
everything a backend needs before running a kernel: output and gradient
shapes, compute and result dtypes, the canonical kernel layout, the weighting.
Each module's ``result_shapes(spec, inputs)`` answers the question for bare
shapes and dtypes (:meth:`numba_losses.Loss.result_shapes`).
"""
