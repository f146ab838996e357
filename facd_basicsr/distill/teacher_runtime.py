"""How the frozen teacher runs its forward pass: autocast precision, memory format and ``torch.compile``.

These are speed options for GPU users (options ``distill.teacher_amp``, ``distill.teacher_fp32_modules``,
``distill.teacher_channels_last`` and ``distill.teacher_compile``); all off reproduces a plain
``with torch.no_grad(): net_t(lq)`` bit for bit. The teacher only gives targets, so lower precision changes the
targets, not the student's arithmetic: ``benchmarks/step_cost.py`` measures how much (teacher-output PSNR drift) and
what it buys. Under bf16 the last convolution of BasicSR's EDSR/RCAN returns the image in bf16 (8-bit mantissa, on the
0-255 scale of ``img_range``), which costs more PSNR than all the layers before it: keep it in float32 with
``teacher_fp32_modules: [conv_last]``.

Tapped features: forward hooks on the teacher still fire (the runner calls the same modules), and under autocast a
tapped convolution returns bf16/fp16 maps, under ``channels_last`` channels-last ones. :class:`FeatureTaps` stores
float32 contiguous copies whatever it gets; other hooks can use :func:`features_to_float32`.
"""
import types
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from facd_basicsr.distill.feature_taps import resolve_module

AMP_DTYPES = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_teacher_options(amp: Optional[str], channels_last: bool, compile: bool) -> None:
    """Raise a ValueError naming the ``distill.teacher_*`` option that holds a bad value."""
    if isinstance(amp, bool) or amp not in AMP_DTYPES:
        raise ValueError(f'distill.teacher_amp {amp!r} is not supported. Supported: ~ (float32), bf16, fp16')
    if not isinstance(channels_last, bool):
        raise ValueError(f'distill.teacher_channels_last must be true or false, got {channels_last!r}')
    if not isinstance(compile, bool):
        raise ValueError(f'distill.teacher_compile must be true or false, got {compile!r}')


def _forward_in_float32(self: nn.Module, *args, **kwargs):
    """``type(self).forward`` with autocast off and floating-point tensor arguments cast to float32."""
    args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    device_type = next((a.device.type for a in args if torch.is_tensor(a)), 'cpu')
    with torch.autocast(device_type=device_type, enabled=False):
        return type(self).forward(self, *args, **kwargs)


def run_in_float32(net: nn.Module, paths: Sequence[str]) -> None:
    """Make the modules at ``paths`` of ``net`` run in float32 under autocast (their ``forward`` is wrapped in place;
    hooks, parameters and state-dict keys are unchanged; a deep copy of ``net`` keeps the wrapping)."""
    for path in paths:
        module = resolve_module(net, path, 'distill.teacher_fp32_modules')
        module.forward = types.MethodType(_forward_in_float32, module)


def features_to_float32(feats: Sequence[Tensor]) -> List[Tensor]:
    """Tapped maps as float32 in the default (contiguous) layout; maps that already are stay the same objects."""
    return [f.to(torch.float32, memory_format=torch.contiguous_format) for f in feats]


class TeacherRunner:
    """Calls a frozen teacher without autograd, optionally under autocast, in channels-last layout, compiled.

    YAML (read by FACDModel)::

        distill:
          teacher_amp: ~                 # ~ (float32) | bf16 | fp16
          teacher_fp32_modules: []       # module paths kept in float32 under amp, e.g. [conv_last]
          teacher_channels_last: false
          teacher_compile: false

    The output is float32 whatever ``amp`` is. It is made under ``torch.no_grad`` (not ``inference_mode``: inference
    tensors could not be saved by the student's losses for backward).

    Args:
        net_t (nn.Module): the teacher, already on its device and in eval mode. With ``channels_last`` its parameters
            are converted in place (values unchanged, layout only).
        amp (str | None): autocast dtype 'bf16' | 'fp16', or None for float32. Default: None.
        channels_last (bool): run in ``torch.channels_last`` memory format (faster convolutions with tensor cores).
            Default: False.
        compile (bool): run ``torch.compile(net_t)``; the first calls compile (slow), and hooks are traced into the
            graph, so a hook whose behaviour depends on a flag recompiles once per flag value. Default: False.
        fp32_modules (Sequence[str]): module paths of ``net_t`` run in float32 under ``amp`` (their inputs cast
            up); checked even without ``amp``, used only with it. Default: ().
    """

    def __init__(self,
                 net_t: nn.Module,
                 amp: Optional[str] = None,
                 channels_last: bool = False,
                 compile: bool = False,
                 fp32_modules: Sequence[str] = ()) -> None:
        check_teacher_options(amp, channels_last, compile)
        if isinstance(fp32_modules, (str, bytes)) or not isinstance(fp32_modules, Sequence):
            raise ValueError(f'distill.teacher_fp32_modules must be a list of module paths, got {fp32_modules!r}')
        for path in fp32_modules:
            resolve_module(net_t, path, 'distill.teacher_fp32_modules')
        if amp is not None:
            run_in_float32(net_t, fp32_modules)
        self.net = net_t
        self.amp = amp
        self.fp32_modules = tuple(fp32_modules)
        self.channels_last = channels_last
        self.compile = compile
        if channels_last:
            net_t.to(memory_format=torch.channels_last)
        self._forward = torch.compile(net_t) if compile else net_t

    def extra_repr(self) -> str:
        return (f'amp={self.amp}, fp32_modules={list(self.fp32_modules)}, channels_last={self.channels_last}, '
                f'compile={self.compile}')

    def __repr__(self) -> str:
        return f'TeacherRunner({type(self.net).__name__}, {self.extra_repr()})'

    @torch.no_grad()
    def __call__(self, lq: Tensor) -> Tensor:
        """Teacher output (N, C, s*H, s*W), float32, contiguous, from LR input (N, C, H, W) in [0, 1]."""
        if self.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        if self.amp is None:
            out = self._forward(lq)
        else:
            with torch.autocast(device_type=lq.device.type, dtype=AMP_DTYPES[self.amp]):
                out = self._forward(lq)
        if out.dtype != torch.float32 or not out.is_contiguous():
            out = out.to(torch.float32, memory_format=torch.contiguous_format)
        return out
