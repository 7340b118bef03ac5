"""Choosing the compute device, and numerics settings shared by every stage."""

from __future__ import annotations

import torch

from pipeline.errors import UserError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; an unavailable device is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device {device!r} is not supported (use cpu, cuda, cuda:N or auto)")
    return dev


def exact_float32() -> None:
    """Disable TF32 so float32 matrix products and convolutions are exact float32 on CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
