"""Beluga (DeepSEA successor; Zhou et al. 2018): ``[B, 4, 2000] -> [B, 2002]`` probabilities.

Module names follow the published ``deepsea.beluga.pth`` state dict (``model.0.0.*`` …
``model.1.4.1.*``) so that file loads unchanged. The published convolutions are ``Conv2d`` with
weights ``[out, in, 1, 8]``; here they are ``Conv1d`` and a load hook drops the singleton axis, so
both layouts load.
"""

from __future__ import annotations

import torch
from torch import nn


def _flat_length(seq_len: int) -> int:
    """Positions left after the convolutions and poolings (106 for L = 2000)."""
    length = seq_len
    for _ in range(2):
        length = (length - 14) // 4  # two convolutions of kernel 8, then max-pool 4
    return length - 14


MIN_SEQ_LEN = next(n for n in range(1, 4096) if _flat_length(n) >= 1)
"""Shortest input Beluga's layers accept (310)."""


class Beluga(nn.Module):
    """Beluga with the published layer layout (dropout is inactive in eval mode).

    Parameters
    ----------
    seq_len : int
        Input length (2000 for the published weights; the flatten width follows from it).
    n_targets : int
        Number of outputs (2002 chromatin profiles).
    """

    def __init__(self, seq_len: int = 2000, n_targets: int = 2002) -> None:
        super().__init__()
        length = _flat_length(seq_len)
        if length < 1:
            raise ValueError(f"Beluga needs seq_len >= {MIN_SEQ_LEN}, got {seq_len}")
        self.seq_len, self.n_targets = seq_len, n_targets
        self.model = nn.Sequential(
            nn.Sequential(
                nn.Conv1d(4, 320, 8),
                nn.ReLU(),
                nn.Conv1d(320, 320, 8),
                nn.ReLU(),
                nn.Dropout(0.2),
                nn.MaxPool1d(4, 4),
                nn.Conv1d(320, 480, 8),
                nn.ReLU(),
                nn.Conv1d(480, 480, 8),
                nn.ReLU(),
                nn.Dropout(0.2),
                nn.MaxPool1d(4, 4),
                nn.Conv1d(480, 640, 8),
                nn.ReLU(),
                nn.Conv1d(640, 640, 8),
                nn.ReLU(),
            ),
            nn.Sequential(
                nn.Dropout(0.5),
                nn.Flatten(),
                nn.Sequential(nn.Identity(), nn.Linear(640 * length, 2003)),
                nn.ReLU(),
                nn.Sequential(nn.Identity(), nn.Linear(2003, n_targets)),
            ),
            nn.Sigmoid(),
        )
        self.register_load_state_dict_pre_hook(_load_hook)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Predict.

        Parameters
        ----------
        X : torch.Tensor, shape=(B, 4, L)
            One-hot sequences in A, G, C, T order.

        Returns
        -------
        y_hat : torch.Tensor, shape=(B, F)
            Probabilities.
        """
        return self.model(X)

    @staticmethod
    def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept the published Conv2d weights ``[out, in, 1, k]`` for our Conv1d ``[out, in, k]``."""
        out = dict(state_dict)
        for key, value in state_dict.items():
            if key.endswith(".weight") and value.ndim == 4 and value.shape[2] == 1:
                out[key] = value[:, :, 0, :]
        return out


def _load_hook(module, state_dict, prefix, *args) -> None:
    for key, value in Beluga.convert_state_dict({k: v for k, v in state_dict.items() if k.startswith(prefix)}).items():
        state_dict[key] = value
