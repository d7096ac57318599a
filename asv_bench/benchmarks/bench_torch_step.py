"""Training steps on the CPU with PyTorch's losses and with ``numba_losses.torch``.

The loss alone (``x.grad = None``, the loss, ``.mean()``, ``.backward()``) and a
small model plus the loss (gradients zeroed, forward, loss, backward): the
cases of ``asv_bench/torch_step.py``, whose step builders this suite imports.
``loss`` is ``"torch"`` (``torch.nn.functional``) or ``"numba_losses"`` (the
``nn.Module`` of this library). Skipped without PyTorch. ``setup`` runs each
step twice, so compilation is never timed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HAS_TORCH = importlib.util.find_spec("torch") is not None

CASES = {  # case: (builder name, arguments)
    "SoftmaxCE 256x1000": ("softmax_steps", (256, 1000)),
    "CTC T=200 N=32 C=40 L=50": ("ctc_steps", (200, 32, 40, 50)),
    "MLP 256-512-1000 + SoftmaxCE": ("model_softmax_steps", (256, 256, 512, 1000)),
    "Linear 64-40 per frame + CTC": ("model_ctc_steps", (200, 32, 64, 40, 50)),
}
NAMES = {  # the step of each side in the builders' dictionaries
    "softmax": {"torch": "torch F.cross_entropy", "numba_losses": "nlt.SoftmaxCELoss().mean()"},
    "ctc": {"torch": "torch F.ctc_loss(log_softmax)", "numba_losses": "nlt.CTCLoss('TNC').mean()"},
}


def _torch_step_module():
    """``asv_bench/torch_step.py`` (one directory above this suite, not a package)."""
    here = str(Path(__file__).resolve().parents[1])
    sys.path.insert(0, here)
    try:
        import torch_step
    finally:
        sys.path.remove(here)
    return torch_step


class TorchTrainingStep:
    """One training step, PyTorch's loss against the library's (milliseconds; lower is better)."""

    params = (list(CASES), ["torch", "numba_losses"])
    param_names = ["case", "loss"]
    timeout = 300

    def setup(self, case: str, loss: str) -> None:
        if not HAS_TORCH:
            raise NotImplementedError("PyTorch is not installed")
        builder, args = CASES[case]
        steps = getattr(_torch_step_module(), builder)(*args)
        self.step = steps[NAMES["ctc" if "ctc" in builder else "softmax"][loss]]
        self.step()
        self.step()

    def time_step(self, case: str, loss: str) -> None:
        self.step()
