"""Inference on images whose size is not a multiple of a network's window (SwinIR): reflect-pad, run, crop.

BasicSR's ``SwinIR`` partitions its maps into ``window_size`` windows and fails on other sizes; BasicSR pads only in
its own ``SwinIRModel.test``. Any network whose options carry ``window_size`` is padded the same way here.
"""
from typing import Callable, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def window_multiple(network_opt: Mapping) -> int:
    """The multiple the LR input must be a multiple of: ``window_size`` when the network has one, else 1."""
    return int(network_opt.get('window_size') or 1)


def pad_to_multiple(lq: Tensor, multiple: int) -> Tuple[Tensor, int, int]:
    """``lq`` (N, C, H, W) reflect-padded at the bottom and right to a multiple of ``multiple``; returns
    (padded, pad_h, pad_w)."""
    pad_h, pad_w = (-lq.shape[-2]) % multiple, (-lq.shape[-1]) % multiple
    if not pad_h and not pad_w:
        return lq, 0, 0
    return F.pad(lq, (0, pad_w, 0, pad_h), 'reflect'), pad_h, pad_w


@torch.no_grad()
def forward_padded(net: Callable[[Tensor], Tensor], lq: Tensor, multiple: int, scale: int) -> Tensor:
    """``net(lq)`` for any size: padded to ``multiple``, the output cropped back by ``pad * scale``."""
    padded, pad_h, pad_w = pad_to_multiple(lq, multiple)
    out = net(padded)
    return out[..., :out.shape[-2] - pad_h * scale, :out.shape[-1] - pad_w * scale]
