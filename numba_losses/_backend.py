"""Which backend a call runs on, decided once from its array inputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._device import is_device_array

CPU = "cpu"
CUDA = "cuda"


def select_backend(named: dict[str, Any]) -> str:
    """Return ``"cpu"`` or ``"cuda"`` for these inputs (``None`` entries are skipped).

    Raises
    ------
    ValueError
        When host and device arrays are mixed; nothing is copied implicitly.
    """
    if not any(is_device_array(a) for a in named.values()):
        return CPU
    device = [n for n, a in named.items() if a is not None and is_device_array(a)]
    host = [n for n, a in named.items() if a is not None and not is_device_array(a) and not _is_scalar(a)]
    if host:
        raise ValueError(
            f"inputs {', '.join(device)} are CUDA device arrays but {', '.join(host)} "
            "are host arrays; put all inputs on one side (no implicit copies are made)"
        )
    return CUDA


def _is_scalar(a: Any) -> bool:
    return isinstance(a, (int, float, bool, np.number, np.bool_))
