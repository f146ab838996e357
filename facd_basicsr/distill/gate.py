"""The adaptive gate: which training patches are distilled, and how much.

Paper: the FACD abstract says "adaptive distillation performs distillation selectively depending on the conditions
of the training patches"; the criterion is not published. Ours, all our reading, one ``distill.gate.mode`` each:

- ``teacher_better``: g_i = 1 iff PSNR(SR^T_i) > PSNR(SR^S_i) + margin (the teacher's advantage, in dB);
- ``top_fraction``: g_i = 1 for the ceil(fraction * N) patches with the largest teacher advantage;
- ``advantage_ramp``: a soft weight, g_i = clamp((advantage_i - margin) / width, 0, 1), 0 where the teacher is not
  ahead by the margin and 1 where it is ahead by margin + width;
- ``textured``: g_i = 1 iff the ground-truth patch's luma standard deviation is at least ``min_std`` 8-bit levels
  (flat patches, which both networks restore well, are not distilled);
- ``always``: g_i = 1 (FACD without its adaptive part).
"""
import math
from typing import Optional

import torch

GATE_MODES = ('teacher_better', 'top_fraction', 'advantage_ramp', 'textured', 'always')
# the keys each mode reads, with their defaults; a key given to a mode that does not read it is refused
MODE_KEYS = {
    'teacher_better': {'margin': 0.},
    'top_fraction': {'fraction': 0.5},
    'advantage_ramp': {'margin': 0., 'width': 1.},
    'textured': {'min_std': 10.},
    'always': {},
}
LUMA = (65.481, 128.553, 24.966)  # RGB [0, 1] -> Y in 8-bit levels (ITU-R BT.601, as BasicSR's rgb2ycbcr)


def patch_psnr(img: torch.Tensor, ref: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of each patch of (N, C, H, W) images in [0, 1] (``img`` is clamped first); shape (N,)."""
    mse = (img.clamp(0, 1) - ref).pow(2).flatten(1).mean(1)
    return -10. * torch.log10(mse + eps)


def patch_luma_std(gt: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the luma of each (N, 3, H, W) RGB patch in [0, 1], in 8-bit levels; shape (N,)."""
    weights = gt.new_tensor(LUMA).view(1, 3, 1, 1)
    return (gt * weights).sum(1).flatten(1).std(1)


def gate_options(opt: Optional[dict]) -> dict:
    """``distill.gate`` with the mode's defaults filled in; unknown modes and keys the mode ignores raise."""
    opt = dict(opt or {})
    mode = opt.pop('mode', 'teacher_better')
    if mode not in GATE_MODES:
        raise ValueError(f'distill.gate.mode {mode!r} is not supported. Supported modes: {", ".join(GATE_MODES)}')
    ignored = sorted(set(opt) - set(MODE_KEYS[mode]))
    if ignored:
        known = ', '.join(MODE_KEYS[mode]) or 'none'
        raise ValueError(f'distill.gate: mode {mode} does not use {ignored} (its keys: {known})')
    return dict(MODE_KEYS[mode], mode=mode, **opt)


class AdaptiveGate:
    """Per-patch gate g_i in [0, 1] (no gradient); the modes are listed in the module docstring.

    Args:
        mode (str): one of :data:`GATE_MODES`. Default: 'teacher_better'.
        margin (float): dB the teacher must be ahead by ('teacher_better', 'advantage_ramp'). Default: 0.
        fraction (float): share of the batch kept, in (0, 1] ('top_fraction'). Default: 0.5.
        width (float): dB over which 'advantage_ramp' rises from 0 to 1, > 0. Default: 1.
        min_std (float): luma std, 8-bit levels, from which a patch counts as textured ('textured'). Default: 10.

    After each call, :attr:`advantage` holds PSNR(SR^T_i) - PSNR(SR^S_i) in dB, shape (N,), when the mode computed
    it (or when ``track_advantage`` is set, e.g. to log its distribution under 'always'), else None.
    """

    def __init__(self, mode: str = 'teacher_better', margin: float = 0., fraction: float = 0.5, width: float = 1.,
                 min_std: float = 10., track_advantage: bool = False) -> None:
        if mode not in GATE_MODES:
            raise ValueError(f'distill.gate.mode {mode!r} is not supported. Supported modes: {", ".join(GATE_MODES)}')
        if not 0. < fraction <= 1.:
            raise ValueError(f'distill.gate.fraction must be in (0, 1], got {fraction}')
        if not width > 0.:
            raise ValueError(f'distill.gate.width must be > 0 dB, got {width}')
        if not min_std >= 0.:
            raise ValueError(f'distill.gate.min_std must be >= 0 (8-bit luma levels), got {min_std}')
        self.mode = mode
        self.margin = float(margin)
        self.fraction = float(fraction)
        self.width = float(width)
        self.min_std = float(min_std)
        self.track_advantage = track_advantage
        self.advantage: Optional[torch.Tensor] = None

    @property
    def always_on(self) -> bool:
        return self.mode == 'always'

    @property
    def uses_advantage(self) -> bool:
        return self.mode in ('teacher_better', 'top_fraction', 'advantage_ramp')

    @torch.no_grad()
    def __call__(self, sr_student: torch.Tensor, sr_teacher: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Gate of shape (N,), float in [0, 1], from (N, C, H, W) student output, teacher output and ground truth."""
        n = gt.shape[0]
        self.advantage = None
        if self.uses_advantage or self.track_advantage:
            self.advantage = patch_psnr(sr_teacher, gt) - patch_psnr(sr_student.detach(), gt)
        if self.always_on:
            return gt.new_ones(n)
        if self.mode == 'textured':
            return (patch_luma_std(gt) >= self.min_std).to(gt.dtype)
        if self.mode == 'teacher_better':
            return (self.advantage > self.margin).to(gt.dtype)
        if self.mode == 'advantage_ramp':
            return ((self.advantage - self.margin) / self.width).clamp(0, 1).to(gt.dtype)
        keep = self.advantage.topk(max(1, math.ceil(self.fraction * n))).indices
        return gt.new_zeros(n).index_fill_(0, keep, 1.)
