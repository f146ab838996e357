"""How the student trains: autocast (bf16 / fp16 with a grad scaler), channels-last, ``torch.compile``, TF32 and
gradient clipping by norm.

These are the student-side switches that traiNNer-redux and neosr offer and BasicSR's ``SRModel`` lacks. FACDModel
reads them from ``train:`` and validates them at start-up; each is off by default, and all off reproduces the plain
float32 step bit for bit::

    train:
      amp: ~                 # ~ (float32) | bf16 | fp16 (fp16 uses a torch.amp.GradScaler)
      grad_scaler: {}        # fp16 only: GradScaler arguments init_scale, growth_factor, backoff_factor,
                             #   growth_interval
      channels_last: false   # student (and adapters) in torch.channels_last memory format
      compile: false         # true, or torch.compile arguments {mode, backend, fullgraph, dynamic}
      tf32: ~                # ~ leaves torch's defaults; true allows TF32 in CUDA matmuls and cuDNN convolutions,
                             #   false forbids both (process-wide: the teacher is affected too)
      grad_clip_norm: ~      # clip the global gradient norm of student + adapters to this value (> 0)
      compile_feature_loss: false   # true, or torch.compile arguments: the feature loss (train.feature_opt) compiled;
                             #   its elementwise passes fuse (the contrastive loss forward + backward ran 4x faster
                             #   on our CPU, benchmarks/levers.py), results equal to float32 rounding, not bit for bit

What runs in which precision: only the student's forward runs under autocast (its backward follows the dtypes the
forward recorded). Its output is cast to float32 before any loss; the tapped maps are float32 copies
(:class:`~facd_basicsr.distill.feature_taps.FeatureTaps`), and the adapters, the gate and every loss run in float32.
The weights, their gradients and the optimizer state stay float32 (autocast, not a half-precision model), so
checkpoints are the plain float32 BasicSR networks they always were. Validation runs without autocast.

With fp16 the loss is scaled before the backward and the gradients unscaled before clipping and the optimizer step;
a step whose gradients are not finite is skipped and the scale lowered (GradScaler's dynamic scaling). The scaler's
state is saved in ``models/net_adapter_<iter>.pth`` and restored on resume.
"""
from contextlib import nullcontext
from typing import Dict, Iterable, Optional

import torch
from torch import Tensor, nn

STUDENT_KEYS = ('amp', 'grad_scaler', 'channels_last', 'compile', 'tf32', 'grad_clip_norm', 'compile_feature_loss')
AMP_DTYPES = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
SCALER_KEYS = ('init_scale', 'growth_factor', 'backoff_factor', 'growth_interval')
COMPILE_KEYS = ('mode', 'backend', 'fullgraph', 'dynamic')


def _is_bool(value) -> bool:
    return isinstance(value, bool)


def channels_last_option(train_opt: Optional[dict]) -> bool:
    """``train.channels_last`` (False when absent), refused unless it is a bool."""
    value = (train_opt or {}).get('channels_last', False)
    if not _is_bool(value):
        raise ValueError(f'train.channels_last must be true or false, got {value!r}')
    return value


def compile_option(value, option: str = 'train.compile') -> Optional[dict]:
    """``train.compile`` (or ``option``) as ``torch.compile`` keyword arguments, or None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(COMPILE_KEYS))
        if unknown:
            raise ValueError(f'{option}: unknown key(s) {unknown}. Known: {", ".join(COMPILE_KEYS)}')
        return dict(value)
    raise ValueError(f'{option} must be true, false or a dict of torch.compile arguments '
                     f'({", ".join(COMPILE_KEYS)}), got {value!r}')


def _check_amp(amp, device: torch.device) -> None:
    if isinstance(amp, bool) or amp not in AMP_DTYPES:
        raise ValueError(f'train.amp {amp!r} is not supported. Supported: ~ (float32), bf16, fp16')
    if amp is None:
        return
    if device.type == 'cuda' and amp == 'bf16' and not torch.cuda.is_bf16_supported():
        raise ValueError(f'train.amp bf16: this GPU ({torch.cuda.get_device_name(device)}) does not support bfloat16; '
                         'use train.amp: fp16')
    # one tiny convolution under autocast: a device/dtype pair this torch cannot autocast fails here, at start-up
    try:
        conv = nn.Conv2d(1, 1, 1).to(device)
        with torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp]):
            out = conv(torch.ones(1, 1, 2, 2, device=device))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f'train.amp {amp}: autocast to {amp} does not run on {device.type} with torch '
                         f'{torch.__version__} ({error}); use train.amp: ~ here') from error
    if out.dtype != AMP_DTYPES[amp]:
        raise ValueError(f'train.amp {amp}: torch {torch.__version__} does not autocast convolutions to {amp} on '
                         f'{device.type} (got {out.dtype}); use train.amp: ~ here')


def _scaler_kwargs(value, amp) -> dict:
    if value in (None, {}):
        return {}
    if amp != 'fp16':
        raise ValueError(f'train.grad_scaler is used only with train.amp: fp16 (train.amp is {amp!r}); remove it')
    if not isinstance(value, dict):
        raise ValueError(f'train.grad_scaler must be a dict with keys {", ".join(SCALER_KEYS)}, got {value!r}')
    unknown = sorted(set(value) - set(SCALER_KEYS))
    if unknown:
        raise ValueError(f'train.grad_scaler: unknown key(s) {unknown}. Known: {", ".join(SCALER_KEYS)}')
    return dict(value)


def _clip_option(value) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f'train.grad_clip_norm must be a number > 0 (or ~ for no clipping), got {value!r}')
    return float(value)


def set_tf32(tf32: Optional[bool]) -> None:
    """Allow (True) or forbid (False) TF32 in CUDA matmuls and cuDNN convolutions; None leaves torch's defaults."""
    if tf32 is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


class StudentRuntime:
    """The student's forward (autocast, layout, compile) and its backward + optimizer step (scaler, clipping).

    Args:
        train_opt (dict): the option file's ``train`` section; the keys of ``STUDENT_KEYS`` are read (see the module
            docstring), everything else is ignored.
        device (torch.device): the training device (autocast's device type; fp16/bf16 support is probed on it).

    Raises:
        ValueError: naming the ``train.*`` option that holds a bad value or that this device / torch cannot run.
    """

    def __init__(self, train_opt: dict, device: torch.device) -> None:
        train_opt = train_opt or {}
        self.device = torch.device(device)
        self.amp = train_opt.get('amp')
        _check_amp(self.amp, self.device)
        self.dtype = AMP_DTYPES[self.amp]
        scaler_kwargs = _scaler_kwargs(train_opt.get('grad_scaler'), self.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, **scaler_kwargs) if self.amp == 'fp16' else None
        self.channels_last = channels_last_option(train_opt)
        self.compile_kwargs = compile_option(train_opt.get('compile', False))
        self.loss_compile_kwargs = compile_option(train_opt.get('compile_feature_loss', False),
                                                  'train.compile_feature_loss')
        self.tf32 = train_opt.get('tf32')
        if self.tf32 is not None and not _is_bool(self.tf32):
            raise ValueError(f'train.tf32 must be true, false or ~ (torch defaults), got {self.tf32!r}')
        self.grad_clip_norm = _clip_option(train_opt.get('grad_clip_norm'))
        set_tf32(self.tf32)
        self._compiled = None  # (net, torch.compile(net)), made at the first training forward

    @property
    def compiled(self) -> bool:
        """Whether the training forward is compiled (student taps must then be persistent)."""
        return self.compile_kwargs is not None

    def __repr__(self) -> str:
        return (f'StudentRuntime(amp={self.amp}, channels_last={self.channels_last}, compile={self.compile_kwargs}, '
                f'tf32={self.tf32}, grad_clip_norm={self.grad_clip_norm})')

    def prepare_feature_loss(self, loss: Optional[nn.Module]) -> None:
        """With ``compile_feature_loss``, make ``loss`` run its ``forward`` compiled (the module, its attributes and
        its type stay; a second gate mode or shape compiles once more)."""
        if loss is not None and self.loss_compile_kwargs is not None:
            loss.forward = torch.compile(loss.forward, **self.loss_compile_kwargs)

    # ------------------------------------------------------------------ forward
    def autocast(self):
        """The autocast context of the student's forward (a no-op context without ``amp``)."""
        if self.amp is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _callable(self, net: nn.Module):
        if self.compile_kwargs is None:
            return net
        if self._compiled is None or self._compiled[0] is not net:
            self._compiled = (net, torch.compile(net, **self.compile_kwargs))
        return self._compiled[1]

    def forward(self, net: nn.Module, lq: Tensor) -> Tensor:
        """Training forward of the student (N, C, s*H, s*W) from (N, C, H, W); float32, contiguous, with autograd."""
        if self.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            out = self._callable(net)(lq)
        if out.dtype != torch.float32 or not out.is_contiguous():
            out = out.to(torch.float32, memory_format=torch.contiguous_format)
        return out

    # ------------------------------------------------------------------ backward and step
    def backward_and_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> Optional[Tensor]:
        """``loss.backward()`` and ``optimizer.step()``, through the grad scaler (fp16) and the norm clipping.

        Returns:
            Tensor | None: the global gradient norm of the optimizer's parameters before clipping (unscaled), when
            ``grad_clip_norm`` is set; else None.
        """
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
        grad_norm = None
        if self.grad_clip_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            grad_norm = clip_grad_norm(_parameters(optimizer), self.grad_clip_norm)
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped when the gradients are not finite
            self.scaler.update()
        return grad_norm

    @property
    def scale(self) -> Optional[float]:
        """The grad scaler's current scale (fp16), else None."""
        return None if self.scaler is None else float(self.scaler.get_scale())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict:
        """What a resume needs: the grad scaler's state (empty without fp16)."""
        return {} if self.scaler is None else {'grad_scaler': self.scaler.state_dict()}

    def load_state_dict(self, state: Optional[Dict]) -> None:
        """Restore :meth:`state_dict`. A saved scaler without fp16 now, or fp16 now without a saved scaler, is
        allowed (the amp setting may change at a resume): the scaler then starts afresh or the state is unused."""
        state = state or {}
        if self.scaler is not None and state.get('grad_scaler'):
            self.scaler.load_state_dict(state['grad_scaler'])


def _parameters(optimizer: torch.optim.Optimizer) -> Iterable[Tensor]:
    return [p for group in optimizer.param_groups for p in group['params']]


def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients of ``params`` so that their global L2 norm is at most ``max_norm``; returns the norm
    before clipping (``torch.nn.utils.clip_grad_norm_``, parameters without a gradient skipped)."""
    return torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
