"""DR adapters: map a student feature map into the teacher's channel space (student side only).

Paper: Moon et al., "Feature-domain Adaptive Contrastive Distillation for Efficient Single Image Super-Resolution",
IEEE Access 2023 (arXiv 2211.15951). The paper's figure draws a "DR" box on every student tap and none on the
teacher; its form is not published. Ours: a 1x1 convolution by default (a FitNet regressor), identity-initialised when
the channel counts match; 3x3 and conv-ReLU-conv are options.
"""
from typing import List, Optional, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from facd_basicsr.registry import register_once

ADAPTER_KINDS = ('conv1x1', 'conv3x3', 'conv_relu_conv')


@register_once(ARCH_REGISTRY)
class FACDAdapter(nn.Module):
    """One DR adapter: (N, in_channels, H, W) -> (N, out_channels, H, W), spatial size kept.

    The model builds one per tap and fills ``in_channels`` / ``out_channels`` from a dry run of the student and the
    teacher; users only choose the kind. YAML (``distill.adapter``)::

        adapter: {type: FACDAdapter, kind: conv1x1}

    Args:
        in_channels (int): Student feature channels at the tap.
        out_channels (int): Teacher feature channels at the tap.
        kind (str): 'conv1x1' | 'conv3x3' | 'conv_relu_conv' (3x3 conv, ReLU, 1x1 conv). Default: 'conv1x1'.
        hidden_channels (int | None): Width of 'conv_relu_conv'. Default: None (= out_channels).
        identity_init (bool): Start as the identity map when in_channels == out_channels ('conv1x1' and
            'conv3x3' only). Default: True.
        leading_identity (bool): Start as the identity on the first min(in_channels, out_channels) channels and
            zero elsewhere, whatever the channel counts ('conv1x1' and 'conv3x3' only). Meant for a student cut out
            of its teacher (``distill.init_from_teacher``): its channel c is the teacher's channel c, so this is the
            map its first features already fit, where a random one would pull them elsewhere. Default: False.
        bias (bool): Give the adapter's convolutions a bias; False makes the adapter linear, so it cannot absorb a
            constant offset between student and teacher features. Default: True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kind: str = 'conv1x1',
                 hidden_channels: Optional[int] = None,
                 identity_init: bool = True,
                 bias: bool = True,
                 leading_identity: bool = False) -> None:
        super().__init__()
        if kind not in ADAPTER_KINDS:
            raise ValueError(f'FACDAdapter kind {kind!r} is not supported. Supported kinds: {", ".join(ADAPTER_KINDS)}')
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f'FACDAdapter channels must be positive, got {in_channels} -> {out_channels}')
        self.kind = kind
        for name, value in (('bias', bias), ('leading_identity', leading_identity)):
            if not isinstance(value, bool):
                raise ValueError(f'FACDAdapter {name} must be true or false, got {value!r}')
        if leading_identity and kind == 'conv_relu_conv':
            raise ValueError('FACDAdapter leading_identity needs kind conv1x1 or conv3x3 (conv_relu_conv cannot start '
                             'as an identity)')
        if kind == 'conv_relu_conv':
            hidden = hidden_channels or out_channels
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 3, 1, 1, bias=bias), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, out_channels, 1, bias=bias))
        else:
            kernel = 1 if kind == 'conv1x1' else 3
            self.body = nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=bias)
            if leading_identity or (identity_init and in_channels == out_channels):
                self._init_identity(self.body)

    @staticmethod
    def _init_identity(conv: nn.Conv2d) -> None:
        """Weight 1 from input channel c to output channel c for c < min(in, out), at the kernel centre; 0 elsewhere."""
        with torch.no_grad():
            conv.weight.zero_()
            centre = conv.kernel_size[0] // 2
            for c in range(min(conv.in_channels, conv.out_channels)):
                conv.weight[c, c, centre, centre] = 1.
            if conv.bias is not None:
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FACDAdapterBank(nn.Module):
    """The adapters of all taps as one module, so DDP can wrap them and one checkpoint holds them.

    Args:
        adapters (Sequence[nn.Module]): one adapter per tap, in tap order.
    """

    def __init__(self, adapters: Sequence[nn.Module]) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(adapters)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(feats) != len(self.adapters):
            raise ValueError(f'{len(feats)} feature maps for {len(self.adapters)} adapters')
        return [adapter(feat) for adapter, feat in zip(self.adapters, feats)]
