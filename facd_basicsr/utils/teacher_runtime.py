"""How the frozen teacher runs its forward pass: autocast precision, memory format and ``torch.compile``.

These are speed options for GPU users (options ``distill.teacher_amp``, ``distill.teacher_channels_last`` and
``distill.teacher_compile``); all off reproduces a plain ``with torch.no_grad(): net_t(lq)`` bit for bit. The teacher
only gives targets, so lower precision changes the targets, not the student's arithmetic: ``benchmarks/step_cost.py``
measures how much (teacher-output PSNR drift) and what it buys.

Tapped features: forward hooks on the teacher still fire (the runner calls the same module), but under autocast a
tapped convolution returns bf16/fp16 maps and the hook stores them in that dtype; under ``channels_last`` they come in
channels-last layout. :func:`features_to_float32` turns them into ordinary float32 (N, C, H, W) tensors; a hook that
stores ``output.to(torch.float32, memory_format=torch.contiguous_format, copy=True)`` instead of ``output.clone()``
does the same at no extra cost (one copy either way).
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

AMP_DTYPES = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_teacher_options(amp: Optional[str], channels_last: bool, compile: bool) -> None:
    """Raise a ValueError naming the ``distill.teacher_*`` option that holds a bad value."""
    if isinstance(amp, bool) or amp not in AMP_DTYPES:
        raise ValueError(f'distill.teacher_amp {amp!r} is not supported. Supported: ~ (float32), bf16, fp16')
    if not isinstance(channels_last, bool):
        raise ValueError(f'distill.teacher_channels_last must be true or false, got {channels_last!r}')
    if not isinstance(compile, bool):
        raise ValueError(f'distill.teacher_compile must be true or false, got {compile!r}')


def features_to_float32(feats: Sequence[Tensor]) -> List[Tensor]:
    """Tapped maps as float32 in the default (contiguous) layout; maps that already are stay the same objects."""
    return [f.to(torch.float32, memory_format=torch.contiguous_format) for f in feats]


class TeacherRunner:
    """Calls a frozen teacher without autograd, optionally under autocast, in channels-last layout, compiled.

    YAML (read by FACDModel)::

        distill:
          teacher_amp: ~                 # ~ (float32) | bf16 | fp16
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
    """

    def __init__(self,
                 net_t: nn.Module,
                 amp: Optional[str] = None,
                 channels_last: bool = False,
                 compile: bool = False) -> None:
        check_teacher_options(amp, channels_last, compile)
        self.net = net_t
        self.amp = amp
        self.channels_last = channels_last
        self.compile = compile
        if channels_last:
            net_t.to(memory_format=torch.channels_last)
        self._forward = torch.compile(net_t) if compile else net_t

    def extra_repr(self) -> str:
        return f'amp={self.amp}, channels_last={self.channels_last}, compile={self.compile}'

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
        return out.to(torch.float32, memory_format=torch.contiguous_format)
