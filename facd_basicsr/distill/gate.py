"""The adaptive gate: which training patches are distilled.

Paper: the FACD abstract says "adaptive distillation performs distillation selectively depending on the conditions
of the training patches"; the criterion is not published. Ours compares per-patch PSNR of teacher and student
against the ground truth ('teacher_better'); 'top_fraction' keeps the patches with the largest teacher advantage and
'always' turns the gate off (FACD without its adaptive part).
"""
import math

import torch

GATE_MODES = ('teacher_better', 'top_fraction', 'always')


def patch_psnr(img: torch.Tensor, ref: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of each patch of (N, C, H, W) images in [0, 1] (``img`` is clamped first); shape (N,)."""
    mse = (img.clamp(0, 1) - ref).pow(2).flatten(1).mean(1)
    return -10. * torch.log10(mse + eps)


class AdaptiveGate:
    """Per-patch 0/1 gate g_i (no gradient).

    Args:
        mode (str): 'teacher_better' (g_i = 1 iff PSNR(SR^T_i) > PSNR(SR^S_i) + margin), 'top_fraction' (g_i = 1 for
            the ceil(fraction * N) patches with the largest PSNR(SR^T_i) - PSNR(SR^S_i)) or 'always'.
            Default: 'teacher_better'.
        margin (float): dB the teacher must be ahead by, 'teacher_better' only. Default: 0.
        fraction (float): share of the batch kept, in (0, 1], 'top_fraction' only. Default: 0.5.
    """

    def __init__(self, mode: str = 'teacher_better', margin: float = 0., fraction: float = 0.5) -> None:
        if mode not in GATE_MODES:
            raise ValueError(f'distill.gate.mode {mode!r} is not supported. Supported modes: {", ".join(GATE_MODES)}')
        if not 0. < fraction <= 1.:
            raise ValueError(f'distill.gate.fraction must be in (0, 1], got {fraction}')
        self.mode = mode
        self.margin = float(margin)
        self.fraction = float(fraction)

    @property
    def always_on(self) -> bool:
        return self.mode == 'always'

    @torch.no_grad()
    def __call__(self, sr_student: torch.Tensor, sr_teacher: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Gate of shape (N,), float 0/1, from (N, C, H, W) student output, teacher output and ground truth."""
        n = gt.shape[0]
        if self.always_on:
            return gt.new_ones(n)
        advantage = patch_psnr(sr_teacher, gt) - patch_psnr(sr_student.detach(), gt)
        if self.mode == 'teacher_better':
            return (advantage > self.margin).to(gt.dtype)
        keep = advantage.topk(max(1, math.ceil(self.fraction * n))).indices
        return gt.new_zeros(n).index_fill_(0, keep, 1.)
