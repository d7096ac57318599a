"""Planning: shapes, dtypes and layouts of a call, from layout arrays; reads no data, knows no backend.

Each module takes the *layout* of the inputs (a NumPy array on the host, or a
device array's layout array, :mod:`numba_losses._core.device`) and says
everything a backend needs before running a kernel: output and gradient
shapes, compute and result dtypes, the canonical kernel layout, the weighting.
:func:`numba_losses._plan.shapes.output_shapes` answers the same question for
bare shapes and dtypes.
"""
