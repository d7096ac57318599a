"""``Loss.result_shapes``: output and gradient shapes and dtypes from shapes and dtypes alone.

Each case is checked against what a real call returns, with inputs given as
bare ``.shape`` / ``.dtype`` descriptions (nothing to read), and errors come
out as the call's own.
"""

from __future__ import annotations

import numpy as np
import pytest

import numba_losses as nl


class Described:
    """Only a shape and a dtype, like ``jax.ShapeDtypeStruct``."""

    def __init__(self, a: np.ndarray) -> None:
        self.shape, self.dtype = a.shape, a.dtype


def _a(shape, dtype=np.float64):
    return np.random.default_rng(0).uniform(0.1, 0.9, shape).astype(dtype)


F32, F16 = np.float32, np.float16
CASES = {
    "l2-grown": (nl.L2Loss(), (_a((4, 5), F32), _a((4, 5)), _a((4, 1)))),
    "l2-f16-reshape-grow": (nl.L2Loss(), (_a((4, 5), F16), _a(20), _a((3, 1, 1)))),
    "bce-pos-weight": (nl.SigmoidBCELoss(), (_a((4, 5)), _a((4, 5)), None, _a((1, 5)))),
    "poisson-all": (nl.PoissonNLLLoss(), (_a((4, 5)), _a((4, 5)))),
    "kldiv": (nl.KLDivLoss(), (_a((4, 5)), _a((4, 5)))),
    "kldiv-softmax-axis1": (nl.KLDivLoss(from_logits=False, axis=1), (_a((4, 5, 3)), _a((4, 5, 3)), _a((4, 1, 1)))),
    "softmax-sw-grows": (nl.SoftmaxCELoss(), (_a((4, 5)), np.zeros(4), _a(4))),
    "softmax-axis1-int": (nl.SoftmaxCELoss(axis=1), (_a((2, 5, 3), F32), np.zeros((2, 3), np.int64))),
    "softmax-dense": (nl.SoftmaxCELoss(sparse_label=False), (_a((3, 4)), _a((3, 4)))),
    "ctc-grown": (nl.CTCLoss(), (_a((2, 6, 4)), np.zeros((2, 3)), None, None, _a((2, 1)))),
    "ctc-tnc-f32": (nl.CTCLoss(layout="TNC"), (_a((6, 2, 4), F32), np.zeros((2, 3)))),
    "triplet-axis1": (nl.TripletLoss(batch_axis=1), (_a((3, 4, 5)), _a((3, 4, 5)), _a((3, 4, 5)))),
    "cosine-grown": (nl.CosineEmbeddingLoss(), (_a((4, 5)), _a((4, 5)), np.ones(4), _a(4))),
    "sdml-mixed": (nl.SDMLLoss(), (_a((4, 5), F32), _a((4, 5)))),
    "makeloss": (nl.MakeLoss(nl.L1Loss(), normalization="valid"), (_a((4, 5)), _a((4, 5)))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_result_shapes_match_a_real_call(name):
    loss, args = CASES[name]
    out_spec, grad_specs = loss.result_shapes(*[None if a is None else Described(a) for a in args])
    out, grads = loss.forward_backward(*args)
    assert out_spec == (out.shape, out.dtype)
    assert [tuple(s) for s in grad_specs] == [(g.shape, g.dtype) for g in grads]


def test_result_shapes_take_keywords_and_arrays():
    out, (grad,) = nl.SoftmaxCELoss().result_shapes(pred=np.empty((8, 10), F32), label=np.empty(8))
    assert out.shape == (8,) and out.dtype == F32 and grad.shape == (8, 10)


def test_result_shapes_raise_as_the_call_does():
    with pytest.raises(ValueError, match="broadcast"):
        nl.L2Loss().result_shapes(Described(_a((4, 5))), Described(_a((4, 5))), Described(_a((3, 1))))
    with pytest.raises(ValueError, match="sparse label"):
        nl.SoftmaxCELoss().result_shapes(Described(_a((4, 5))), Described(_a(5)))
    with pytest.raises(TypeError, match=r"\.shape and \.dtype"):
        nl.L2Loss().result_shapes(object(), object())


def test_public_methods_name_the_inputs():
    import inspect

    sig = inspect.signature(nl.CTCLoss.forward_backward)
    assert list(sig.parameters)[1:6] == ["pred", "label", "pred_lengths", "label_lengths", "sample_weight"]
    assert sig.parameters["grad_out"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(nl.PoissonNLLLoss.__call__).parameters)[1:] == [
        "pred",
        "target",
        "sample_weight",
        "epsilon",
        "out",
    ]
    assert inspect.signature(nl.PoissonNLLLoss.__call__).parameters["epsilon"].default == 1e-08
    assert list(inspect.signature(nl.SDMLLoss.backward).parameters)[1:3] == ["x1", "x2"]
    out = nl.HuberLoss()(pred=np.ones(3), label=np.zeros(3))  # the named methods still bind by keyword
    np.testing.assert_allclose(out, [0.5, 0.5, 0.5])
