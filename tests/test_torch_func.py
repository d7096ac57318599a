"""numba_losses.torch modules inside torch.func transforms and with forward-mode AD (dual tensors).

Every transform's result is checked against a Jacobian taken by central differences of the module's
forward values (plain calls, no autograd), in float64 on the small cases of ``test_torch.py`` (forward
mode only where the gradient scales per sample; elsewhere it must raise): ``jacrev``
and ``jacfwd`` against the Jacobian itself, ``jvp`` and dual tensors against the Jacobian times a
tangent, ``vmap`` against a loop of plain calls, ``vmap`` of ``grad`` (per-sample gradients) against the
Jacobian summed over the outputs. What is not supported must raise, never return a derivative that
ignores a term (second derivatives, undifferentiated inputs, losses whose gradient does not scale per
sample).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import numba_losses as nl  # noqa: E402
import numba_losses.torch as nlt  # noqa: E402
from tests.test_torch import _GEN, CASES, D, rnd  # noqa: E402

# the cases whose gradient does not scale per sample: reverse mode only (forward mode raises)
REVERSE_ONLY = ("L2 sample_weight grows the output", "SDML")
SUPPORTED = [k for k in CASES if not k.startswith("MakeLoss")]
FORWARD = ("jacfwd", "jvp", "dual")
TRANSFORMS = ["jacrev", "jacfwd", "jvp", "dual", "vmap", "vmap_grad"]
TOL = {"atol": 1e-6, "rtol": 1e-5}
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # PyTorch's own


def plain(inputs):
    return [a.detach() if isinstance(a, torch.Tensor) else a for a in inputs]


def of(module, inputs, i):
    """The module as a function of input ``i``, the other inputs fixed."""

    def fn(x):
        args = list(inputs)
        args[i] = x
        return module(*args)

    return fn


def numeric_jacobian(fn, x, h=1e-6):
    """``d fn(x) / d x`` by central differences, shape ``fn(x).shape + x.shape``."""
    flat = x.reshape(-1)
    cols = []
    for k in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[k] = h
        cols.append((fn((flat + e).reshape(x.shape)) - fn((flat - e).reshape(x.shape))).reshape(-1) / (2 * h))
    return torch.stack(cols, dim=-1).reshape(*fn(x).shape, *x.shape)


def contract(jac, t):
    """``jac`` times a tangent of the input's shape: the directional derivative, of the output's shape."""
    return torch.tensordot(jac, t, dims=t.dim())


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("name", SUPPORTED)
def test_transforms_match_central_differences(name, transform):
    module, inputs, diff = CASES[name]
    inputs = plain(inputs)
    for i in diff:
        fn, x = of(module, inputs, i), inputs[i]
        jac = numeric_jacobian(fn, x)
        t = rnd(*x.shape)
        if name in REVERSE_ONLY and transform in FORWARD:
            with pytest.raises(NotImplementedError, match="forward-mode AD .* is supported only for losses whose"):
                torch.func.jvp(fn, (x,), (t,))
        elif transform == "jacrev":
            torch.testing.assert_close(torch.func.jacrev(fn)(x), jac, **TOL)
        elif transform == "jacfwd":
            torch.testing.assert_close(torch.func.jacfwd(fn)(x), jac, **TOL)
        elif transform == "jvp":
            value, tangent = torch.func.jvp(fn, (x,), (t,))
            torch.testing.assert_close(value, fn(x))
            torch.testing.assert_close(tangent, contract(jac, t), **TOL)
        elif transform == "dual":
            from torch.autograd import forward_ad

            with forward_ad.dual_level():
                out = fn(forward_ad.make_dual(x, t))
                tangent = forward_ad.unpack_dual(out).tangent
            torch.testing.assert_close(tangent, contract(jac, t), **TOL)
        else:
            stack = torch.stack([x, x + 0.01 * t, x - 0.02 * t])
            if transform == "vmap":
                want = torch.stack([fn(s) for s in stack])
                torch.testing.assert_close(torch.func.vmap(fn)(stack), want)
            else:
                want = torch.stack([numeric_jacobian(fn, s).reshape(-1, *x.shape).sum(0) for s in stack])
                got = torch.func.vmap(torch.func.grad(lambda a, fn=fn: fn(a).sum()))(stack)
                torch.testing.assert_close(got, want, **TOL)


def test_vmap_maps_labels_too():
    """Mapping logits and labels together gives one call per pair (not one loss over the stacked batch)."""
    x, y = rnd(3, 4, 5), torch.randint(0, 5, (3, 4), generator=_GEN)
    got = torch.func.vmap(nlt.SoftmaxCELoss())(x, y)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got, torch.stack([F.cross_entropy(x[b], y[b], reduction="none") for b in range(3)]))
    dx = torch.func.vmap(torch.func.grad(lambda a, b: nlt.SoftmaxCELoss()(a, b).mean()))(x, y)
    want = torch.stack([torch.func.grad(lambda a, b=b: F.cross_entropy(a, y[b]))(x[b]) for b in range(3)])
    torch.testing.assert_close(dx, want)


def test_grad_of_a_float32_and_a_bfloat16_input():
    x, y = rnd(4, 6, dtype=torch.float32), torch.randint(0, 6, (4,), generator=_GEN)
    want = torch.func.grad(lambda a: F.cross_entropy(a, y))(x)
    torch.testing.assert_close(torch.func.grad(lambda a: nlt.SoftmaxCELoss()(a, y).mean())(x), want)
    xb = x.bfloat16()
    got = torch.func.grad(lambda a: nlt.SoftmaxCELoss()(a, y).mean())(xb)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=2e-2)


def test_makeloss_keeps_its_head_gradient_rule_and_has_no_forward_mode():
    x, y = rnd(3, 4), rnd(3, 4)
    module = nlt.Module(nl.MakeLoss(nl.L2Loss()))
    got = torch.func.grad(lambda a: 5.0 * module(a, y).sum())(x)
    torch.testing.assert_close(got, (x - y) / 4)  # d/dx of each row's mean of (x - y)^2 / 2; the 5 is ignored
    with pytest.raises(NotImplementedError, match=r"MakeLoss\(L2Loss\): forward-mode AD is not supported"):
        torch.func.jvp(lambda a: module(a, y), (x,), (torch.ones_like(x),))


@pytest.mark.parametrize(
    "second",
    [
        lambda f, x: torch.func.hessian(lambda a: f(a).sum())(x),
        lambda f, x: torch.func.grad(lambda a: torch.func.grad(lambda b: f(b).sum())(a).sum())(x),
        lambda f, x: torch.func.jvp(torch.func.grad(lambda a: f(a).sum()), (x,), (torch.ones_like(x),)),
        lambda f, x: torch.func.jacfwd(torch.func.jacfwd(f))(x),
    ],
    ids=["hessian", "grad_of_grad", "jvp_of_grad", "jacfwd_of_jacfwd"],
)
def test_second_derivatives_raise_instead_of_treating_the_gradient_as_constant(second):
    y = torch.randint(0, 5, (4,), generator=_GEN)
    with pytest.raises(NotImplementedError, match="SoftmaxCrossEntropyLoss: second derivatives"):
        second(lambda a: nlt.SoftmaxCELoss()(a, y), rnd(4, 5))


def test_create_graph_still_raises_in_plain_autograd():
    x = rnd(4, 3, grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(nlt.L2Loss()(x, torch.zeros(4, 3, dtype=D)).sum(), x, create_graph=True)


def test_a_transform_over_an_input_the_loss_does_not_differentiate_raises():
    x, y = rnd(4, 3), rnd(4, 3)
    with pytest.raises(NotImplementedError, match="L2Loss: a transform differentiates label"):
        torch.func.jvp(lambda b: nlt.L2Loss()(x, b), (y,), (torch.ones_like(y),))
    with pytest.raises(NotImplementedError, match="label requires grad"):
        torch.func.grad(lambda b: nlt.L2Loss()(x, b).sum())(y)


def test_a_temporary_module_outlives_its_call_for_the_backward_kernel():
    """The backward kernel of a loss whose gradient does not scale per sample runs after the module is gone."""
    a, b = rnd(4, 3), rnd(4, 3)
    got = torch.func.jacrev(lambda x: nlt.SDMLLoss()(x, b))(a)
    torch.testing.assert_close(got, numeric_jacobian(lambda x: nlt.SDMLLoss()(x, b), a), **TOL)


def test_outside_transforms_the_eager_node_is_used():
    """The transform path is for transforms only: a plain call keeps the eager node (in-place scaling, no copies),
    also inside a forward-mode AD context when no input carries a tangent."""
    from torch.autograd import forward_ad

    x = rnd(4, 3, grad=True)
    out = nlt.L2Loss()(x, torch.zeros(4, 3, dtype=D))
    assert type(out.grad_fn).__name__ == "EagerFunctionBackward"
    with forward_ad.dual_level():
        out = nlt.L2Loss()(x, torch.zeros(4, 3, dtype=D))
    assert type(out.grad_fn).__name__ == "EagerFunctionBackward"
    jac = torch.autograd.functional.jacobian(lambda a: nlt.L2Loss()(a, torch.zeros(4, 3, dtype=D)), x.detach())
    torch.testing.assert_close(jac, numeric_jacobian(lambda a: nlt.L2Loss()(a, torch.zeros(4, 3, dtype=D)), x.detach()))


def test_vmap_alone_runs_the_plain_forward(monkeypatch):
    """Nothing differentiates a call under vmap alone: no gradient work; with grad inside, the fused kernel."""
    from numba_losses.torch import _transforms

    seen = []
    real = _transforms._run

    def spy(key, inputs, fused):
        seen.append(fused)
        return real(key, inputs, fused)

    monkeypatch.setattr(_transforms, "_run", spy)
    x, y = rnd(3, 4, 5), rnd(3, 4, 5)
    torch.testing.assert_close(torch.func.vmap(nlt.L2Loss())(x, y), 0.5 * ((x - y) ** 2).mean(-1))
    assert seen == [False] * 3
    seen.clear()
    torch.func.vmap(torch.func.grad(lambda a, b: nlt.L2Loss()(a, b).sum()))(x, y)
    assert seen == [True] * 3


def test_vmap_over_an_empty_stack():
    out = torch.func.vmap(nlt.L2Loss())(torch.zeros(0, 4, 3, dtype=D), torch.zeros(0, 4, 3, dtype=D))
    assert out.shape == (0, 4) and out.dtype == D
