"""FACD's feature-domain contrastive loss, ratio form: the distance of the adapted student features to the teacher's
(positive) over their mean distance to negatives (other patches of the batch, or the pools of
:mod:`facd_basicsr.losses.contrastive_negatives`). The InfoNCE form is :mod:`facd_basicsr.losses.facd_infonce_loss`."""
from typing import Optional, Sequence, Tuple

from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor

from facd_basicsr.losses.contrastive_negatives import ContrastiveFeatureLoss, per_sample_mean
from facd_basicsr.losses.feature_loss_util import (ShiftedL1Mean, centre_maps, channel_normalize, check_bool,
                                                   check_choice, shifted_mean, shifted_spread)
from facd_basicsr.registry import register_once

_DISTANCES = ('l1', 'l2', 'cosine')


def _ratio_distances(anchor: Tensor, teacher: Tensor, pool: Tensor, distance: str, shifts: Tuple[int, ...],
                     eps: float) -> Tuple[Tensor, Tensor]:
    """``d(a_i, t_i)`` and ``(1/K) sum_s d(a_i, p_{(i+s) mod B})``, both (B, ), in O(B*C*H*W) saved memory.

    ``pool`` holds the negatives (teacher features, or detached student or degraded-input teacher features), all
    constants. l2 and cosine use exact decompositions around the pool mean ``m_i = (1/K) sum_s p_{(i+s) mod B}``;
    l1 uses :class:`ShiftedL1Mean`, which recomputes each shift in backward.
    """
    size = anchor[0].numel()
    if distance == 'l1':
        return per_sample_mean((anchor - teacher).abs()), ShiftedL1Mean.apply(anchor, pool, shifts)
    if distance == 'l2':
        # mean_s ||a - p_s||^2 = ||a - m||^2 + mean_s ||p_s - m||^2   (sums over C, H, W; then / (C*H*W))
        mean_p = shifted_mean(pool, shifts)
        d_neg = per_sample_mean((anchor - mean_p).pow(2)) + shifted_spread(pool, mean_p, shifts) / size
        return per_sample_mean((anchor - teacher).pow(2)), d_neg
    if distance == 'cosine':
        # mean_s (1 - mean_hw <a^, p^_s>) = 1 - mean_hw <a^, mean_s p^_s>   (a^: unit C-vector per position)
        a_hat, t_hat = channel_normalize(anchor, eps), channel_normalize(teacher, eps)
        p_hat = t_hat if pool is teacher else channel_normalize(pool, eps)
        d_pos = 1 - per_sample_mean((a_hat * t_hat).sum(1))
        d_neg = 1 - per_sample_mean((a_hat * shifted_mean(p_hat, shifts)).sum(1))
        return d_pos, d_neg
    raise ValueError(f'Unsupported distance {distance!r}. Supported: {", ".join(_DISTANCES)}.')


def _history_distances(anchor: Tensor, teacher: Tensor, pool: Tensor, distance: str,
                       eps: float) -> Tuple[Tensor, Tensor]:
    """``d(a_i, t_i)`` and ``(1/M) sum_m d(a_i, p_mi)`` for a same-patch pool (M, B, C, H, W), both (B, ).

    l2 and cosine go through the pool mean as in :func:`_ratio_distances`; l1 sums the M distances, which saves
    O(M*B*C*H*W) for backward (M is small: the history pool's copies).
    """
    if distance == 'l1':
        d_neg = sum(per_sample_mean((anchor - p).abs()) for p in pool.unbind(0)) / pool.shape[0]
        return per_sample_mean((anchor - teacher).abs()), d_neg
    if distance == 'l2':
        mean_p = pool.mean(0)
        spread = per_sample_mean((pool - mean_p).pow(2).mean(0))
        return per_sample_mean((anchor - teacher).pow(2)), per_sample_mean((anchor - mean_p).pow(2)) + spread
    if distance == 'cosine':
        a_hat, t_hat = channel_normalize(anchor, eps), channel_normalize(teacher, eps)
        p_hat = channel_normalize(pool.flatten(0, 1), eps).view_as(pool).mean(0)
        return 1 - per_sample_mean((a_hat * t_hat).sum(1)), 1 - per_sample_mean((a_hat * p_hat).sum(1))
    raise ValueError(f'Unsupported distance {distance!r}. Supported: {", ".join(_DISTANCES)}.')


@register_once(LOSS_REGISTRY)
class FACDContrastiveLoss(ContrastiveFeatureLoss):
    """Feature-domain contrastive distillation loss of FACD (ratio form), with in-batch teacher negatives by default.

    Paper: Moon et al., "Feature-domain Adaptive Contrastive Distillation for Efficient Single Image
    Super-Resolution", IEEE Access 11, 2023 (arXiv 2211.15951).

    For sample i and tap j, anchor ``a = F^S_ij`` (student feature after the DR adapter), positive ``t_i = F^T_ij``,
    negatives by ``negatives`` (:mod:`facd_basicsr.losses.contrastive_negatives`):
    ``L_ij = d(a_i, t_i) / (mean over the negatives p of d(a_i, p) + eps)``; with ``negatives: history`` the mean
    runs over the M same-patch maps of the history pool (OUR READING of DCKD, AAAI 2025, in the feature domain).

    Distances d: ``'l1'`` mean |u - v| over (C, H, W); ``'l2'`` mean (u - v)^2 over (C, H, W); ``'cosine'`` 1 - mean
    over (H, W) of the cosine similarity of the C-vectors, each divided by (its norm + eps).

    Reduction: ``loss = loss_weight * sum_j w_j * (1/B) * sum_i g_i * L_ij`` (divided by B, not by sum g).

    OUR READING, not published: the FACD authors released no code; only the abstract and the framework figure
    (anchor, positive, negative, d_pos, d_neg; no softmax drawn) are certain. The ratio formula (the CSD / AECR-Net
    contrastive-regularisation form), the distances, the negative pools, K and ``normalize`` are ours
    (docs/method.md).

    Memory is O(B*C*H*W) per tap for any K (history: O(M*B*C*H*W) with l1); time is O(B*K*C*H*W).

    Example (the key under ``train`` is read by FACDModel)::

        feature_opt:
          type: FACDContrastiveLoss
          loss_weight: 0.3
          tap_weights: ~          # one weight per tap, ~ = all 1.0
          distance: l2            # l1 | l2 | cosine
          negatives: batch        # batch | student | degraded | history
          num_negatives: ~        # K, ~ = batch size - 1 (degraded: 1; history: leave unset)
          eps: !!float 1e-6
          normalize: false        # unit C-vectors before the distance (l1 / l2 only)
          centre: false           # subtract each map's per-channel spatial mean first

    Args:
        loss_weight (float): Global factor of the loss. Default: 1.0.
        tap_weights (Sequence[float] | None): Weight w_j of each tap; None gives 1.0 to every tap. Default: None.
        distance (str): 'l1' | 'l2' | 'cosine'. Default: 'l1'.
        num_negatives (int | None): K >= 1 negatives per anchor (see the base class). Default: None.
        negatives (str): 'batch' | 'student' | 'degraded' | 'history'. Default: 'batch'.
        eps (float): > 0, added to the ratio's denominator and to the norms of the cosine. Default: 1e-6.
        normalize (bool): Divide student and teacher C-vectors by their L2 norm (+ eps) at every position before an
            l1 or l2 distance. Default: False.
        centre (bool): Subtract each map's (anchor, teacher, negatives) spatial mean per channel before any
            normalisation and distance, so the loss never pulls on a patch's mean feature (its flat colour); our
            option (docs/losses.md). Default: False.
        form (str): 'ratio' only: kept so that option files written for the one-class loss still load; the InfoNCE
            form is its own loss, ``FACDInfoNCELoss``. Default: 'ratio'.

    Raises:
        ValueError: a bad value; the message names the key.
    """

    NEGATIVES = ('batch', 'student', 'degraded', 'history')

    def __init__(self,
                 loss_weight: float = 1.0,
                 tap_weights: Optional[Sequence[float]] = None,
                 distance: str = 'l1',
                 num_negatives: Optional[int] = None,
                 negatives: str = 'batch',
                 eps: float = 1e-6,
                 normalize: bool = False,
                 form: str = 'ratio',
                 centre: bool = False) -> None:
        super().__init__(loss_weight, tap_weights, negatives, num_negatives, eps)
        if form != 'ratio':
            raise ValueError(f'form {form!r}: FACDContrastiveLoss is the ratio form; for InfoNCE use type: '
                             'FACDInfoNCELoss (its options: loss_weight, tap_weights, temperature, negatives, '
                             'num_negatives, eps).')
        self.distance = check_choice('distance', distance, _DISTANCES)
        self.normalize = check_bool('normalize', normalize)
        if self.distance == 'cosine' and self.normalize:
            raise ValueError('normalize does nothing with distance: cosine (cosine already divides the C-vectors by '
                             'their norms). Remove normalize from the options.')
        self.centre = check_bool('centre', centre)

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, tap_weights={self.tap_weights}, distance={self.distance!r}, '
                f'normalize={self.normalize}, centre={self.centre}, negatives={self.negatives!r}, '
                f'num_negatives={self.num_negatives}, eps={self.eps}')

    def tap_terms(self, anchor: Tensor, teacher: Tensor, negatives: Optional[Tensor],
                  shifts: Tuple[int, ...]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample ratio, d_pos and mean negative distance at one tap, each of shape (B, )."""
        if self.centre:
            anchor, teacher = centre_maps(anchor), centre_maps(teacher)
            negatives = None if negatives is None else centre_maps(negatives)
        if self.normalize:
            anchor, teacher = channel_normalize(anchor, self.eps), channel_normalize(teacher, self.eps)
            if negatives is not None:
                negatives = channel_normalize(negatives.flatten(0, -4), self.eps).view_as(negatives)
        if self.negatives == 'history':
            d_pos, d_neg = _history_distances(anchor, teacher, negatives.detach(), self.distance, self.eps)
        else:
            pool = self.pool(anchor, teacher, negatives)
            d_pos, d_neg = _ratio_distances(anchor, teacher, pool, self.distance, shifts, self.eps)
        return d_pos / (d_neg + self.eps), d_pos, d_neg
