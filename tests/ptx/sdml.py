"""PTX jobs for the SDMLLoss CUDA kernels (run by ``tests/ptx/catalogue.py``).

The three kernels of ``numba_losses.kernels.cuda.sdml`` (distance tiles, row
softmax / KL with the warp-shuffle row sums and the distances from a matrix
product, gradient tiles) for sm_80 and
sm_90 on the float32 and float64 paths, the float16-input path (computed in
float32) on sm_90, and the shared-memory variant of the rows kernel on
float32. The rows kernel is compiled with the gradient branch (a runtime
flag, so this is all of its code). Argument types are those the dispatcher
passes: strided views of the caller's arrays in their own dtype, the head
gradient as a strided float64 view, contiguous outputs and scratch.
"""

from __future__ import annotations

CCS = [(8, 0), (9, 0)]
# (compute dtype, input/output dtype)
PATHS = [("float32", "float32"), ("float64", "float64"), ("float32", "float16")]


def jobs():
    out = []
    for kernel in ("dist", "rows", "grad"):
        for cc in CCS:
            for path in PATHS[:2]:
                out.append((kernel, cc, path, "shuffle"))
        out.append((kernel, (9, 0), PATHS[2], "shuffle"))
    out.append(("rows", (8, 0), PATHS[0], "shared"))
    return out


def build(job):
    from numba import types

    from numba_losses.kernels.cuda.sdml import build_sdml_kernels

    kernel, cc, (cdt, iodt), variant = job
    c = getattr(types, cdt)
    io = getattr(types, iodt)
    flag = types.boolean
    dist_kernel, rows_kernel, grad_kernel = build_sdml_kernels(cdt, variant == "shuffle")
    strided = io[:, :]
    scratch = c[:, ::1]
    checks = {"bar.sync": "bar.sync"}
    if kernel == "dist":
        fn = dist_kernel.py_func
        sig = (strided, strided, c, scratch)
        checks["shared"] = ".shared"
    elif kernel == "rows":
        fn = rows_kernel.py_func
        vec = c[::1]  # the expansion's squared norms and centred inputs (contiguous, compute dtype)
        sig = (scratch, flag, vec, vec, scratch, scratch, c, c, c, c, c, types.float64[:], flag, io[::1])
        if variant == "shuffle":
            checks["shuffle"] = "shfl.sync"
    else:
        fn = grad_kernel.py_func
        sig = (scratch, strided, strided, flag, c, io[:, ::1])
        checks["shared"] = ".shared"
    return fn, sig, cc, checks
