"""PTX jobs for the softmax kernels (read by ``tests/ptx/catalogue.py``).

Every fused cross-entropy variant (sparse float / integer labels, dense labels,
each with and without ``from_logits``) with its gradient, plus the log-softmax
forward and backward kernels: on sm_90 for the float32, float64 and
float16-input paths, on sm_80 for float32; the forward-only variant once; and
the class-weighted target kernel (sparse float / integer labels, dense labels),
the per-position class weight kernel and the two kernels of sparse
``normalization='valid'`` (divisor, per-position weights; float / integer labels)
on sm_90 for every path.
"""

from __future__ import annotations

# (sparse, from_logits, int_label)
CE_VARIANTS = [
    (True, False, False),
    (True, False, True),
    (True, True, False),
    (False, False, False),
    (False, True, False),
]
# (sparse, int_label) of the class-weighted target kernel
TARGET_VARIANTS = [(True, False), (True, True), (False, False)]
PATHS = {"f32": ("float32", "float32"), "f64": ("float64", "float64"), "f16": ("float32", "float16")}


def _targets():
    return [((9, 0), p) for p in PATHS] + [((8, 0), "f32")]


def jobs():
    out = []
    for cc, path in _targets():
        out += [("ce", *variant, True, cc, path) for variant in CE_VARIANTS]
        out += [("log_softmax", cc, path), ("log_softmax_backward", cc, path)]
    out.append(("ce", True, False, False, False, (9, 0), "f32"))
    out += [("target", sparse, int_label, (9, 0), path) for sparse, int_label in TARGET_VARIANTS for path in PATHS]
    for kind in ("class_weight", "valid_divisor", "valid_weight"):
        out += [(kind, int_label, (9, 0), path) for int_label in (False, True) for path in PATHS]
    return out


def build(job):
    from numba import types

    from numba_losses.kernels.cuda.softmax import (
        build_class_target_kernel,
        build_class_weight_kernel,
        build_softmax_ce_kernel,
        build_valid_weight_kernels,
        log_softmax_backward_kernel,
        log_softmax_kernel,
    )

    kind = job[0]
    cc, path = job[-2], job[-1]
    cdt, iodt = PATHS[path]
    c, io = getattr(types, cdt), getattr(types, iodt)
    i64 = types.int64
    if kind == "ce":
        _, sparse, from_logits, int_label, want_grad, _, _ = job
        fn = build_softmax_ce_kernel(sparse, from_logits, int_label, want_grad).py_func
        label = (types.int64 if int_label else io)[:, :] if sparse else c[:, ::1]
        sig = (io[:, :, :], label, io[:, :, :], c[::1], types.float64, types.boolean, types.float64, c, c[::1],
               io[:, :, ::1], i64)  # fmt: skip
        # float32 exponentials go through libdevice's expf (built on ex2.approx)
        checks = {"exp": "ex2.approx"} if cdt == "float32" and not from_logits else {}
        return fn, sig, cc, checks
    if kind == "target":
        _, sparse, int_label, _, _ = job
        fn = build_class_target_kernel(sparse, int_label).py_func
        label = (types.int64 if int_label else io)[:, :] if sparse else c[:, ::1]
        y = c[:, :, ::1] if sparse else io[:, :, :]
        f64 = types.float64
        return fn, (label, y, f64[::1], f64, f64, types.boolean, f64, c, c[:, :, ::1]), cc, {}
    if kind == "class_weight":
        _, int_label, _, _ = job
        fn = build_class_weight_kernel(int_label).py_func
        label = (types.int64 if int_label else io)[:, :]
        return fn, (label, types.float64[::1], c, c[:, ::1]), cc, {}
    if kind in ("valid_divisor", "valid_weight"):
        _, int_label, _, _ = job
        divisor, weights = build_valid_weight_kernels(int_label)
        label = (types.int64 if int_label else io)[:, :]
        f64, b = types.float64, types.boolean
        if kind == "valid_divisor":
            return divisor.py_func, (label, f64[::1], b, b, f64, f64[::1]), cc, {}
        return weights.py_func, (label, f64[::1], b, b, f64, f64[::1], c, c[:, ::1], c[:, ::1]), cc, {}
    fn = (log_softmax_kernel if kind == "log_softmax" else log_softmax_backward_kernel).py_func
    first = io[:, :, :] if kind == "log_softmax" else c[:, :, ::1]
    return fn, (first, c, c[:, :, ::1], i64), cc, {}
