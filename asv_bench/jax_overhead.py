"""What numba_losses.jax.function and DLPack inputs cost over a direct NumPy call (best of 7 repeats).

Run from the repository root: ``NUMBA_NUM_THREADS=2 python asv_bench/jax_overhead.py``.
Prints microseconds per call for L2Loss at (64, 10) (fixed costs, with two
floors: a jitted ``jax.pure_callback`` and a jitted FFI host call, each around a
function doing nothing) and for
``jax.jit(jax.value_and_grad(...))`` of SoftmaxCELoss at (256, 1000) against a
``jax.numpy`` formulation under ``jit``. On a shared machine the figures are noisy.
"""

from __future__ import annotations

import timeit

import jax
import jax.numpy as jnp
import numpy as np

import numba_losses as nl
import numba_losses.jax as nlj
from numba_losses import _jax_ffi


def best_us(fn, number: int, repeat: int = 7) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10)).astype(np.float32)
    y = rng.standard_normal((64, 10)).astype(np.float32)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    l2 = nl.L2Loss()
    f = nlj.function(l2)
    fj = jax.jit(f)
    vg = jax.jit(jax.value_and_grad(lambda a, b: f(a, b).sum()))
    jl2 = jax.jit(lambda a, b: (0.5 * (a - b) ** 2).mean(1))
    zeros = np.zeros(64, np.float32)  # the floor: JAX's callback machinery around a callback doing nothing
    sds = jax.ShapeDtypeStruct((64,), jnp.float32)
    floor = jax.jit(lambda a, b: jax.pure_callback(lambda a, b: zeros, sds, a, b, vmap_method="expand_dims"))
    rows = [
        ("L2 (64,10) loss(numpy)", lambda: l2(x, y), 2000),
        ("L2 (64,10) loss.forward_backward(numpy)", lambda: l2.forward_backward(x, y), 2000),
        ("L2 (64,10) loss(jax arrays) via DLPack", lambda: l2(xj, yj), 2000),
        ("L2 (64,10) jax.function, eager", lambda: f(xj, yj).block_until_ready(), 500),
        ("L2 (64,10) jit(jax.function)", lambda: fj(xj, yj).block_until_ready(), 2000),
        ("L2 (64,10) jit(value_and_grad(jax.function))", lambda: jax.block_until_ready(vg(xj, yj)), 2000),
        ("L2 (64,10) jit(jax.numpy formulation)", lambda: jl2(xj, yj).block_until_ready(), 2000),
        ("floor: jit(bare pure_callback returning (64,))", lambda: floor(xj, yj).block_until_ready(), 2000),
    ]
    if _jax_ffi.available():  # the host call jax.function makes on the CPU, around a function doing nothing
        bare = jax.jit(lambda a, b: _jax_ffi.call(lambda i, o: None, (sds,), a, b, vmap_method="expand_dims")[0])
        rows.append(("floor: jit(bare FFI host call, no work)", lambda: bare(xj, yj).block_until_ready(), 2000))
    logits = jnp.asarray(rng.standard_normal((256, 1000)).astype(np.float32))
    classes = jnp.asarray(rng.integers(0, 1000, 256).astype(np.int32))
    ce = nlj.function(nl.SoftmaxCELoss())
    ours = jax.jit(jax.value_and_grad(lambda a, c: ce(a, c).mean()))

    def reference(a, c):
        return -jnp.take_along_axis(jax.nn.log_softmax(a, -1), c[:, None], -1)[:, 0].mean()

    theirs = jax.jit(jax.value_and_grad(reference))
    xn, cn = np.asarray(logits), np.asarray(classes)
    xj2, cj2 = logits, classes
    sce = nl.SoftmaxCELoss()
    rows += [
        ("SoftmaxCE (256,1000) jit(value_and_grad(jax.function))", lambda: jax.block_until_ready(ours(xj2, cj2)), 100),
        ("SoftmaxCE (256,1000) jit(value_and_grad(jax.numpy))", lambda: jax.block_until_ready(theirs(xj2, cj2)), 100),
        ("SoftmaxCE (256,1000) forward_backward(numpy)", lambda: sce.forward_backward(xn, cn), 100),
    ]
    for name, fn, number in rows:
        print(f"{name:58s} {best_us(fn, number):9.1f} us")


if __name__ == "__main__":
    main()
