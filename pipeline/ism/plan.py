"""Reading a base model as the chain the fast ISM engine follows: ``conv section -> flatten -> Linear -> head``.

:func:`read_plan` runs the model once on a probe with hooks on its leaf modules, checks that the calls
form a chain (each layer's input is the previous layer's output), and turns each layer into a step:

* convolutions (Conv1d/Conv2d with the kernel along the sequence: stride 1, zero padding, dilation,
  groups), pooling with ``kernel == stride``, elementwise activations and BatchNorm (eval) form the
  *body* on ``[N, C, L]``;
* the first Linear after the flatten (a ``Flatten`` module or a reshape in ``forward``);
* the rest (Linear, activations, BatchNorm) is the dense *head* on ``[N, H]``.

Dropout and Identity are skipped (identities in eval mode). A model the engine cannot follow raises
:class:`~pipeline.errors.UnsupportedModelError` naming the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UnsupportedModelError

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.LogSigmoid,
    nn.Tanhshrink,
    nn.Threshold,
)
"""Modules applied position by position."""

IDENTITY_LIKE = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
"""Modules that are the identity in eval mode."""

RESHAPES = (nn.Flatten, nn.Unflatten)
CONVS = (nn.Conv1d, nn.Conv2d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class ConvStep:
    """A convolution along the sequence: ``weight [C_out, C_in / groups, k]``, left zero ``padding``."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    dilation: int
    padding: int
    groups: int
    length_out: int = 0


@dataclass
class PoolStep:
    """Max or average pooling with ``kernel == stride`` (floor mode)."""

    name: str
    kind: str  # "max" | "avg"
    kernel: int
    length_out: int = 0


@dataclass
class PointwiseStep:
    """A function applied position by position (an activation, an eval-mode BatchNorm)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LinearStep:
    """A Linear layer: ``weight [out, in]``."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None


BodyStep = Union[ConvStep, PoolStep, PointwiseStep]
HeadStep = Union[LinearStep, PointwiseStep]
Call = tuple[str, nn.Module, Union[torch.Tensor, None], Union[torch.Tensor, None]]
"""``(name, module, input, output)`` of one leaf-module call (tensors ``None`` when not one-to-one)."""


@dataclass
class Plan:
    """A model read as ``conv section -> flatten -> first Linear -> dense head``."""

    seq_len: int
    body: list[BodyStep] = field(default_factory=list)
    first_linear: LinearStep | None = None
    head: list[HeadStep] = field(default_factory=list)
    flat_channels: int = 0
    flat_length: int = 0
    _window_weight: torch.Tensor | None = None  # first Linear's weight as [L_last, C, F1]
    engine_cache: dict[str, Any] = field(default_factory=dict, repr=False)
    """What an engine derives from the plan once (e.g. the fast engine's geometry per device)."""

    @property
    def linear(self) -> LinearStep:
        """The first Linear (every finished plan has one)."""
        if self.first_linear is None:
            raise UnsupportedModelError(
                "no Linear layer after the convolutions; the model must end in [B, F] via Linear"
            )
        return self.first_linear

    @property
    def first_conv(self) -> ConvStep:
        """The first body step, a convolution (every finished plan starts with one)."""
        step = self.body[0]
        if not isinstance(step, ConvStep):
            raise UnsupportedModelError("the model must start with a convolution")
        return step

    def describe(self) -> str:
        """The steps' layer names, in order."""
        names = [s.name for s in self.body] + [self.linear.name] + [s.name for s in self.head]
        return " -> ".join(names)

    def to(self, device: torch.device) -> Plan:
        """Move every weight to ``device`` (the plan is rebuilt per device, so in place is fine)."""
        steps: list[Any] = [*self.body, self.first_linear, *self.head]
        for step in steps:
            for attr in ("weight", "bias"):
                value = getattr(step, attr, None)
                if isinstance(value, torch.Tensor):
                    setattr(step, attr, value.to(device))
            if isinstance(step, PointwiseStep) and isinstance(step.fn, nn.Module):
                step.fn.to(device)
        self._window_weight = None
        self.engine_cache.clear()
        return self

    def window_weight(self) -> torch.Tensor:
        """The first Linear's weight arranged ``[L_last, C, F1]`` so a window of positions is one
        contiguous ``[w * C, F1]`` matrix."""
        if self._window_weight is None:
            W = self.linear.weight
            self._window_weight = (
                W.reshape(W.shape[0], self.flat_channels, self.flat_length).permute(2, 1, 0).contiguous()
            )
        return self._window_weight


# ---------------------------------------------------------------------------------------------
# layers to steps
# ---------------------------------------------------------------------------------------------


def _int1(value: Any, what: str, name: str) -> int:
    """A size along the sequence axis (``k`` or ``(1, k)``-style tuples of 2D layers)."""
    if isinstance(value, int):
        return value
    if len(value) == 1:
        return int(value[0])
    if len(value) == 2 and value[0] in (0, 1) and what in ("padding", "stride", "dilation", "kernel"):
        if what == "padding" and value[0] != 0:
            raise UnsupportedModelError(f"layer {name}: padding {value} pads the singleton axis")
        return int(value[1])
    raise UnsupportedModelError(f"layer {name}: {what} {value} is not along the sequence axis only")


def conv_step(name: str, m: nn.Conv1d | nn.Conv2d) -> ConvStep:
    """Read a convolution (its kernel must run along the sequence only, with stride 1)."""
    if m.padding_mode != "zeros":
        raise UnsupportedModelError(
            f"layer {name} ({type(m).__name__}): padding_mode {m.padding_mode!r}; only zero padding"
        )
    weight = m.weight.detach()
    kernel_axis: Any = m.kernel_size
    if isinstance(m, nn.Conv2d):
        if weight.shape[2] != 1:
            raise UnsupportedModelError(f"layer {name} (Conv2d): kernel {tuple(m.kernel_size)} spans more than one row")
        weight = weight[:, :, 0, :]
        kernel_axis = (1, weight.shape[-1])
    _int1(kernel_axis, "kernel", name)
    if _int1(m.stride, "stride", name) != 1:
        raise UnsupportedModelError(f"layer {name} ({type(m).__name__}): stride {m.stride}; only stride 1")
    dilation = _int1(m.dilation, "dilation", name)
    k = weight.shape[-1]
    if isinstance(m.padding, str):
        padding = 0 if m.padding == "valid" else dilation * (k - 1) // 2
    else:
        padding = _int1(m.padding, "padding", name)
    bias = m.bias.detach() if m.bias is not None else None
    return ConvStep(name, weight, bias, dilation, padding, m.groups)


def pool_step(name: str, m: nn.Module) -> PoolStep:
    """Read a pooling layer (only ``kernel == stride``, no padding, floor mode, no indices)."""
    is_max = isinstance(m, (nn.MaxPool1d, nn.MaxPool2d))
    kernel = _int1(m.kernel_size, "kernel", name)
    stride_value = getattr(m, "stride", None)
    stride = _int1(stride_value if stride_value is not None else m.kernel_size, "stride", name)
    padding = _int1(m.padding, "padding", name)
    if kernel != stride or padding != 0 or getattr(m, "ceil_mode", False):
        raise UnsupportedModelError(
            f"layer {name} ({type(m).__name__}): only pooling with kernel == stride, no padding, floor mode"
        )
    if is_max and _int1(m.dilation, "dilation", name) != 1:
        raise UnsupportedModelError(f"layer {name} ({type(m).__name__}): dilated pooling")
    if is_max and getattr(m, "return_indices", False):
        raise UnsupportedModelError(f"layer {name}: pooling that returns indices")
    return PoolStep(name, "max" if is_max else "avg", kernel)


def batchnorm_fn(m: nn.modules.batchnorm._BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """An eval-mode BatchNorm as a function (running statistics)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    return fn


def same_data(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two tensors hold the same values in the same order (any shape)."""
    if a is None or b is None:
        return False
    return a.numel() == b.numel() and torch.equal(a.reshape(-1), b.reshape(-1))


def record_calls(model: nn.Module, X: torch.Tensor) -> tuple[list[Call], torch.Tensor]:
    """Run ``model(X)`` with hooks on its leaf modules; returns their calls in order and the output."""
    calls: list[Call] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], out: object, name: str) -> None:
        if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            calls.append((name, mod, args[0].detach(), out.detach()))
        else:
            calls.append((name, mod, None, None))

    handles = [
        module.register_forward_hook(lambda mod, args, out, name=name: hook(mod, args, out, name))
        for name, module in model.named_modules()
        if next(module.children(), None) is None
    ]
    try:
        with torch.no_grad():
            out = model(X)
    finally:
        for h in handles:
            h.remove()
    return calls, out


def probe_input(seq_len: int, device: torch.device) -> torch.Tensor:
    """Two random one-hot sequences ``[2, 4, L]`` (seeded), the second with an ``N`` column."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (2, seq_len), generator=g)
    X = F.one_hot(codes, 4).permute(0, 2, 1).float().contiguous()
    X[1, :, seq_len // 3] = 0.0
    return X.to(device)


# ---------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------


class _PlanReader:
    """Turns the recorded calls into a :class:`Plan`, one call at a time (:meth:`add`)."""

    def __init__(self, seq_len: int, X: torch.Tensor, calls: list[Call]) -> None:
        self.plan = Plan(seq_len=seq_len)
        self.calls = calls
        self.previous: torch.Tensor = X
        self.previous_label = "the input"
        self.flat = False
        self.seen: set[int] = set()

    def add(self, name: str, module: nn.Module, inp: torch.Tensor | None, outp: torch.Tensor | None) -> None:
        """Check that ``module`` continues the chain, then add its step (or skip an identity)."""
        label = f"{name} ({type(module).__name__})"
        inp, outp = self._check_chain(label, module, inp, outp)
        if inp.ndim == 2 and self.previous.ndim > 2:
            self.flat = True  # a view/reshape in forward flattened it
        if self._is_reshape(module, inp, outp):
            self.flat = self.flat or (outp.ndim == 2 and inp.ndim > 2)
        elif isinstance(module, CONVS + POOLS):
            self._add_body_layer(label, name, module, outp)
        elif isinstance(module, IDENTITY_LIKE):
            pass  # dropout is the identity in eval mode
        elif isinstance(module, ELEMENTWISE + NORMS):
            self._add_pointwise(label, name, module)
        elif isinstance(module, nn.Linear):
            self._add_linear(label, name, module, inp)
        else:
            raise UnsupportedModelError(f"layer {label} is not supported by the fast ISM engine")
        self.previous, self.previous_label = outp, label

    def _check_chain(
        self, label: str, module: nn.Module, inp: torch.Tensor | None, outp: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The call's input and output, once it is sure the call continues the chain."""
        if id(module) in self.seen:
            raise UnsupportedModelError(f"layer {label} is applied twice in forward")
        self.seen.add(id(module))
        if inp is None or outp is None:
            raise UnsupportedModelError(f"layer {label} does not map one tensor to one tensor")
        if not same_data(inp, self.previous):
            raise UnsupportedModelError(
                f"the model's forward changes the data between {self.previous_label} and {label} "
                "(operations outside modules, such as torch.relu or x * 2, are not supported)"
            )
        return inp, outp

    @staticmethod
    def _is_reshape(module: nn.Module, inp: torch.Tensor, outp: torch.Tensor) -> bool:
        parameter_free = not isinstance(module, ELEMENTWISE + IDENTITY_LIKE) and not list(module.parameters())
        return isinstance(module, RESHAPES) or (parameter_free and same_data(inp, outp))

    def _add_body_layer(self, label: str, name: str, module: nn.Module, outp: torch.Tensor) -> None:
        if self.flat:
            raise UnsupportedModelError(f"layer {label} comes after the flatten")
        step: ConvStep | PoolStep
        if isinstance(module, CONVS):
            step = conv_step(name, module)
            if not self.plan.body and step.groups != 1:
                raise UnsupportedModelError(f"layer {label}: the first convolution must have groups=1")
        else:
            step = pool_step(name, module)
        step.length_out = outp.shape[-1]
        self.plan.body.append(step)

    def _add_pointwise(self, label: str, name: str, module: nn.Module) -> None:
        fn: Callable[[torch.Tensor], torch.Tensor] = module
        if isinstance(module, NORMS):
            if self.flat and self.plan.first_linear is None:
                raise UnsupportedModelError(f"layer {label} normalises the flattened features")
            fn = batchnorm_fn(module)
        if not self.plan.body:
            raise UnsupportedModelError(f"layer {label} comes before the first convolution")
        step = PointwiseStep(name, fn)
        if self.plan.first_linear is not None:
            self.plan.head.append(step)
        else:
            self.plan.body.append(step)

    def _add_linear(self, label: str, name: str, module: nn.Linear, inp: torch.Tensor) -> None:
        bias = module.bias.detach() if module.bias is not None else None
        step = LinearStep(name, module.weight.detach(), bias)
        if self.plan.first_linear is not None:
            self.plan.head.append(step)
            return
        if not self.flat or inp.ndim != 2:
            raise UnsupportedModelError(f"layer {label} is not applied to the flattened convolution output")
        if not self.plan.body or not isinstance(self.plan.body[0], ConvStep):
            raise UnsupportedModelError("the model must start with a convolution")
        self.plan.flat_channels, self.plan.flat_length = _flattened_shape(self.calls, name)
        self.plan.first_linear = step


def _flattened_shape(calls: list[Call], linear_name: str) -> tuple[int, int]:
    """Channels and length of the activation that was flattened into ``linear_name``."""
    shape = None
    for name, _, _, outp in calls:
        if name == linear_name:
            break
        if outp is not None and outp.ndim >= 3:
            shape = outp.shape
    if shape is None:
        raise UnsupportedModelError(f"cannot find what is flattened into {linear_name}")
    return int(shape[1]), int(shape[-1])


def read_plan(model: nn.Module, seq_len: int, X: torch.Tensor) -> Plan:
    """Read ``model`` into a :class:`Plan` by running it once on the probe ``X [2, 4, L]``.

    Raises
    ------
    UnsupportedModelError
        Naming the first layer (or the step of ``forward``) the engine cannot follow.
    """
    if model.training:
        raise UnsupportedModelError("the model is in training mode; call model.eval() first")
    calls, out = record_calls(model, X)
    if not calls:
        raise UnsupportedModelError(f"{type(model).__name__} has no layers the fast engine can read")
    reader = _PlanReader(seq_len, X, calls)
    for name, module, inp, outp in calls:
        reader.add(name, module, inp, outp)
    plan = reader.plan
    if plan.first_linear is None:
        raise UnsupportedModelError("no Linear layer after the convolutions; the model must end in [B, F] via Linear")
    if not same_data(reader.previous, out):
        raise UnsupportedModelError("the model's forward changes the output after its last layer")
    return plan
