"""The PyTorch adapter (numba_losses.torch) against finite differences, the NumPy API and torch itself.

Gradients are checked with ``torch.autograd.gradcheck`` (central differences of
the forward values) in float64; values and gradients against the library's
NumPy call; the functional layer against ``torch.nn.functional``.
"""

from __future__ import annotations

import copy
import gc
import inspect
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import numba_losses as nl  # noqa: E402
import numba_losses.torch as nlt  # noqa: E402
from numba_losses.torch import functional as nlf  # noqa: E402
from numba_losses.torch._bridge import to_array  # noqa: E402
from tests.user_losses import huber_grad, huber_value  # noqa: E402

D = torch.float64


_GEN = torch.Generator().manual_seed(2026)


def rnd(*shape, dtype=D, grad=False):
    """Standard normal values (each call draws new ones, in a fixed order)."""
    return torch.randn(*shape, generator=_GEN, dtype=dtype).requires_grad_(grad)


def ctc_inputs(n=2, t=6, c=4, dtype=D):
    x = rnd(n, t, c, dtype=dtype, grad=True)
    label = torch.tensor([[0, 1, 2], [2, 2, -1]][:n], dtype=torch.float64)
    return x, label


# (module, inputs, indices of the differentiable inputs), per family, float64, small shapes
def cases():
    MyHuber = nl.elementwise_loss(huber_value, huber_grad, params=("rho",))
    x1, x2 = rnd(3, 4, grad=True), rnd(3, 4, grad=True)
    return {
        "L2": (nlt.L2Loss(), (rnd(3, 4, grad=True), rnd(3, 4)), (0,)),
        "L2 sample_weight grows the output": (
            nlt.L2Loss(),
            (rnd(1, 4, grad=True), rnd(1, 4), rnd(3, 1).abs()),
            (0,),
        ),
        "L2 batch_axis=1": (nlt.L2Loss(batch_axis=1), (rnd(3, 4, grad=True), rnd(3, 4)), (0,)),
        "SigmoidBCE pos_weight": (
            nlt.SigmoidBCELoss(),
            (rnd(3, 4, grad=True), (rnd(3, 4) > 0).double(), None, rnd(1, 4).abs()),
            (0,),
        ),
        "Huber": (nlt.HuberLoss(rho=0.5), (rnd(3, 4, grad=True), rnd(3, 4)), (0,)),
        "PoissonNLL (one output)": (
            nlt.PoissonNLLLoss(),
            (rnd(3, 4, grad=True), rnd(3, 4).abs(), rnd(3, 1).abs(), 1e-6),
            (0,),
        ),
        "KLDiv logits": (nlt.KLDivLoss(), (rnd(3, 4, grad=True), rnd(3, 4).softmax(-1)), (0,)),
        "user elementwise_loss": (nlt.Module(MyHuber(rho=0.7)), (rnd(3, 4, grad=True), rnd(3, 4)), (0,)),
        "SoftmaxCE axis=1": (
            nlt.SoftmaxCELoss(axis=1),
            (rnd(2, 5, 3, grad=True), torch.randint(0, 5, (2, 3), generator=torch.Generator().manual_seed(0))),
            (0,),
        ),
        "SoftmaxCE dense, smoothing": (
            nlt.SoftmaxCELoss(sparse_label=False, label_smoothing=0.1),
            (rnd(3, 5, grad=True), rnd(3, 5).softmax(-1)),
            (0,),
        ),
        "KLDiv softmax": (nlt.KLDivLoss(from_logits=False), (rnd(3, 5, grad=True), rnd(3, 5).softmax(-1)), (0,)),
        "CTC": (nlt.CTCLoss(), ctc_inputs(), (0,)),
        "CTC TNC lengths": (
            nlt.CTCLoss(layout="TNC"),
            (rnd(6, 2, 4, grad=True), torch.tensor([[0, 1], [2, 2]]), torch.tensor([6, 5]), torch.tensor([2, 1])),
            (0,),
        ),
        "Triplet": (
            nlt.TripletLoss(margin=2.0),
            (rnd(3, 4, grad=True), rnd(3, 4, grad=True), rnd(3, 4, grad=True)),
            (0, 1, 2),
        ),
        "CosineEmbedding": (nlt.CosineEmbeddingLoss(margin=0.1), (x1, x2, torch.tensor([1.0, -1.0, 1.0])), (0, 1)),
        "SDML": (nlt.SDMLLoss(), (rnd(4, 3, grad=True), rnd(4, 3, grad=True)), (0, 1)),
        "MakeLoss(L2)": (nlt.Module(nl.MakeLoss(nl.L2Loss())), (rnd(3, 4, grad=True), rnd(3, 4)), (0,)),
    }


CASES = cases()
GRADCHECK = [k for k in CASES if not k.startswith("MakeLoss")]  # MakeLoss ignores grad_output, as in MXNet


def test_import_numba_losses_does_not_import_torch():
    code = "import sys, numba_losses; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def gradcheck_case(module, inputs, diff):
    """``torch.autograd.gradcheck`` of ``module`` with respect to the inputs at positions ``diff``."""

    def f(*xs):
        args = list(inputs)
        for i, x in zip(diff, xs, strict=True):
            args[i] = x
        return module(*args)

    return torch.autograd.gradcheck(f, tuple(inputs[i] for i in diff), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", GRADCHECK)
def test_gradcheck_float64(name):
    module, inputs, diff = CASES[name]
    assert gradcheck_case(module, inputs, diff)


def numpy_args(inputs):
    return [to_array(a) if isinstance(a, torch.Tensor) else a for a in inputs]


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_the_numpy_call(name):
    module, inputs, diff = CASES[name]
    out = module(*inputs)
    ref = module.loss(*numpy_args(inputs))
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    g = torch.rand(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(5)) + 0.5
    grads = torch.autograd.grad(out, [inputs[i] for i in diff], g)
    _, ref_grads = module.loss.forward_backward(*numpy_args(inputs), out_grad=g.numpy())
    for mine, theirs in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs, rtol=1e-13, atol=1e-15)


def test_makeloss_ignores_grad_output_as_mxnet():
    module = nlt.Module(nl.MakeLoss(nl.L2Loss(), grad_scale=2.0, normalization="batch"))
    x, y = rnd(3, 4, grad=True), rnd(3, 4)
    (gx,) = torch.autograd.grad(module(x, y), x, torch.full((3,), 7.0, dtype=D))
    _, (ref,) = nl.MakeLoss(nl.L2Loss(), grad_scale=2.0, normalization="batch").forward_backward(
        x.detach().numpy(), y.numpy()
    )
    np.testing.assert_array_equal(gx.numpy(), ref)


@pytest.mark.parametrize("which", [(0,), (1,), (2,), (0, 2)])
def test_triplet_gradients_for_the_inputs_that_require_grad_only(which):
    a, p, n = (rnd(3, 4).requires_grad_(i in which) for i in range(3))
    out = nlt.TripletLoss()(a, p, n)
    assert len(out.grad_fn.grads) == len(which)  # the node keeps one gradient per input that needs it
    grads = torch.autograd.grad(out.sum(), [(a, p, n)[i] for i in which])
    _, ref = nl.TripletLoss().forward_backward(a.detach().numpy(), p.detach().numpy(), n.detach().numpy())
    for g, i in zip(grads, which, strict=True):
        np.testing.assert_allclose(g.numpy(), ref[i], rtol=1e-14)


@pytest.mark.parametrize("which", [(0,), (1,)])
def test_cosine_and_sdml_gradients_for_each_input(which):
    for module, loss, extra in (
        (nlt.CosineEmbeddingLoss(), nl.CosineEmbeddingLoss(), (torch.tensor([1, -1, 1]),)),
        (nlt.SDMLLoss(), nl.SDMLLoss(), ()),
    ):
        a, b = (rnd(3, 4).requires_grad_(i in which) for i in range(2))
        out = module(a, b, *extra)
        (g,) = torch.autograd.grad(out.sum(), (a, b)[which[0]])
        _, ref = loss.forward_backward(a.detach().numpy(), b.detach().numpy(), *[e.numpy() for e in extra])
        np.testing.assert_allclose(g.numpy(), ref[which[0]], rtol=1e-13)


class _ForwardOnlyL2(nl.L2Loss):
    """An L2Loss whose gradient entry points fail: the adapter must not call them without requires_grad."""

    def forward_backward(self, *args, **kwargs):
        raise AssertionError("forward_backward called")

    def backward(self, *args, **kwargs):
        raise AssertionError("backward called")


def test_no_input_requiring_grad_runs_the_forward_only():
    module = nlt.Module(_ForwardOnlyL2())
    x, y = rnd(3, 4), rnd(3, 4)
    assert not module(x, y).requires_grad
    with torch.no_grad():
        assert not module(x.requires_grad_(), y).requires_grad


def test_an_input_that_is_not_differentiated_must_not_require_grad():
    x, y = rnd(3, 4, grad=True), rnd(3, 4, grad=True)
    with pytest.raises(NotImplementedError, match="label requires grad, but L2Loss is not differentiated"):
        nlt.L2Loss()(x, y)
    with pytest.raises(NotImplementedError, match="sample_weight requires grad"):
        nlt.L2Loss()(x, y.detach(), rnd(3, 1, grad=True))
    with torch.no_grad():
        nlt.L2Loss()(x, y)  # nothing is differentiated: fine


class _Spy(nl.SoftmaxCELoss):
    """Records the addresses of the arrays the adapter hands to the library."""

    seen: list = []

    def __call__(self, *args, **kwargs):
        _Spy.seen.append([a.ctypes.data for a in args if isinstance(a, np.ndarray)])
        return super().__call__(*args, **kwargs)

    def forward_backward(self, *args, **kwargs):
        _Spy.seen.append([a.ctypes.data for a in args if isinstance(a, np.ndarray)])
        return super().forward_backward(*args, **kwargs)


@pytest.mark.parametrize("grad", [False, True])
def test_cpu_inputs_are_read_in_place(grad):
    module = nlt.Module(_Spy(axis=0, batch_axis=1))
    base = rnd(6, 10)
    x = base[:, ::2].requires_grad_(grad)  # a strided view: classes on axis 0, samples on axis 1
    y = torch.randint(0, 6, (5,))
    _Spy.seen.clear()
    out = module(x, y)
    assert _Spy.seen == [[x.data_ptr(), y.data_ptr()]]
    np.testing.assert_array_equal(out.detach().numpy(), nl.SoftmaxCELoss(axis=0, batch_axis=1)(x.detach().numpy(), y))
    arr = to_array(x)
    assert arr.ctypes.data == x.data_ptr() and arr.strides == tuple(s * 8 for s in x.stride())


@pytest.mark.parametrize("name", list(CASES))
def test_inputs_are_never_modified(name):
    module, inputs, diff = CASES[name]
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in inputs]
    out = module(*inputs)
    torch.autograd.grad(out.sum(), [inputs[i] for i in diff])
    for a, b in zip(inputs, before, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss", ["SoftmaxCE", "L2"])
def test_half_precision_in_and_out(dtype, loss):
    x32 = rnd(4, 6, dtype=torch.float32)
    x = x32.to(dtype).requires_grad_()
    if loss == "SoftmaxCE":
        module, y = nlt.SoftmaxCELoss(), torch.tensor([0, 5, 2, 3])
    else:
        module, y = nlt.L2Loss(), rnd(4, 6, dtype=torch.float32).to(dtype)
    out = module(x, y)
    assert out.dtype == dtype
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.dtype == dtype
    ref_out, (ref_g,) = module.loss.forward_backward(x.detach().float().numpy(), y.float().numpy())
    np.testing.assert_array_equal(out.detach().float().numpy(), torch.from_numpy(ref_out).to(dtype).float().numpy())
    np.testing.assert_array_equal(g.float().numpy(), torch.from_numpy(ref_g).to(dtype).float().numpy())


def test_keyword_inputs_and_errors():
    x, y = rnd(3, 4, grad=True), rnd(3, 4)
    module = nlt.L2Loss()
    torch.testing.assert_close(module(pred=x, label=y, sample_weight=0.5), module(x, y) * 0.5)
    with pytest.raises(TypeError, match="missing required input"):
        module(x)
    with pytest.raises(TypeError, match="unexpected input 'target'"):
        module(x, target=y)
    with pytest.raises(TypeError, match="expected a numba_losses loss"):
        nlt.Module(torch.nn.MSELoss())
    with pytest.raises(TypeError, match="unexpected keyword argument 'reduction'"):
        nlt.L2Loss(reduction="mean")
    assert isinstance(nlt.SoftmaxCELoss(axis=1).loss, nl.SoftmaxCELoss)
    assert nlt.SoftmaxCELoss is nlt.SoftmaxCrossEntropyLoss


def _compiled_matches(step, args, diff, backend):
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    out = compiled(*args)
    grads = torch.autograd.grad(out, [args[i] for i in diff])
    ref = step(*args)
    ref_grads = torch.autograd.grad(ref, [args[i] for i in diff])
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-9)


def test_torch_compile_fullgraph_softmax_ce_and_l2_inductor():
    ce, l2 = nlt.SoftmaxCELoss(), nlt.L2Loss()

    def step(x, y, p, t):
        return (ce(x, y) * torch.arange(1.0, 9.0)).sum() + l2(p, t).mean()

    x, p = rnd(8, 5, dtype=torch.float32, grad=True), rnd(8, 3, dtype=torch.float32, grad=True)
    y, t = torch.randint(0, 5, (8,)), rnd(8, 3, dtype=torch.float32)
    _compiled_matches(step, (x, y, p, t), (0, 2), "inductor")


@pytest.mark.parametrize("name", ["CTC", "Triplet", "CosineEmbedding", "SDML", "L2 sample_weight grows the output"])
def test_torch_compile_fullgraph_other_families_aot_eager(name):
    module, inputs, diff = CASES[name]

    def step(*args):
        out = module(*args)
        return (out * torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)).sum()

    _compiled_matches(step, inputs, diff, "aot_eager")


# -- functional layer against torch.nn.functional ------------------------------------------------------------------

TOL = {torch.float32: {"rtol": 1e-6, "atol": 1e-6}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}


def _same_values_and_grads(ours, theirs, inputs, dtype, tol=None):
    """Values and gradients (for a random head gradient on the result's device) of two functions agree."""
    tol = tol or TOL[dtype]
    a, b = ours(*inputs), theirs(*inputs)
    torch.testing.assert_close(a, b, equal_nan=True, **tol)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    g = torch.rand(a.shape, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(a.device) + 0.5
    ga = torch.autograd.grad(a, leaves, g)
    gb = torch.autograd.grad(b, leaves, g)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, equal_nan=True, **tol)


CE_CASES = {
    "2d": dict(shape=(6, 5)),
    "unbatched": dict(shape=(5,)),
    "4d": dict(shape=(2, 5, 3, 2)),
    "ignored": dict(shape=(6, 5), ignore=True),
    "ignore_index in range": dict(shape=(6, 5), ignore_index=2),
    "weights": dict(shape=(6, 5), weight=True, ignore=True),
    "weights 4d": dict(shape=(2, 5, 3, 2), weight=True, ignore=True),
    "smoothing": dict(shape=(6, 5), smoothing=0.2, ignore=True),
    "smoothing and weights": dict(shape=(6, 5), smoothing=0.2, weight=True, ignore=True),
    "smoothing and weights 4d": dict(shape=(2, 5, 3, 2), smoothing=0.3, weight=True, ignore=True),
    "all ignored": dict(shape=(3, 5), all_ignored=True),
    "probabilities": dict(shape=(6, 5), probs=True),
    "probabilities 4d weights smoothing": dict(shape=(2, 5, 3, 2), probs=True, weight=True, smoothing=0.1),
    "empty batch": dict(shape=(0, 5)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_matches_torch(case, reduction, dtype):
    c = CE_CASES[case]
    shape = c["shape"]
    x = (3 * rnd(*shape, dtype=dtype)).requires_grad_()
    gen = torch.Generator().manual_seed(2)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    ignore_index = c.get("ignore_index", -100)
    if c.get("probs"):
        target = torch.rand(shape, generator=gen, dtype=dtype).softmax(1)
    else:
        target = torch.randint(0, n_classes, shape[:1] + shape[2:] if len(shape) > 1 else (), generator=gen)
        if c.get("ignore") and target.numel() > 1:
            target.view(-1)[::3] = ignore_index
        if c.get("all_ignored"):
            target[:] = ignore_index
    weight = torch.rand(n_classes, generator=gen, dtype=dtype) + 0.1 if c.get("weight") else None
    kw = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=c.get("smoothing", 0.0))
    _same_values_and_grads(
        lambda x, t: nlf.cross_entropy(x, t, **kw), lambda x, t: F.cross_entropy(x, t, **kw), (x, target), dtype
    )


def test_cross_entropy_errors():
    x = rnd(3, 4)
    with pytest.raises(IndexError, match="class index 7"):
        nlf.cross_entropy(x, torch.tensor([0, 7, 1]))
    with pytest.raises(IndexError, match="class index -1"):  # below 0 and not ignore_index
        nlf.cross_entropy(x, torch.tensor([0, -1, 1]))
    with pytest.raises(IndexError, match="class index 4"):  # C itself, next to ignored targets
        nlf.cross_entropy(x, torch.tensor([-100, 4, 1]))
    with pytest.raises(IndexError, match="class index -7"):  # a negative ignore_index ignores only itself
        nlf.cross_entropy(x, torch.tensor([-3, -7, 1]), ignore_index=-3)
    ignored = torch.tensor([-100, 3, -100])
    np.testing.assert_allclose(nlf.cross_entropy(x, ignored).item(), F.cross_entropy(x, ignored).item(), rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        nlf.cross_entropy(x, torch.tensor([0, 1, 1]), reduction="avg")
    with pytest.raises(NotImplementedError, match="weight"):
        nlf.cross_entropy(x, torch.tensor([0, 1, 1]), weight=torch.ones(4, dtype=D, requires_grad=True))
    with pytest.raises(NotImplementedError, match="probability targets"):
        nlf.cross_entropy(x, rnd(3, 4, grad=True))


def _ctc_case(case, dtype):
    t_frames, n, c = 12, 4, 6
    gen = torch.Generator().manual_seed(3)
    logits = 2 * torch.randn(t_frames, n, c, generator=gen, dtype=dtype)
    x = (logits if case == "unnormalised" else logits.log_softmax(-1)).detach().requires_grad_()
    blank = {"blank last": c - 1, "blank middle": 2}.get(case, 0)
    classes = [k for k in range(c) if k != blank]
    target_lengths = torch.tensor([3, 0, 5, 2])
    input_lengths = torch.tensor([12, 7, 10, 12])
    targets = torch.tensor(classes)[torch.randint(0, c - 1, (n, 5), generator=gen)]
    if case == "infeasible":
        targets[3, :2] = classes[0]  # a repeat needs a blank between: 3 frames for 2 labels
        input_lengths = torch.tensor([12, 7, 10, 2])
    if case == "concatenated":
        targets = torch.cat([targets[i, : target_lengths[i]] for i in range(n)])
    return x, targets, input_lengths, target_lengths, blank


CTC_CASES = ["random", "unnormalised", "blank last", "blank middle", "concatenated", "infeasible"]


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", CTC_CASES)
def test_ctc_loss_matches_torch_float64(case, reduction, zero_infinity):
    x, targets, input_lengths, target_lengths, blank = _ctc_case(case, torch.float64)
    kw = dict(blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    _same_values_and_grads(
        lambda x: nlf.ctc_loss(x, targets, input_lengths, target_lengths, **kw),
        lambda x: F.ctc_loss(x, targets, input_lengths, target_lengths, **kw),
        (x,),
        torch.float64,
    )


@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", CTC_CASES)
def test_ctc_loss_float32_is_as_accurate_as_torch(case, reduction, zero_infinity):
    """float32 CTC in torch and here are each ~2e-6 from the float64 result (the alpha/beta recursions round
    differently), so they are compared with that truth: ours within twice torch's own error plus 1e-6."""
    x64, targets, input_lengths, target_lengths, blank = _ctc_case(case, torch.float64)
    x32 = x64.detach().float().requires_grad_()
    kw = dict(blank=blank, reduction=reduction, zero_infinity=zero_infinity)
    results = {}
    for name, fn in (("ours", nlf.ctc_loss), ("torch", F.ctc_loss)):
        for x in (x32, x64):
            value = fn(x, targets, input_lengths, target_lengths, **kw)
            (grad,) = torch.autograd.grad(value, x, torch.ones_like(value))
            results[name, x.dtype] = value.detach().double(), grad.double()
    truth = results["torch", torch.float64]
    for k in (0, 1):
        ours, theirs = results["ours", torch.float32][k], results["torch", torch.float32][k]
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert torch.equal(ours.isnan(), theirs.isnan()) and torch.equal(ours.isinf(), theirs.isinf())
        finite = truth[k].isfinite()
        err_ours, err_torch, scale = (
            float(torch.cat([a[finite].abs(), torch.zeros(1, dtype=D)]).max())
            for a in (ours - truth[k], theirs - truth[k], truth[k])
        )
        assert err_ours <= 2 * err_torch + 1e-6 * max(1.0, scale)


def test_ctc_loss_unbatched_and_errors():
    x = rnd(5, 4).log_softmax(-1).requires_grad_()
    kw = dict(input_lengths=torch.tensor(5), target_lengths=torch.tensor(2))
    ours = nlf.ctc_loss(x, torch.tensor([1, 2]), **kw)
    torch.testing.assert_close(ours, F.ctc_loss(x, torch.tensor([1, 2]), **kw), rtol=1e-12, atol=1e-12)
    with pytest.raises(NotImplementedError, match="greater than the number of frames"):
        nlf.ctc_loss(rnd(2, 1, 4), torch.tensor([[1, 2, 3]]), [2], [3])
    with pytest.raises(ValueError, match="reduction"):
        nlf.ctc_loss(rnd(2, 1, 4), torch.tensor([[1]]), [2], [1], reduction="avg")
    for blank, targets in ((0, torch.tensor([[1, 0, 2]])), (2, torch.tensor([[1, 2, 3]])), (3, torch.tensor([1, 3]))):
        with pytest.raises(ValueError, match=f"blank class \\({blank}\\) appears inside a target"):
            nlf.ctc_loss(rnd(6, 1, 4).log_softmax(-1), targets, [6], [targets.shape[-1]], blank=blank)
    padded = nlf.ctc_loss(rnd(6, 1, 4).log_softmax(-1), torch.tensor([[1, 2, 0]]), [6], [2])  # blank past the length
    assert math.isfinite(float(padded))


def test_functional_matches_torch_on_a_larger_random_batch():
    x = (4 * rnd(64, 100, dtype=torch.float32)).requires_grad_()
    y = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(0))
    w = torch.rand(100, generator=torch.Generator().manual_seed(1)) + 0.5
    for kw in ({}, {"weight": w, "label_smoothing": 0.1}):
        _same_values_and_grads(
            lambda x, y, kw=kw: nlf.cross_entropy(x, y, **kw),
            lambda x, y, kw=kw: F.cross_entropy(x, y, **kw),
            (x, y),
            torch.float32,
        )
    assert math.isfinite(float(nlf.cross_entropy(x.detach(), y)))


def test_every_loss_class_has_a_module_class():
    for name in nl.__all__:
        cls = getattr(nl, name)
        if isinstance(cls, type) and issubclass(cls, nl.Loss) and cls not in (nl.Loss, nl.ElementwiseLoss):
            module_cls = getattr(nlt, name)
            assert issubclass(module_cls, nlt.Module) and name in nlt.__all__
            assert list(inspect.signature(module_cls.__init__).parameters) == list(
                inspect.signature(cls.__init__).parameters
            )


def test_double_backward_raises_instead_of_a_silent_zero():
    x, y = rnd(3, 4, grad=True), rnd(3, 4)
    for module in (nlt.L2Loss(), nlt.SDMLLoss()):
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(module(x, y).sum(), x, create_graph=True)


def test_benchmark_script_runs_every_case(capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "asv_bench"))
    try:
        import torch_step
    finally:
        sys.path.pop(0)
    results = torch_step.main(["--smoke"])
    assert capsys.readouterr().out.strip() == "ok"
    assert all(ms > 0 for row in results.values() for ms in row.values())
    layers = torch_step.main(["--smoke", "--layers", "1"])  # a child process on each threading layer
    assert len(layers) == 2 and any("omp" in layer for layer in layers)  # smoke shapes start no pool
    assert all(ms > 0 for steps in layers.values() for ms in steps.values())


def test_a_copied_module_outlives_the_original():
    module = nlt.HuberLoss(rho=0.5)
    twin = copy.deepcopy(module)
    assert twin.key != module.key and twin.loss is not module.loss
    key = module.key
    del module
    gc.collect()
    assert key not in nlt._ops._LOSSES  # the registry lets go with the module
    x, y = rnd(3, 4, grad=True), rnd(3, 4)
    np.testing.assert_array_equal(twin(x, y).detach().numpy(), nl.HuberLoss(rho=0.5)(x.detach().numpy(), y.numpy()))


OPCHECK = [
    "L2",
    "L2 sample_weight grows the output",
    "PoissonNLL (one output)",
    "SoftmaxCE axis=1",
    "KLDiv softmax",
    "CTC",
    "Triplet",
    "CosineEmbedding",
    "SDML",
    "MakeLoss(L2)",
]


@pytest.mark.parametrize("want_grad", [False, True])
@pytest.mark.parametrize("name", OPCHECK)
def test_registered_operators_pass_opcheck(name, want_grad):
    """The operators themselves (what torch.compile calls): schema, fake shapes, autograd registration, AOT."""
    module, inputs, _ = CASES[name]
    values = module._bind(inputs, {})
    slots = [module._tensor(n, v, values[0]) for n, v in zip(module.names, values, strict=True)]
    slots += [None] * (nlt._ops.N_SLOTS - len(slots))
    forward, backward = nlt._ops.OPS[module.family]
    torch.library.opcheck(forward, (module.key, *slots, want_grad))
    out = forward(module.key, *[None if s is None else s.detach() for s in slots], False)[0]
    n = len(module.names)
    torch.library.opcheck(backward, (module.key, [s.detach() if s is not None else None for s in slots[:n]], out))


def test_a_second_backward_through_the_graph_gives_the_same_gradients():
    x, y = rnd(3, 4, grad=True), rnd(3, 4)
    for module in (nlt.L2Loss(), nlt.SDMLLoss(), nlt.Module(nl.MakeLoss(nl.L2Loss()))):  # fused, rerun, MakeLoss
        out = module(x, y).sum()
        first = torch.autograd.grad(out, x, retain_graph=True)[0]
        torch.testing.assert_close(torch.autograd.grad(out, x)[0], first, rtol=0, atol=0)


def test_gradients_from_autograd_grad_are_the_callers_own():
    """A small fused gradient is kept by the node for a further backward: what ``autograd.grad`` returns
    is a copy, so changing it in place (clipping, scaling) leaves the next backward's result alone."""
    x, y = rnd(8, 5, grad=True), torch.randint(0, 5, (8,), generator=_GEN)
    for module in (nlt.SoftmaxCELoss(), nlt.Module(nl.MakeLoss(nl.SoftmaxCELoss()))):
        out = module(x, y).sum()
        first = torch.autograd.grad(out, x, retain_graph=True)[0]
        expected = first.clone()
        first.mul_(0.5)
        second = torch.autograd.grad(out, x)[0]
        assert second is not first
        torch.testing.assert_close(second, expected, rtol=0, atol=0)


def test_tensors_with_a_lazy_negation_are_read_by_value():
    """``z.conj().imag`` carries a negation bit over the memory of ``z.imag``: the modules and the NumPy-style
    API (DLPack) read its values, not the memory as exported."""
    z = torch.randn(4, 3, dtype=torch.complex64, generator=_GEN)
    pred, label = z.conj().imag, torch.ones(4, 3)
    assert pred.is_neg()
    want = nl.L2Loss()(pred.resolve_neg().numpy(), label.numpy())
    np.testing.assert_array_equal(nl.L2Loss()(pred, label).numpy(), want)
    np.testing.assert_array_equal(nlt.L2Loss()(pred, label).numpy(), want)
    np.testing.assert_array_equal(nl.L2Loss()(label, pred).numpy(), nl.L2Loss()(label.numpy(), -z.imag.numpy()))


def test_result_shapes_reads_torch_tensors():
    """``loss.result_shapes`` takes tensors (their torch dtypes) as it takes NumPy arrays."""
    x, y = torch.zeros(5, 7), torch.zeros(5, dtype=torch.int64)
    loss = nl.SoftmaxCELoss()
    assert loss.result_shapes(x, y) == loss.result_shapes(x.numpy(), y.numpy())
    half, flags = torch.zeros(2, 3, dtype=torch.float16), torch.zeros(2, 3, dtype=torch.bool)
    out, (grad,) = nl.L2Loss().result_shapes(half, flags)
    assert (out.shape, out.dtype, grad.shape, grad.dtype) == ((2,), np.float16, (2, 3), np.float16)
    with pytest.raises(TypeError, match=r"pred: dtype (torch\.)?bfloat16 is not supported"):
        loss.result_shapes(x.bfloat16(), y)


@pytest.mark.parametrize("n", [4, 300])  # a gradient under IN_PLACE_BYTES (a new tensor) and over (in place)
def test_fused_backward_for_sum_mean_and_per_sample_head_gradients(n):
    """The fused backward's head gradients against torch's cross_entropy, repeated through one graph."""
    assert (n * 1000 * 4 >= nlt._ops.IN_PLACE_BYTES) == (n == 300)
    x = rnd(n, 1000, dtype=torch.float32, grad=True)
    y = torch.randint(0, 1000, (n,), generator=_GEN)
    w = torch.rand(n, generator=_GEN)
    module = nlt.SoftmaxCELoss()
    heads = {
        "sum": (lambda o: o.sum(), F.cross_entropy(x, y, reduction="sum")),
        "mean": (lambda o: o.mean(), F.cross_entropy(x, y)),
        "per-sample": (lambda o: (o * w).sum(), (F.cross_entropy(x, y, reduction="none") * w).sum()),
    }
    for name, (head, reference) in heads.items():
        (expected,) = torch.autograd.grad(reference, x)
        total = head(module(x, y))
        for k in (1, 2, 3):  # backward three times through one graph: x.grad accumulates, nothing aliases it
            total.backward(retain_graph=k < 3)
            torch.testing.assert_close(x.grad, k * expected, rtol=1e-5, atol=1e-7, msg=name)
        x.grad = None


def test_eager_node_has_one_output_and_keeps_one_gradient_per_input_that_requires_grad():
    """The fused eager node returns the loss only; the gradients it keeps are not outputs of the graph."""
    a, p, n = rnd(6, 4, grad=True), rnd(6, 4), rnd(6, 4, grad=True)
    out = nlt.TripletLoss()(a, p, n)
    node = out.grad_fn
    assert isinstance(out, torch.Tensor) and out.shape == (6,)
    assert [t is None for t in node.grads] == [False, False]  # a and n; p does not require grad
    assert all(g.shape == (6, 4) for g in node.grads)
    out.sum().backward()
    _, (ga, _, gn) = nl.TripletLoss().forward_backward(a.detach().numpy(), p.numpy(), n.detach().numpy())
    np.testing.assert_allclose(a.grad.numpy(), ga, rtol=1e-12)
    np.testing.assert_allclose(n.grad.numpy(), gn, rtol=1e-12)
    assert p.grad is None


@pytest.mark.parametrize("head", ["sum", "mean"])
def test_a_large_kept_gradient_becomes_the_leaf_grad_without_a_copy(head):
    """From IN_PLACE_BYTES on, the node's kept gradient (scaled in place for mean) is stored as ``.grad`` itself."""
    x = rnd(300, 1000, dtype=torch.float32, grad=True)
    y = torch.randint(0, 1000, (300,), generator=_GEN)
    out = nlt.SoftmaxCELoss()(x, y)
    kept = out.grad_fn.grads[0].data_ptr()
    getattr(out, head)().backward()
    assert x.grad.data_ptr() == kept
    (expected,) = torch.autograd.grad(getattr(F.cross_entropy(x, y, reduction="none"), head)(), x)
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-7)


def test_a_masked_numpy_sample_weight_is_refused_when_an_element_is_masked():
    x, y = rnd(4, 3, grad=True), rnd(4, 3)
    masked = np.ma.masked_array(np.ones((4, 1)), mask=[[True], [False], [False], [False]])
    with pytest.raises(TypeError, match="sample_weight: masked arrays with masked elements"):
        nlt.L2Loss()(x, y, masked)
    full = nlt.L2Loss()(x, y, np.ma.masked_array(np.full((4, 1), 2.0)))  # nothing masked: its data
    torch.testing.assert_close(full, nlt.L2Loss()(x, y, torch.full((4, 1), 2.0, dtype=D)))


def test_a_result_sharing_an_input_s_memory_is_copied():
    """A kernel result that views an input (possible for a user's loss) is handed out as a copy, never as the input."""
    x = torch.arange(6.0, dtype=D).reshape(2, 3)
    fresh = [nlt._ops._own(nlt._ops.to_tensor(a, x.device), [x]) for a in (x.numpy(), np.ones(2))]
    assert fresh[0].data_ptr() != x.data_ptr() and torch.equal(fresh[0], x)
    assert fresh[1].dtype == D and fresh[1].shape == (2,)


def test_second_backward_after_an_in_place_scale_needs_unmodified_inputs():
    x = rnd(300, 1000, dtype=torch.float32, grad=True)
    y = torch.randint(0, 1000, (300,), generator=_GEN)
    total = nlt.SoftmaxCELoss()(x, y).mean()
    total.backward(retain_graph=True)
    with torch.no_grad():
        x.add_(1.0)
    with pytest.raises(RuntimeError, match="pred was freed or modified in place"):
        total.backward()


def test_backward_after_a_temporary_module_is_collected():
    """The node keeps its loss: a module built inline may be gone by the backward (the re-run path too)."""
    a, b, y = rnd(4, 3, grad=True), rnd(4, 3), torch.ones(4, dtype=D)
    out = nlt.CosineEmbeddingLoss()(a, b, y).sum()
    gc.collect()
    out.backward()
    _, (ref, _) = nl.CosineEmbeddingLoss().forward_backward(a.detach().numpy(), b.numpy(), y.numpy())
    np.testing.assert_allclose(a.grad.numpy(), ref, rtol=1e-12)
