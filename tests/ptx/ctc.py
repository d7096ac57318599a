"""PTX jobs for the CTC kernels (read by ``tests/ptx/catalogue.py``).

Every kernel of :mod:`numba_losses.kernels.cuda.ctc`, for sm_80 and sm_90 and
the float32, float64 and float16-input paths: the frames and gradient kernels
with strided ``(N, T, C)`` views of pred and of the gradient (a TNC array is
passed transposed), the paths kernel per compute dtype (``want_grad`` is a
run-time argument). The weighting kernels are shared with CosineEmbeddingLoss
and compiled by the catalogue itself (``weigh_product``, ``head_product``).
"""

from __future__ import annotations

PATHS = {"f32": ("float32", "float32"), "f64": ("float64", "float64"), "f16": ("float32", "float16")}
KERNELS = ("frames", "paths", "grad")
CCS = ((8, 0), (9, 0))


def jobs():
    out = []
    for cc in CCS:
        for path in PATHS:
            for kind in KERNELS:
                if kind == "paths" and path == "f16":  # computed in float32: the f32 job
                    continue
                out.append((kind, cc, path))
    return out


def build(job):
    from numba import types

    from numba_losses.kernels.cuda import ctc

    kind, cc, path = job
    cdt, iodt = PATHS[path]
    c, io = getattr(types, cdt), getattr(types, iodt)
    i64, boolean = types.int64, types.boolean
    v1, v2 = i64[::1], i64[:, ::1]  # views of the uploaded plan
    s3 = io[:, :, :]  # strided (N, T, C) views of pred and of the gradient
    checks = {}
    if kind == "frames":
        fn = ctc.ctc_frames_kernel
        sig = (s3, v1, v2, v1, i64, v1, c, c[:, ::1], c[:, ::1], c[::1], i64)
        if cdt == "float32":  # float32 exponentials go through libdevice's expf (built on ex2.approx)
            checks = {"exp": "ex2.approx"}
    elif kind == "paths":
        fn = ctc.ctc_paths_kernel
        sig = (c[::1], v1, v1, v2, v1, i64, v1, boolean, boolean, c, c[::1], c[::1], c[::1], c[::1])
        checks = {"barrier": "bar.sync"}
    else:
        fn = ctc.ctc_grad_kernel
        sig = (s3, s3, v1, v1, c[:, ::1], c[:, ::1], c[::1], v1, v2, v2, v2, v1, i64, c[::1], c[::1], c, i64)
        checks = {"barrier": "bar.sync"}
    return fn.py_func, sig, cc, checks
