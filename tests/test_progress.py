"""The progress line of the tour and of precompile: live on a terminal, plain lines elsewhere, the total at the end."""

from __future__ import annotations

import io
import re
import time

import numba_losses as nl
from numba_losses._progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_without_a_terminal():
    out = io.StringIO()
    show = Progress(2, stream=out)
    show.begin("HuberLoss(rho=0.5)")
    show.end("HuberLoss(rho=0.5)", "2 kernels compiled", 2.14)
    show.begin("L1Loss")
    show.end("L1Loss", "checked")
    show.close("tour: 2 losses")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "[1/2] HuberLoss(rho=0.5) 2 kernels compiled 2.1 s"
    assert re.fullmatch(r"\[2/2\] L1Loss checked \d+\.\d s", lines[1])
    assert re.fullmatch(r"tour: 2 losses in \d+\.\d s", lines[2])


def test_a_terminal_gets_a_live_line_with_a_clock():
    out = Terminal()
    show = Progress(19, stream=out)
    for _ in range(6):
        show.end("earlier", "done", 0.0)
    show.begin("HuberLoss(rho=0.5)")
    time.sleep(0.6)  # the clock redraws every 0.25 s
    show.end("HuberLoss(rho=0.5)", "2 kernels compiled")
    show.close("tour: 19 losses")
    text = out.getvalue()
    live = re.findall(r"\r\x1b\[K(\[7/19\] HuberLoss\(rho=0\.5\) compiling \.\.\. (\d+\.\d) s)", text)
    assert len(live) >= 2 and float(live[-1][1]) >= 0.4  # redrawn in place, the clock running
    assert "\r\x1b[K[7/19] HuberLoss(rho=0.5) 2 kernels compiled" in text
    assert text.endswith("\n") and "tour: 19 losses in" in text


def test_disabled_prints_nothing():
    out = Terminal()
    show = Progress(1, enabled=False, stream=out)
    show.begin("x")
    show.end("x", "done")
    show.close("all")
    assert out.getvalue() == ""


def test_the_tour_reports_each_loss_and_the_total(monkeypatch, capsys):
    from numba_losses import __main__ as tour

    monkeypatch.setattr(tour, "TOUR", [("L1Loss", nl.L1Loss, tour._regression)])
    assert tour.main(["--shape", "8", "16", "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^\[1/1\] L1Loss checked.* \d+\.\d s$", err, re.M), err
    assert re.search(r"^tour: 1 losses in \d+\.\d s$", err, re.M), err
