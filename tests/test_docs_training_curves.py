"""The docs' training-curves extension: the library's loss and PyTorch's train the same model the same way."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "_ext"))
try:
    import training_curves
finally:
    sys.path.pop(0)


@pytest.mark.parametrize("curves", [training_curves.classifier_curves, training_curves.ctc_curves])
def test_the_two_losses_give_the_same_training_curve(curves):
    ours, theirs = curves(steps=40)
    assert len(ours) == len(theirs) == 40
    assert theirs[-1] < 0.5 * theirs[0]  # the model learns
    for a, b in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, rel=1e-5)


def test_write_curves_draws_the_figure_and_its_text(tmp_path):
    rst = training_curves.write_curves(tmp_path, steps=5, image_path="/x/training_curves.png")
    text = rst.read_text()
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert text.startswith(".. figure:: /x/training_curves.png") and text.count("largest relative difference") == 2
