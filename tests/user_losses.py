"""Loss terms written the way a user would, shared by ``test_custom.py`` and ``ptx/catalogue.py``.

Plain Python scalar functions for ``nl.elementwise_loss``: they compile for the
CPU and for CUDA (branches instead of ``np.sign``, which numba-cuda lacks).
"""


def l1_value(pred, label):
    return abs(label - pred)


def l1_grad(pred, label):
    if pred > label:  # sign(pred - label); numba-cuda has no np.sign
        return 1.0
    if pred < label:
        return -1.0
    return 0.0


def huber_value(pred, label, rho):
    d = abs(label - pred)
    if d > rho:
        return d - 0.5 * rho
    return 0.5 / rho * d * d


def huber_grad(pred, label, rho):
    d = pred - label
    if d > rho:
        return 1.0
    if d < -rho:
        return -1.0
    return d / rho
