"""What every ISM engine shares: the argument checks, the device, the precision's autocast.

Private to :mod:`pipeline.ism`: the engines (:mod:`~pipeline.ism.naive`, :mod:`~pipeline.ism.fast`)
import these from here, and :mod:`pipeline.ism` re-exports the public ones.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.spec import PRECISIONS
from pipeline.errors import check_choice
from pipeline.ism.effects import TARGETS


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a precision: bfloat16 for ``bf16``, disabled for ``float32``."""
    check_choice("precision", precision, PRECISIONS)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def model_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else the device of the model's parameters (CPU for none)."""
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def prepare_inputs(
    model: nn.Module, X: torch.Tensor, target: str, batch_size: int, device: str | torch.device | None
) -> tuple[torch.device, torch.Tensor]:
    """Check the arguments shared by the ISM engines; returns the device and ``X`` as contiguous
    float32 on it (the published Beluga's reshape needs contiguous input)."""
    check_choice("target kind", target, TARGETS)
    if X.ndim != 3 or X.shape[1] != 4:
        raise ValueError(f"X must have shape [B, 4, L], got {list(X.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = model_device(model, device)
    return dev, X.to(dev, torch.float32).contiguous()
