"""PyTorch integration: autograd functions, ``nn.Module`` drop-ins and ``swap_modules``.

Replace ``torch.nn.Conv2d`` with ``fastconv.torch.Conv2d`` (same constructor
arguments, same parameter initialisation: the classes subclass the
``torch.nn`` ones and only replace ``forward``), or convert a whole model in
place, keeping its weights::

    import fastconv.torch as fct
    model = torchvision_or_your_model()
    fct.swap_modules(model)          # Conv2d, ConvTranspose2d, pooling -> fastconv
    loss = criterion(model(x), y); loss.backward()   # gradients from fastconv kernels

Forward and backward run fastconv's kernels (``backend="auto"``: the Numba
CPU backend for CPU tensors, a GPU backend for CUDA tensors); the backward
passes are deterministic.  PyTorch is imported by this module only; the rest
of fastconv never needs it.
"""
from __future__ import annotations

import torch
from torch import nn

from . import api, backward

__all__ = ["conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
           "adaptive_max_pool2d", "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "swap_modules", "set_backend"]

#: Backend used by the modules and functions here ("auto" picks per device).
_BACKEND = {"name": "auto"}


def set_backend(name: str):
    """Choose the fastconv backend the PyTorch wrappers use ("auto", "numba", "numpy", ...)."""
    _BACKEND["name"] = name


def _be():
    return _BACKEND["name"]


def _out(t, like):
    """A fastconv result as a tensor on ``like``'s device."""
    return t if isinstance(t, torch.Tensor) else torch.as_tensor(t, device=like.device)


# --------------------------------------------------------------------------
# autograd functions
# --------------------------------------------------------------------------
class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, padding_mode):
        ctx.save_for_backward(x, weight)
        ctx.args = (stride, padding, dilation, groups, padding_mode, bias is not None)
        return api.conv2d(x.detach(), weight.detach(),
                          None if bias is None else bias.detach(), stride, padding, dilation,
                          groups, padding_mode=padding_mode, backend=_be())

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, padding_mode, has_bias = ctx.args
        mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                has_bias and ctx.needs_input_grad[2])
        gx, gw, gb = backward.conv2d_backward(grad.contiguous(), x.detach(), weight.detach(),
                                              stride, padding, dilation, groups,
                                              padding_mode=padding_mode, output_mask=mask,
                                              backend=_be())
        return gx, gw, gb, None, None, None, None, None


class _ConvTranspose2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(x, weight)
        ctx.args = (stride, padding, output_padding, groups, dilation, bias is not None)
        return api.conv_transpose2d(x.detach(), weight.detach(),
                                    None if bias is None else bias.detach(), stride, padding,
                                    output_padding, groups, dilation, backend=_be())

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, output_padding, groups, dilation, has_bias = ctx.args
        mask = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                has_bias and ctx.needs_input_grad[2])
        gx, gw, gb = backward.conv_transpose2d_backward(
            grad.contiguous(), x.detach(), weight.detach(), stride, padding, output_padding,
            groups, dilation, output_mask=mask, backend=_be())
        return gx, gw, gb, None, None, None, None, None


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = api.max_pool2d(x.detach(), kernel_size, stride, padding, dilation, ceil_mode,
                                return_indices=True, backend=_be())
        ctx.save_for_backward(idx)
        ctx.args = (tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode)
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, grad, _grad_idx):
        (idx,) = ctx.saved_tensors
        return (backward.max_pool2d_backward(grad.contiguous(), idx, *ctx.args),
                None, None, None, None, None)


class _AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
        ctx.args = (tuple(x.shape), kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override)
        return api.avg_pool2d(x.detach(), kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override, backend=_be())

    @staticmethod
    def backward(ctx, grad):
        return (backward.avg_pool2d_backward(grad.contiguous(), *ctx.args),
                None, None, None, None, None, None)


class _AdaptiveAvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, output_size):
        ctx.shape = tuple(x.shape)
        return api.adaptive_avg_pool2d(x.detach(), output_size, backend=_be())

    @staticmethod
    def backward(ctx, grad):
        return backward.adaptive_avg_pool2d_backward(grad.contiguous(), ctx.shape), None


class _AdaptiveMaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, output_size):
        y, idx = api.adaptive_max_pool2d(x.detach(), output_size, True, backend=_be())
        ctx.save_for_backward(idx)
        ctx.shape = tuple(x.shape)
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, grad, _grad_idx):
        (idx,) = ctx.saved_tensors
        return backward.adaptive_max_pool2d_backward(grad.contiguous(), idx, ctx.shape), None


# --------------------------------------------------------------------------
# functional forms (torch.nn.functional signatures, differentiable)
# --------------------------------------------------------------------------
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    return _Conv2d.apply(input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    return _ConvTranspose2d.apply(input, weight, bias, stride, padding, output_padding, groups,
                                  dilation)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    y, idx = _MaxPool2d.apply(input, kernel_size, stride, padding, dilation, ceil_mode)
    return (y, idx) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _AvgPool2d.apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override)


def adaptive_avg_pool2d(input, output_size):
    return _AdaptiveAvgPool2d.apply(input, output_size)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    y, idx = _AdaptiveMaxPool2d.apply(input, output_size)
    return (y, idx) if return_indices else y


# --------------------------------------------------------------------------
# modules: torch.nn's constructors and initialisation, fastconv's forward
# --------------------------------------------------------------------------
def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fastconv (all padding modes supported)."""

    def forward(self, input):
        padding = self.padding if isinstance(self.padding, str) else _pair(self.padding)
        return conv2d(input, self.weight, self.bias, _pair(self.stride), padding,
                      _pair(self.dilation), self.groups, self.padding_mode)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed by fastconv (``output_size`` supported)."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError('Only "zeros" padding mode is supported for ConvTranspose2d')
        output_padding = self._output_padding(input, output_size, list(self.stride),
                                              list(self.padding), list(self.kernel_size),
                                              2, list(self.dilation))
        return conv_transpose2d(input, self.weight, self.bias, _pair(self.stride),
                                _pair(self.padding), tuple(output_padding), self.groups,
                                _pair(self.dilation))


class MaxPool2d(nn.MaxPool2d):
    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


class AvgPool2d(nn.AvgPool2d):
    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)


class AdaptiveMaxPool2d(nn.AdaptiveMaxPool2d):
    def forward(self, input):
        return adaptive_max_pool2d(input, self.output_size, self.return_indices)


_SWAPS = [(nn.Conv2d, Conv2d), (nn.ConvTranspose2d, ConvTranspose2d), (nn.MaxPool2d, MaxPool2d),
          (nn.AvgPool2d, AvgPool2d), (nn.AdaptiveAvgPool2d, AdaptiveAvgPool2d),
          (nn.AdaptiveMaxPool2d, AdaptiveMaxPool2d)]


def swap_modules(model: nn.Module) -> nn.Module:
    """Replace, in place, every torch.nn conv/pool module of ``model`` by fastconv's.

    The modules keep their parameters (the same ``Parameter`` objects, so an
    optimizer built before the swap still works), buffers, hooks and
    training mode; only their class changes.  Returns ``model``.
    """
    for module in model.modules():
        for torch_cls, fast_cls in _SWAPS:
            if type(module) is torch_cls:
                module.__class__ = fast_cls
                break
    return model
