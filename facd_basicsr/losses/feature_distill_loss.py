"""Conventional (FitNet-style) feature distillation: match adapted student features to teacher features."""
from typing import Dict, Optional, Sequence, Tuple

from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor

from facd_basicsr.losses.feature_loss_base import FeatureLoss
from facd_basicsr.losses.feature_loss_util import (centre_maps, check_bool, check_choice, check_features, check_number,
                                                   check_tap_weights, reduce_taps, resolve_tap_weights)
from facd_basicsr.registry import register_once

_CRITERIA = ('l1', 'l2')


@register_once(LOSS_REGISTRY)
class FeatureDistillLoss(FeatureLoss):
    """Conventional feature distillation (the "Euclidean FD" baseline FACD is compared with).

    Paper: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015 (student hint through a regressor, here the
    DR adapter); used as the "conventional FD" baseline by Moon et al., FACD, IEEE Access 2023 (arXiv 2211.15951).

    ``L_ij = mean over (C, H, W) of |a_i - t_i|`` (``criterion='l1'``) or ``(a_i - t_i)^2`` (``'l2'``), with
    ``a = DR_j(F^S_ij)`` and ``t = F^T_ij``; ``loss = loss_weight * sum_j w_j * (1/B) * sum_i g_i * L_ij``.
    This is the ratio form of :class:`FACDContrastiveLoss` without its denominator, so the two differ only in the
    negatives. The per-sample gate ``g`` is our addition (it lets FD share FACD's adaptive gate in ablations).

    Example (the key under ``train`` is read by FACDModel)::

        feature_opt:
          type: FeatureDistillLoss
          loss_weight: !!float 1e-1
          tap_weights: ~          # one weight per tap, ~ = all 1.0
          criterion: l1           # l1 | l2
          centre: false           # subtract each map's per-channel spatial mean first

    Args:
        loss_weight (float): Global factor of the loss. Default: 1.0.
        tap_weights (Sequence[float] | None): Weight w_j of each tap; None gives 1.0 to every tap. Default: None.
        criterion (str): 'l1' | 'l2'. Default: 'l1'.
        centre (bool): Compare the maps after subtracting each one's spatial mean per channel, so the loss never
            pulls on a patch's mean feature (its flat colour); our option (docs/losses.md). Default: False.
    """

    uses_adapter = True

    def __init__(self,
                 loss_weight: float = 1.0,
                 tap_weights: Optional[Sequence[float]] = None,
                 criterion: str = 'l1',
                 centre: bool = False) -> None:
        super().__init__()
        self.loss_weight = check_number('loss_weight', loss_weight)
        self.tap_weights = check_tap_weights(tap_weights)
        self.criterion = check_choice('criterion', criterion, _CRITERIA)
        self.centre = check_bool('centre', centre)

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, tap_weights={self.tap_weights}, criterion={self.criterion!r}, '
                f'centre={self.centre}')

    def forward(self,
                student_feats: Sequence[Tensor],
                teacher_feats: Sequence[Tensor],
                weight: Optional[Tensor] = None,
                negative_feats: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Feature-matching loss summed over taps (any batch size >= 1).

        Args:
            student_feats (Sequence[Tensor]): adapted student features, one (B, C, H, W) map per tap.
            teacher_feats (Sequence[Tensor]): teacher features of the same shapes; treated as constants.
            weight (Tensor | None): per-sample gate g of shape (B, ) in [0, 1]; None means all ones.
            negative_feats (None): FD has no negatives; anything else raises a ValueError.

        Returns:
            tuple[Tensor, dict]: the scalar loss, and detached logging terms ``tap{j}`` ((1/B) sum_i g_i L_ij) and
            ``d_pos`` (mean of L_ij over taps and all samples, ungated).
        """
        self.reject_negative_feats(negative_feats)
        check_features(student_feats, teacher_feats, same_channels=True)
        resolve_tap_weights(self.tap_weights, len(student_feats))
        per_tap = []
        for student, teacher in zip(student_feats, teacher_feats):
            diff = student - teacher.detach()
            if self.centre:
                diff = centre_maps(diff)  # = centred student - centred teacher
            per_tap.append((diff.abs() if self.criterion == 'l1' else diff.pow(2)).flatten(1).mean(1))
        loss, terms = reduce_taps(per_tap, weight, self.tap_weights, self.loss_weight)
        terms['d_pos'] = sum(p.detach().mean() for p in per_tap) / len(per_tap)
        return loss, terms
