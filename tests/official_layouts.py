"""Small stand-ins for the OFFICIAL EDSR-PyTorch and RCAN module layouts, written from their state-dict key names.

Only the parameter names, shapes and the forward computation matter here: the converter must turn their state dicts
into BasicSR ``EDSR`` / ``RCAN`` checkpoints that compute the same function. The official networks take and return
images in ``[0, rgb_range]`` (255); BasicSR's take and return ``[0, 1]``.

Key layout reproduced (``n`` blocks, ``g`` groups):
    EDSR: ``sub_mean``, ``head.0``, ``body.{b}.body.{0,2}``, ``body.{n}``, ``tail.0.{0,2,..}``, ``tail.1``, ``add_mean``
    RCAN: ``sub_mean``, ``head.0``, ``body.{g}.body.{b}.body.{0,2}``, ``body.{g}.body.{b}.body.3.conv_du.{0,2}``,
          ``body.{g}.body.{n}``, ``body.{groups}``, ``tail.0.{0,2,..}``, ``tail.1``, ``add_mean``
"""
import math
from typing import Sequence

import torch
from torch import nn

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class MeanShiftLayout(nn.Conv2d):
    """A frozen 1x1 conv that adds ``sign * rgb_range * mean`` (identity weight, as with std 1)."""

    def __init__(self, rgb_range: float = 255., mean: Sequence[float] = DIV2K_MEAN, sign: int = -1):
        super().__init__(3, 3, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.requires_grad_(False)


class UpsamplerLayout(nn.Sequential):
    """conv + pixel shuffle stages: index 0, 2, 4 ... hold the convs."""

    def __init__(self, scale: int, feat: int):
        layers = []
        if scale == 3:
            layers += [conv3x3(feat, 9 * feat), nn.PixelShuffle(3)]
        elif scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(feat, 4 * feat), nn.PixelShuffle(2)]
        else:
            raise ValueError(f'scale {scale} not supported')
        super().__init__(*layers)


class ResBlockLayout(nn.Module):
    """conv-ReLU-conv residual block stored as ``body.{0,2}``."""

    def __init__(self, feat: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv3x3(feat, feat), nn.ReLU(True), conv3x3(feat, feat))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class OfficialEDSRLayout(nn.Module):
    """EDSR with the official parameter names; input and output in ``[0, rgb_range]``."""

    def __init__(self,
                 feat: int = 8,
                 blocks: int = 2,
                 scale: int = 2,
                 res_scale: float = 1.,
                 rgb_range: float = 255.,
                 mean: Sequence[float] = DIV2K_MEAN):
        super().__init__()
        self.sub_mean = MeanShiftLayout(rgb_range, mean, -1)
        self.head = nn.Sequential(conv3x3(3, feat))
        self.body = nn.Sequential(*[ResBlockLayout(feat, res_scale) for _ in range(blocks)], conv3x3(feat, feat))
        self.tail = nn.Sequential(UpsamplerLayout(scale, feat), conv3x3(feat, 3))
        self.add_mean = MeanShiftLayout(rgb_range, mean, 1)

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


class ChannelAttentionLayout(nn.Module):
    """Squeeze-excite stored as ``conv_du.{0,2}``."""

    def __init__(self, feat: int, reduction: int):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(feat, feat // reduction, 1), nn.ReLU(True), nn.Conv2d(feat // reduction, feat, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class RCABLayout(nn.Module):
    """conv-ReLU-conv-attention stored as ``body.{0,2,3}``; the residual is not scaled."""

    def __init__(self, feat: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(feat, feat), nn.ReLU(True), conv3x3(feat, feat), ChannelAttentionLayout(feat, reduction))

    def forward(self, x):
        return x + self.body(x)


class GroupLayout(nn.Module):
    """``blocks`` RCABs then a conv, stored as ``body.{0..blocks}``, with a group skip."""

    def __init__(self, feat: int, blocks: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(*[RCABLayout(feat, reduction) for _ in range(blocks)], conv3x3(feat, feat))

    def forward(self, x):
        return x + self.body(x)


class OfficialRCANLayout(nn.Module):
    """RCAN with the official parameter names; input and output in ``[0, rgb_range]``."""

    def __init__(self,
                 feat: int = 16,
                 groups: int = 2,
                 blocks: int = 2,
                 reduction: int = 4,
                 scale: int = 2,
                 rgb_range: float = 255.,
                 mean: Sequence[float] = DIV2K_MEAN):
        super().__init__()
        self.sub_mean = MeanShiftLayout(rgb_range, mean, -1)
        self.head = nn.Sequential(conv3x3(3, feat))
        self.body = nn.Sequential(*[GroupLayout(feat, blocks, reduction) for _ in range(groups)], conv3x3(feat, feat))
        self.tail = nn.Sequential(UpsamplerLayout(scale, feat), conv3x3(feat, 3))
        self.add_mean = MeanShiftLayout(rgb_range, mean, 1)

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))
