"""The table of elementwise loss terms: name -> (value, derivative).

Dispatcher, tests, benchmarks and docs loop over this one dict. Each entry is
a pair of :mod:`.scalar` functions with the signature ``f(x, y, a, p0, p1)``.
"""

from . import scalar as s

ELEMENTWISE = {
    "l2": (s.l2_value, s.l2_grad),
    "l1": (s.l1_value, s.l1_grad),
    "huber": (s.huber_value, s.huber_grad),
    "hinge": (s.hinge_value, s.hinge_grad),
    "squared_hinge": (s.squared_hinge_value, s.squared_hinge_grad),
    "bce_logit": (s.bce_logit_value, s.bce_logit_grad),
    "bce_logit_pw": (s.bce_logit_pw_value, s.bce_logit_pw_grad),
    "bce_prob": (s.bce_prob_value, s.bce_prob_grad),
    "poisson_logits": (s.poisson_logits_value, s.poisson_logits_grad),
    "poisson_logits_full": (s.poisson_logits_full_value, s.poisson_logits_grad),
    "poisson_prob": (s.poisson_prob_value, s.poisson_prob_grad),
    "poisson_prob_full": (s.poisson_prob_full_value, s.poisson_prob_grad),
    "kldiv_logits": (s.kldiv_logits_value, s.kldiv_logits_grad),
}

# Not a loss: the pair that lets the row kernels weight and reduce a per-position loss
# computed by a structured kernel (``numba_losses._core.weighting``).
COMPUTED = (s.computed_value, s.computed_grad)


def is_builtin(value, grad) -> bool:
    """Whether ``(value, grad)`` is a pair of this table (not a user-written term).

    Kernel factories keep only built-in terms in Numba's on-disk cache: a user's
    functions may not be importable by a later process.
    """
    return (value, grad) == COMPUTED or (value, grad) in ELEMENTWISE.values()
