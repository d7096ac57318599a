"""The PyTorch adapter on CUDA tensors (runs only where PyTorch sees a GPU; skipped elsewhere).

Every case of ``test_torch`` runs again with its tensors on the GPU: values and
gradients against the same module on the CPU tensors, ``gradcheck`` in float64
on the device, half precision, ``torch.compile``, the functional layer against
``torch.nn.functional`` on CUDA, and a call on a non-default stream whose
input is written by work still queued on that stream (a kernel launched on any
other stream reads the poisoned buffer and the test fails).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SIMULATED

torch = pytest.importorskip("torch")
if SIMULATED or not torch.cuda.is_available():
    pytest.skip("needs PyTorch with CUDA and a GPU", allow_module_level=True)
F = torch.nn.functional

import numba_losses.torch as nlt  # noqa: E402
from numba_losses.torch import functional as nlf  # noqa: E402
from tests.test_torch import (  # noqa: E402
    CASES,
    CE_CASES,
    CTC_CASES,
    GRADCHECK,
    _compiled_matches,
    _ctc_case,
    _same_values_and_grads,
    gradcheck_case,
    rnd,
)

GPU = torch.device("cuda", 0)
#: float64 CUDA and CPU kernels round differently (fused multiply-adds, reduction order).
CLOSE = {"rtol": 1e-11, "atol": 1e-13}


def on_gpu(inputs):
    """Copies of ``inputs`` on the GPU, leaves that require grad where the originals do."""
    moved = []
    for a in inputs:
        if isinstance(a, torch.Tensor):
            a = a.detach().to(GPU).requires_grad_(a.requires_grad)
        moved.append(a)
    return moved


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_the_cpu_tensors(name):
    module, inputs, diff = CASES[name]
    dev = on_gpu(inputs)
    out, ref = module(*dev), module(*inputs)
    assert out.device == GPU and out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out.cpu(), ref.detach(), **CLOSE)
    g = torch.rand(ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(5)) + 0.5
    grads = torch.autograd.grad(out, [dev[i] for i in diff], g.to(GPU))
    ref_grads = torch.autograd.grad(ref, [inputs[i] for i in diff], g)
    for mine, theirs in zip(grads, ref_grads, strict=True):
        assert mine.device == GPU
        torch.testing.assert_close(mine.cpu(), theirs, **CLOSE)


@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck_float64_on_the_gpu(name):
    module, inputs, diff = CASES[name]
    assert gradcheck_case(module, on_gpu(inputs), diff)


@pytest.mark.parametrize("grad", [False, True])
def test_kernels_run_on_the_current_stream(grad):
    """The input is written on stream ``s`` after a 20 ms spin of that stream; the loss, called
    inside ``torch.cuda.stream(s)`` without any synchronisation, must read the written values."""
    module = nlt.SoftmaxCELoss()
    src = (3 * rnd(4096, 1000, dtype=torch.float32)).to(GPU)
    y = torch.randint(0, 1000, (4096,), device=GPU)
    x_ref = src.clone().requires_grad_(grad)
    ref = module(x_ref, y)
    ref_grad = torch.autograd.grad(ref.sum(), x_ref)[0] if grad else None
    x = torch.full_like(src, float("nan"))
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(40_000_000)  # about 20 ms at 2 GHz: the copy below lands late
        x.copy_(src)
        leaf = x.requires_grad_(grad)
        out = module(leaf, y)
        g = torch.autograd.grad(out.sum(), leaf)[0] if grad else None
        done = torch.cuda.Event()
        done.record(s)
    done.synchronize()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    if grad:
        torch.testing.assert_close(g, ref_grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_the_gpu(dtype):
    x = rnd(64, 10, dtype=torch.float32).to(dtype).to(GPU).requires_grad_()
    y = torch.randint(0, 10, (64,), device=GPU)
    module = nlt.SoftmaxCELoss()
    out = module(x, y)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert out.dtype == dtype and g.dtype == dtype and out.device == GPU
    ref = F.cross_entropy(x.detach().float(), y, reduction="none")
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_torch_compile_fullgraph_on_the_gpu():
    ce, l2 = nlt.SoftmaxCELoss(), nlt.L2Loss()

    def step(x, y, p, t):
        return (ce(x, y) * torch.arange(1.0, 9.0, device=GPU)).sum() + l2(p, t).mean()

    x, p = (rnd(8, n, dtype=torch.float32).to(GPU).requires_grad_() for n in (5, 3))
    y, t = torch.randint(0, 5, (8,), device=GPU), rnd(8, 3, dtype=torch.float32).to(GPU)
    _compiled_matches(step, (x, y, p, t), (0, 2), "inductor")


#: the GPU's float32 and float64 reductions round differently from the CPU's and from PyTorch CUDA's
GPU_TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}


def _both(ours, theirs, inputs, dtype):
    _same_values_and_grads(ours, theirs, inputs, dtype, GPU_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["2d", "4d", "weights", "smoothing and weights 4d", "probabilities"])
def test_cross_entropy_matches_torch_on_the_gpu(case, dtype):
    c = CE_CASES[case]
    shape = c["shape"]
    gen = torch.Generator().manual_seed(2)
    x = (3 * rnd(*shape, dtype=dtype)).to(GPU).requires_grad_()
    if c.get("probs"):
        target = torch.rand(shape, generator=gen, dtype=dtype).softmax(1)
    else:
        target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
        if c.get("ignore"):
            target.view(-1)[::3] = -100
    weight = torch.rand(shape[1], generator=gen, dtype=dtype) + 0.1 if c.get("weight") else None
    kw = dict(weight=None if weight is None else weight.to(GPU), label_smoothing=c.get("smoothing", 0.0))
    _both(
        lambda x, t: nlf.cross_entropy(x, t, **kw), lambda x, t: F.cross_entropy(x, t, **kw), (x, target.to(GPU)), dtype
    )


@pytest.mark.parametrize("case", CTC_CASES)
def test_ctc_loss_matches_torch_on_the_gpu(case):
    x, targets, input_lengths, target_lengths, blank = _ctc_case(case, torch.float64)
    x = x.detach().to(GPU).requires_grad_()
    targets = targets.to(GPU)
    kw = dict(blank=blank, reduction="none", zero_infinity=True)
    _both(
        lambda x: nlf.ctc_loss(x, targets, input_lengths, target_lengths, **kw),
        lambda x: F.ctc_loss(x, targets, input_lengths, target_lengths, **kw),
        (x,),
        torch.float64,
    )


def test_a_large_batch_matches_torch_in_float32():
    x = (4 * rnd(512, 1000, dtype=torch.float32)).to(GPU).requires_grad_()
    y = torch.randint(0, 1000, (512,), device=GPU)
    _both(lambda x, y: nlf.cross_entropy(x, y), lambda x, y: F.cross_entropy(x, y), (x, y), torch.float32)
    assert np.isfinite(float(nlf.cross_entropy(x.detach(), y)))
