"""FAKD: L1 distance between the spatial-affinity matrices of student and teacher features."""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor

from facd_basicsr.losses.feature_loss_base import FeatureLoss
from facd_basicsr.losses.feature_loss_util import (channel_normalize, check_features, check_number, check_tap_weights,
                                                   reduce_taps, resolve_tap_weights)
from facd_basicsr.registry import register_once

# FAKD's official code adds this constant to the per-position channel norm.
_NORM_EPS = 1e-7


def pooled_grid(height: int, width: int, max_positions: Optional[int]) -> Tuple[int, int]:
    """Grid (h, w) with ``h * w <= max_positions``, close to the aspect ratio of (height, width), never upsampled.

    Returns (height, width) itself when it already fits (or ``max_positions`` is None). Otherwise
    ``h = floor(sqrt(max_positions * height / width))`` and ``w = max_positions // h``, each clipped to the map.
    """
    if max_positions is None or height * width <= max_positions:
        return height, width
    grid_h = min(height, max(1, math.isqrt(max_positions * height // width)))
    grid_w = min(width, max(1, max_positions // grid_h))
    grid_h = min(height, max_positions // grid_w)  # grows back when the width was clipped
    return grid_h, grid_w


def spatial_affinity(feat: Tensor) -> Tensor:
    """Cosine similarity between the C-vectors of every pair of positions: (B, C, H, W) -> (B, H*W, H*W)."""
    unit = channel_normalize(feat, _NORM_EPS).flatten(2)
    return torch.bmm(unit.transpose(1, 2), unit)


@register_once(LOSS_REGISTRY)
class FAKDAffinityLoss(FeatureLoss):
    """Feature-affinity knowledge distillation (spatial affinity), the FAKD baseline.

    Paper: He et al., "FAKD: Feature-Affinity Based Knowledge Distillation for Efficient Image Super-Resolution",
    ICIP 2020.

    Per sample i and tap j, the (C, N) feature (N = H*W positions) has each position's C-vector divided by its L2
    norm; the affinity is ``A = F^T F`` of shape (N, N) and ``L_ij = mean |A^S_i - A^T_i|``. Student features are used
    raw (no adapter): the affinity does not depend on the channel count, so C_s may differ from C_t.
    ``loss = loss_weight * sum_j w_j * (1/B) * sum_i g_i * L_ij``.

    OUR ADDITIONS, not in FAKD: (1) memory is O(B*N^2), so when H*W > ``max_positions`` both maps are first
    adaptive-average-pooled to the grid of :func:`pooled_grid` (FAKD uses the full resolution; an issue in its
    repository reports the affinity matrix as too big); (2) the per-sample gate ``g``. FAKD's own
    feature weight was 10 (with 0.5 L1 to GT + 0.5 L1 to the teacher output).

    Example (the key under ``train`` is read by FACDModel)::

        feature_opt:
          type: FAKDAffinityLoss
          loss_weight: !!float 10
          tap_weights: ~          # one weight per tap, ~ = all 1.0
          max_positions: 1024     # pool larger maps to at most this many positions; ~ = never pool

    Args:
        loss_weight (float): Global factor of the loss. Default: 1.0.
        tap_weights (Sequence[float] | None): Weight w_j of each tap; None gives 1.0 to every tap. Default: None.
        max_positions (int | None): Largest H*W used for the affinity (>= 1); None disables pooling. Default: 1024.
    """

    uses_adapter = False

    def __init__(self,
                 loss_weight: float = 1.0,
                 tap_weights: Optional[Sequence[float]] = None,
                 max_positions: Optional[int] = 1024) -> None:
        super().__init__()
        self.loss_weight = check_number('loss_weight', loss_weight)
        self.tap_weights = check_tap_weights(tap_weights)
        if max_positions is not None and (isinstance(max_positions, bool) or not isinstance(max_positions, int)
                                          or max_positions < 1):
            raise ValueError(f'max_positions must be an integer >= 1 or None (no pooling), got {max_positions!r}.')
        self.max_positions = max_positions

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, tap_weights={self.tap_weights}, max_positions={self.max_positions}'

    def _tap_loss(self, student: Tensor, teacher: Tensor) -> Tensor:
        """Per-sample mean |A^S - A^T| at one tap, shape (B, )."""
        grid = pooled_grid(student.shape[2], student.shape[3], self.max_positions)
        if grid != tuple(student.shape[2:]):
            student, teacher = F.adaptive_avg_pool2d(student, grid), F.adaptive_avg_pool2d(teacher, grid)
        with torch.no_grad():
            target = spatial_affinity(teacher)
        return (spatial_affinity(student) - target).abs().flatten(1).mean(1)

    def forward(self,
                student_feats: Sequence[Tensor],
                teacher_feats: Sequence[Tensor],
                weight: Optional[Tensor] = None,
                negative_feats: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Affinity loss summed over taps (any batch size >= 1).

        Args:
            student_feats (Sequence[Tensor]): raw student features, one (B, C_s, H, W) map per tap.
            teacher_feats (Sequence[Tensor]): teacher features (B, C_t, H, W), same B, H, W; treated as constants.
            weight (Tensor | None): per-sample gate g of shape (B, ) in [0, 1]; None means all ones.
            negative_feats (None): FAKD has no negatives; anything else raises a ValueError.

        Returns:
            tuple[Tensor, dict]: the scalar loss and detached logging terms ``tap{j}`` ((1/B) sum_i g_i L_ij).
        """
        self.reject_negative_feats(negative_feats)
        check_features(student_feats, teacher_feats, same_channels=False)
        resolve_tap_weights(self.tap_weights, len(student_feats))
        per_tap = [self._tap_loss(s, t.detach()) for s, t in zip(student_feats, teacher_feats)]
        return reduce_taps(per_tap, weight, self.tap_weights, self.loss_weight)
