"""Constructor keywords: gluon's ``prefix`` / ``params`` are accepted, anything else is refused.

A misspelt or foreign parameter (PyTorch's ``delta=``, ``ignore_index=``,
``reduction=``...) must never run silently with the default.
"""

from __future__ import annotations

import numpy as np
import pytest

import numba_losses as nl

ALL_LOSSES = [
    nl.L2Loss,
    nl.L1Loss,
    nl.SigmoidBCELoss,
    nl.SoftmaxCELoss,
    nl.KLDivLoss,
    nl.CTCLoss,
    nl.HuberLoss,
    nl.HingeLoss,
    nl.SquaredHingeLoss,
    nl.LogisticLoss,
    nl.TripletLoss,
    nl.PoissonNLLLoss,
    nl.CosineEmbeddingLoss,
    nl.SDMLLoss,
]


@pytest.mark.parametrize("cls", ALL_LOSSES, ids=lambda c: c.__name__)
def test_gluon_keywords_are_accepted_and_others_refused(cls):
    cls(prefix="loss_", params=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'.*prefix"):
        cls(bogus=1)


@pytest.mark.parametrize(
    ("make", "hint"),
    [
        (lambda: nl.HuberLoss(delta=2.0), "rho="),
        (lambda: nl.SoftmaxCELoss(ignore_index=-100), "ignore_label="),
        (lambda: nl.CTCLoss(blank=0), "blank_label="),
        (lambda: nl.L1Loss(reduction="mean"), "one value per sample"),
        (lambda: nl.KLDivLoss(log_target=True), "not supported"),
        (lambda: nl.SigmoidBCELoss(pos_weight=np.ones(3)), "pos_weight is an input"),
        (lambda: nl.PoissonNLLLoss(log_input=True), "from_logits="),
    ],
)
def test_foreign_spellings_point_to_the_name_used_here(make, hint):
    with pytest.raises(TypeError, match=hint):
        make()


def test_user_made_losses_refuse_unknown_parameters_too():
    def value(p, y):
        return abs(p - y)

    def grad(p, y):
        return 1.0 if p > y else -1.0

    cls = nl.elementwise_loss(value, grad)
    with pytest.raises(TypeError, match="unexpected parameter"):
        cls(margin=1.0)
