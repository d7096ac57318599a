"""PTX jobs for the TripletLoss / CosineEmbeddingLoss CUDA kernels (run by ``tests/ptx/catalogue.py``).

Every kernel of ``numba_losses.kernels.cuda.pairwise`` for sm_80 and sm_90:
the row kernels with the warp-shuffle group sum on the float32, float64 and
float16-input paths (fwd+grad variant: the gradient code is a runtime branch,
so this is all of the kernel's code) and their shared-memory variant on
float32 (the sample-weight kernels are the catalogue's product-weighting jobs). Argument
types are those the dispatcher passes: strided views of the caller's arrays
in their own dtype, the head gradient as a zero-stride float64 constant,
contiguous outputs in the result dtype.
"""

from __future__ import annotations

CCS = [(8, 0), (9, 0)]
# (compute dtype, input/output dtype)
PATHS = [("float32", "float32"), ("float64", "float64"), ("float32", "float16")]


def jobs():
    out = []
    for kernel in ("triplet", "cosine"):
        for cc in CCS:
            for path in PATHS:
                out.append((kernel, cc, path, "shuffle"))
        out.append((kernel, (8, 0), PATHS[0], "shared"))
    return out


def build(job):
    from numba import types

    from numba_losses.kernels.cuda.pairwise import build_cosine_kernel, build_triplet_kernel

    kernel, cc, (cdt, iodt), variant = job
    c = getattr(types, cdt)
    io = getattr(types, iodt)
    f64 = types.float64
    flag = types.boolean
    group = types.int64
    shuffle = variant == "shuffle"
    checks = {}
    if kernel == "triplet":
        fn = build_triplet_kernel(shuffle).py_func
        s3, o3 = io[:, :, :], io[:, :, ::1]
        sig = (s3, s3, s3, c, c, f64[:], flag, io[::1], o3, o3, o3, group)
        checks["shuffle" if shuffle else "bar.sync"] = "shfl.sync" if shuffle else "bar.sync"
        checks["rounded squares"] = f"mul.rn.f{32 if cdt == 'float32' else 64}"  # never fused into an fma
    else:
        fn = build_cosine_kernel(shuffle).py_func
        s2, o2 = io[:, :], io[:, ::1]
        sig = (s2, s2, io[:], c, f64[:], io[:], c, flag, io[::1], o2, o2, group)
        checks["shuffle" if shuffle else "bar.sync"] = "shfl.sync" if shuffle else "bar.sync"
        checks["sqrt"] = "sqrt.rn.f64"
    return fn, sig, cc, checks
