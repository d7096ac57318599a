"""Loss curves of two small PyTorch trainings, drawn when the documentation is built (a Sphinx extension).

Each model is trained twice from the same initial weights on the same data:
once with a loss module of ``numba_losses.torch`` and once with PyTorch's own
loss, and the two loss curves go in one plot (they must agree: the losses and
their gradients are the same functions):

* a two-layer MLP classifying three Gaussian blobs, ``SoftmaxCELoss`` against
  ``torch.nn.CrossEntropyLoss``;
* a per-frame linear layer reading noisy one-hot frames, ``CTCLoss`` (raw
  activations, the log-softmax fused) against ``torch.nn.functional.ctc_loss``
  on ``log_softmax`` (per-sample losses averaged the same way).

At ``builder-inited`` it writes ``training_curves.png`` (Agg, 200 dpi) and
``training_curves.rst`` (the figure and the largest differences between the
curves) into ``training_curves_dir`` (default ``_training``, to be listed in
``exclude_patterns``); without PyTorch the ``.rst`` says so and draws nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

__all__ = ["classifier_curves", "ctc_curves", "write_curves", "setup"]

DPI = 200
WIDTH_IN = 8.5


def classifier_curves(steps: int = 300, seed: int = 0) -> tuple[list[float], list[float]]:
    """``(ours, torch's)``: the mean loss per step of the same MLP trained with each loss (float32, SGD)."""
    import torch

    import numba_losses.torch as nlt

    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    y = torch.randint(0, 3, (384,), generator=g)
    x = centers[y] + 0.9 * torch.randn(384, 2, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    ours, theirs = nlt.SoftmaxCELoss(), torch.nn.CrossEntropyLoss()
    return (
        _train(copy.deepcopy(model), lambda m: ours(m(x), y).mean(), steps, lr=0.3),
        _train(copy.deepcopy(model), lambda m: theirs(m(x), y), steps, lr=0.3),
    )


def ctc_curves(steps: int = 300, seed: int = 0) -> tuple[list[float], list[float]]:
    """``(ours, torch's)``: the mean CTC loss per step of the same per-frame linear layer trained with each
    loss (float32, Adam). Frames hold a noisy one-hot code of their symbol (blank between repeats)."""
    import torch
    import torch.nn.functional as F

    import numba_losses.torch as nlt

    g = torch.Generator().manual_seed(seed)
    t, n, c, length, hold = 60, 16, 6, 8, 5  # c classes, blank = 0; each symbol held for `hold` frames
    labels = torch.randint(1, c, (n, length), generator=g)
    frames = torch.zeros(t, n, dtype=torch.long)  # the symbol shown at each frame (0: blank)
    for i in range(length):
        frames[i * (hold + 2) + 1 : i * (hold + 2) + 1 + hold] = labels[:, i]
    x = F.one_hot(frames, c).float() + 0.5 * torch.randn(t, n, c, generator=g)
    in_len, tg_len = torch.full((n,), t), torch.full((n,), length)
    torch.manual_seed(seed)
    model = torch.nn.Linear(c, c)
    ours = nlt.CTCLoss(layout="TNC", blank_label="first")

    def theirs(m: Any) -> Any:
        return F.ctc_loss(F.log_softmax(m(x), 2), labels, in_len, tg_len, reduction="none").mean()

    return (
        _train(copy.deepcopy(model), lambda m: ours(m(x), labels, in_len, tg_len).mean(), steps, lr=0.1, adam=True),
        _train(copy.deepcopy(model), theirs, steps, lr=0.1, adam=True),
    )


def _train(model: Any, loss_of: Any, steps: int, lr: float = 0.05, adam: bool = False) -> list[float]:
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr) if adam else torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(model)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def write_curves(out_dir: str | Path, steps: int = 300, image_path: str = "training_curves.png") -> Path:
    """Train, draw ``training_curves.png`` and write ``training_curves.rst`` into ``out_dir``; returns the ``.rst``.

    ``image_path``: how the ``.rst`` names the image (Sphinx resolves it from the including page).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rst = out / "training_curves.rst"
    try:
        import torch  # noqa: F401
    except ImportError:
        rst.write_text("*(PyTorch was not installed where these pages were built: the curves are not drawn.)*\n")
        return rst
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {
        "MLP on three blobs: softmax cross-entropy (SGD)": (
            classifier_curves(steps),
            "SoftmaxCELoss",
            "CrossEntropyLoss",
        ),
        "Per-frame linear layer: CTC (Adam)": (ctc_curves(steps), "CTCLoss", "F.ctc_loss"),
    }
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 3.2))
    lines = []
    for ax, (title, ((ours, theirs), name, ref)) in zip(axes, runs.items(), strict=True):
        ax.plot(theirs, color="#d9603b", linewidth=4, alpha=0.45, label=f"PyTorch {ref}")
        ax.plot(ours, color="#24478f", linewidth=1.2, label=f"numba_losses.torch.{name}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("mean loss (log scale)", fontsize=8)
        ax.set_yscale("log")
        ax.tick_params(which="both", labelsize=7)
        ax.legend(fontsize=7, frameon=False)
        worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, theirs, strict=True))
        lines.append(
            f"* {title}: {len(ours)} steps, loss {theirs[0]:.3f} -> {theirs[-1]:.4f}; the largest relative "
            f"difference between the two curves is {worst:.1e}."
        )
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=DPI)
    plt.close(fig)
    rst.write_text(
        f".. figure:: {image_path}\n"
        "   :width: 100%\n"
        "   :alt: two pairs of training loss curves that overlap\n\n"
        "   The same model and data trained with this library's loss (thin line) and with PyTorch's (wide\n"
        "   line), float32, drawn when these pages were built.\n\n" + "\n".join(lines) + "\n"
    )
    return rst


def _on_builder_inited(app: Any) -> None:
    folder = app.config.training_curves_dir
    write_curves(Path(app.srcdir) / folder, image_path=f"/{folder}/training_curves.png")  # from the source root


def setup(app: Any) -> dict[str, Any]:
    """Register the extension (Sphinx entry point)."""
    app.add_config_value("training_curves_dir", "_training", "env")
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "version": "1"}
