"""Reading third-party weight files (``.pt``, ``.pth``, ``.bin``) safely: ``weights_only=True``.

A pickle can run code when loaded; ``torch.load(weights_only=True)`` refuses anything but tensors
and plain containers. Every third-party checkpoint in this package is read through here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def load_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pt``/``.pth``/``.bin`` state dict, loaded with ``weights_only=True`` (a pickle that
    would run code is refused); ``{"model": sd}`` / ``{"state_dict": sd}`` wrappers are unwrapped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint file")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError and friends: name the file and the reason
        raise ValueError(f"{p}: refused or unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{p}: not a state dict of tensors")
    return obj
