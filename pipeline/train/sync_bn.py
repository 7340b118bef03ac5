"""A synchronized BatchNorm that also works on CPU (``torch.nn.SyncBatchNorm`` is CUDA-only).

With it, training on ``world`` processes with local batches of ``b`` computes the same batch
statistics, and so the same loss curve, as one process with a batch of ``world · b``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SyncBatchNormFn(torch.autograd.Function):
    """Batch norm over the union of all ranks' batches; all-reduces sums in forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum):  # noqa: ANN001
        C = x.shape[1]
        dims = [0] + list(range(2, x.ndim))
        x64 = x.double()
        stats = torch.cat(
            [
                x64.sum(dims),
                (x64 * x64).sum(dims),
                torch.tensor([x.numel() // max(C, 1)], dtype=torch.float64, device=x.device),
            ]
        )
        dist.all_reduce(stats)
        n = stats[-1]
        mean = stats[:C] / n
        var = (stats[C : 2 * C] / n - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
                unbiased = var * n / (n - 1).clamp_min(1)
                running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        shape = [1, C] + [1] * (x.ndim - 2)
        xhat = ((x64 - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        ctx.save_for_backward(xhat, invstd.to(x.dtype), weight)
        ctx.n, ctx.shape, ctx.dims = n, shape, dims
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):  # noqa: ANN001
        xhat, invstd, weight = ctx.saved_tensors
        shape, dims, n = ctx.shape, ctx.dims, ctx.n
        sum_dy = dy.sum(dims)
        sum_dy_xhat = (dy * xhat).sum(dims)
        both = torch.cat([sum_dy, sum_dy_xhat]).double()
        dist.all_reduce(both)
        C = sum_dy.numel()
        mean_dy = (both[:C] / n).to(dy.dtype).view(shape)
        mean_dy_xhat = (both[C:] / n).to(dy.dtype).view(shape)
        dx = (dy - mean_dy - xhat * mean_dy_xhat) * (invstd * weight).view(shape)
        return dx, sum_dy_xhat, sum_dy, None, None, None, None


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm synchronized across ranks on any device (eval mode uses the running statistics)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Batch statistics over all ranks while training; running statistics otherwise."""
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        tracked = self.num_batches_tracked if self.track_running_stats else None
        if tracked is not None:
            tracked.add_(1)
        if self.momentum is not None:
            momentum = self.momentum
        else:  # a cumulative average, as torch's BatchNorm does without momentum
            momentum = 1.0 / float(tracked) if tracked is not None else 0.0
        return _SyncBatchNormFn.apply(
            input, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum
        )


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm by a synchronized one (torch's fused kernel on CUDA, ours elsewhere)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device_type))
    return out
