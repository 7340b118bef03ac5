"""Multiplexers made fast for inference, with the same function: batch norms folded into the
convolutions before them, 1x1 convolutions run as matrix products, ReLUs in place and, on the CPU for
narrow networks, the 2-D channels-last layout.

Each is an exact rewrite of the eval-mode network (the results agree to float32 rounding, about 5e-7 of
the output's scale, tested). On the CPU a 1x1 ``Conv1d`` goes through oneDNN at a fraction of the speed
of the same product through BLAS (2.0 against 0.27 ms for ``[64, 32, 200] -> 64`` channels,
2026-12-07), a folded batch norm is one pass over the activations less per layer, and narrow
convolutions run faster channels-last: together 1.2x to 1.6x per window on the demo's shape and 1.18x
for the BelugaMultiplexer (``make bench-multiplexer``; ``docs/decisions.md``). Only the built-in
multiplexers (:class:`~pipeline.models.multiplexer.ConvMultiplexer`,
:class:`~pipeline.models.multiplexer.FastMultiplexer` and their subclasses) are rewritten: a user's own
class may read its modules' attributes directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.models.multiplexer import ConvMultiplexer, FastMultiplexer

REWRITTEN = (ConvMultiplexer, FastMultiplexer)
"""The classes (and their subclasses) :func:`optimize_for_inference` rewrites."""


class Pointwise(nn.Module):
    """A 1x1 ``Conv1d`` as a matrix product, on ``[B, C_in, L]`` or on channels-last ``[B, C_in, 1, L]``.

    Parameters
    ----------
    conv : nn.Conv1d
        Kernel 1, stride 1, no padding, dilation 1, one group (:func:`is_pointwise`).
    """

    plain_out = False
    """With a channels-last input, write the output in plain ``[B, C_out, 1, L]`` order (set on the
    network's last layer, whose output is reshaped: no copy at the end)."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if not is_pointwise(conv):
            raise ValueError(f"not a 1x1 convolution: {conv}")
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0].contiguous(), requires_grad=False)  # [C_out, C_in]
        bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.bias = bias  # [C_out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C_in, L]`` -> ``[B, C_out, L]``; ``x: [B, C_in, 1, L]`` channels-last -> ``[B, C_out, 1,
        L]`` channels-last (a plain ``[B·L, C_in] @ [C_in, C_out]`` product, with no copy either side), or
        in plain order with :attr:`plain_out`."""
        if x.dim() == 4 and not self.plain_out:
            return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)
        if x.dim() == 4:
            return self.forward(x.squeeze(2)).unsqueeze(2)  # BLAS reads the channels-last operand as is
        y = torch.matmul(self.weight, x)
        # in place: y is new, and one more large allocation per layer costs as much as the product
        return y if self.bias is None else y.add_(self.bias[:, None])


class Conv2dOfConv1d(nn.Conv2d):
    """A ``Conv1d`` as the ``Conv2d`` of kernel ``(1, k)`` on ``[B, C, 1, L]``, its weight channels-last:
    the layout oneDNN runs fastest on the CPU (0.68 against 1.28 ms for ``[64, 32, 200]``, kernel 8,
    2026-12-07).

    Parameters
    ----------
    conv : nn.Conv1d
        Any stride, padding given as numbers, dilation and groups.
    """

    def __init__(self, conv: nn.Conv1d) -> None:
        if isinstance(conv.padding, str):
            raise ValueError(f"padding {conv.padding!r} is not rewritten")
        super().__init__(
            conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
            padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]), groups=conv.groups,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
        )  # fmt: skip
        with torch.no_grad():
            self.weight.copy_(conv.weight.unsqueeze(2))
            self.weight.data = self.weight.data.contiguous(memory_format=torch.channels_last)
            if conv.bias is not None and self.bias is not None:
                self.bias.copy_(conv.bias)
        self.requires_grad_(False)


LAYOUT_2D_MAX_CHANNELS = 256
"""The widest convolution (kernel > 1) the 2-D channels-last layout is chosen for on the CPU. Measured
on 2026-12-07 (2 threads, kernel 8, ``Conv1d`` against channels-last ``Conv2d``): 2.3x, 1.5x and 1.3x
faster at 64, 128 and 256 channels (2 windows of 2,000 bp; 1.3x to 1.7x for 64 of 200 bp), even at
512, and 0.64x (slower) at the BelugaMultiplexer's 1,280."""


LAYOUT_2D_MAX_GROUPED_CHANNELS = 64
"""The same for a grouped (depthwise) convolution: in the channels-last layout the ``fast``
architecture ran 1.1x to 1.3x faster than in the 1-D one at 48 and 64 channels (the demo's shape), and
0.6x at 256 channels over 2,000 bp (its Beluga shape; 2026-12-07)."""


def narrow(model: nn.Module) -> bool:
    """Whether every convolution of ``model`` with a kernel above 1 has at most
    :data:`LAYOUT_2D_MAX_CHANNELS` input and output channels (:data:`LAYOUT_2D_MAX_GROUPED_CHANNELS`
    when it is grouped)."""
    return all(
        max(m.in_channels, m.out_channels)
        <= (LAYOUT_2D_MAX_GROUPED_CHANNELS if m.groups > 1 else LAYOUT_2D_MAX_CHANNELS)
        for m in model.modules()
        if isinstance(m, nn.Conv1d) and not is_pointwise(m)
    )


def is_pointwise(module: nn.Module) -> bool:
    """Whether ``module`` is a ``Conv1d`` that mixes channels at each position only (a 1x1 convolution)."""
    return (
        isinstance(module, nn.Conv1d)
        and module.kernel_size == (1,)
        and module.stride == (1,)
        and module.dilation == (1,)
        and module.groups == 1
        and module.padding in ((0,), "valid")
    )


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """The children ``(conv, batch norm)`` of ``module`` whose batch norm reads the convolution's output
    and nothing else: consecutive children of a ``Sequential``, or the pairs a block names in its
    ``conv_bn_pairs``."""
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        return [
            (a, b)
            for a, b in zip(names, names[1:], strict=False)
            if isinstance(module._modules[a], nn.Conv1d) and isinstance(module._modules[b], nn.BatchNorm1d)
        ]
    return list(getattr(module, "conv_bn_pairs", ()))


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode batch norm of ``model`` into the convolution before it, in place; the batch
    norm becomes an ``nn.Identity``. Returns how many were folded."""
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if not isinstance(bn, nn.BatchNorm1d) or bn.running_mean is None or bn.running_var is None:
                continue
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def convolutions_rewritten(model: nn.Module, *, layout_2d: bool) -> int:
    """Replace every ``Conv1d`` of ``model`` in place: a 1x1 one by a :class:`Pointwise`, and with
    ``layout_2d`` any other by a :class:`Conv2dOfConv1d`. Returns how many were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if not isinstance(child, nn.Conv1d):
                continue
            if is_pointwise(child):
                setattr(module, name, Pointwise(child))
            elif layout_2d and not isinstance(child.padding, str):
                setattr(module, name, Conv2dOfConv1d(child))
            else:
                continue
            replaced += 1
    return replaced


def relu_in_place(model: nn.Module) -> int:
    """Make every ``nn.ReLU`` of ``model`` work in place. Safe in the built-in multiplexers, where each
    ReLU reads a tensor made for it alone (a convolution's or batch norm's output). Returns how many."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    for relu in relus:
        relu.inplace = True
    return len(relus)


@torch.no_grad()
def optimize_for_inference(model: nn.Module, *, layout_2d: bool | None = None) -> nn.Module:
    """``model`` rewritten for fast inference, in place, when it is a built-in multiplexer
    (:data:`REWRITTEN`); any other model is returned unchanged, in eval mode.

    The rewrite folds the batch norms (:func:`fold_batch_norms`), runs 1x1 convolutions as matrix
    products (:class:`Pointwise`) and the ReLUs in place (:func:`relu_in_place`). On the CPU, once every
    batch norm is folded and when every convolution is :func:`narrow`, the network also runs in the 2-D
    channels-last layout (:class:`Conv2dOfConv1d`, ``model.layout_2d``). On CUDA the layout stays: its
    speed there is unmeasured (``docs/decisions.md``).
    After the rewrite the model cannot be trained or saved as a checkpoint.

    Parameters
    ----------
    model : nn.Module
        ``[B, 4, L] -> [B, F, 4, L]``, with its weights where it will run.
    layout_2d : bool, optional
        Run in the 2-D channels-last layout; by default on the CPU for a :func:`narrow` network only. It
        needs every batch norm folded, and is left off otherwise.

    Returns
    -------
    model : nn.Module
        The same object, ``[B, 4, L] -> [B, F, 4, L]``, in eval mode.
    """
    model.eval()
    if not isinstance(model, REWRITTEN):
        return model
    fold_batch_norms(model)
    if layout_2d is None:
        layout_2d = all(p.device.type == "cpu" for p in model.parameters()) and narrow(model)
    layout_2d = layout_2d and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convolutions_rewritten(model, layout_2d=layout_2d)
    pointwise = [m for m in model.modules() if isinstance(m, Pointwise)]
    if pointwise:
        pointwise[-1].plain_out = True  # the output layer of both built-in families
    relu_in_place(model)
    model.layout_2d = layout_2d
    return model
