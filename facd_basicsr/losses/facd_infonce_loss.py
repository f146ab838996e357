"""An InfoNCE form of FACD's feature-domain contrastive loss (ours: the paper draws no softmax)."""
from typing import Optional, Sequence, Tuple

from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor

from facd_basicsr.losses.contrastive_negatives import ContrastiveFeatureLoss, per_sample_mean
from facd_basicsr.losses.feature_loss_util import ShiftedChannelDot, channel_normalize, check_number
from facd_basicsr.registry import register_once


@register_once(LOSS_REGISTRY)
class FACDInfoNCELoss(ContrastiveFeatureLoss):
    """Per-position InfoNCE between adapted student features and teacher features, with in-batch negatives.

    Paper (the method it varies): Moon et al., "Feature-domain Adaptive Contrastive Distillation for Efficient
    Single Image Super-Resolution", IEEE Access 11, 2023 (arXiv 2211.15951). The InfoNCE form is OUR variant; the
    paper's figure shows a ratio of distances (``FACDContrastiveLoss``).

    At every position (h, w) of tap j: the cosine similarities (over channels) of the anchor ``a_i`` with the
    positive ``t_i`` and the K negatives (:mod:`facd_basicsr.losses.contrastive_negatives`: ``batch``, ``student``
    or ``degraded``), divided by ``temperature``, cross-entropy with the positive as target, averaged over (H, W):
    ``L_ij``. Reduction: ``loss = loss_weight * sum_j w_j * (1/B) * sum_i g_i * L_ij``. Logged ``d_pos`` / ``d_neg``
    are 1 - the mean cosine similarity to the positive / to the negatives.

    Memory is O(B*C*H*W + B*K*H*W) per tap (the logits); time is O(B*K*C*H*W).

    Example::

        feature_opt:
          type: FACDInfoNCELoss
          loss_weight: 0.01       # the loss is about log(K + 1) per tap, not a ratio near 0.2
          temperature: 0.1
          negatives: batch        # batch | student | degraded
          num_negatives: ~

    Args:
        loss_weight (float): Global factor of the loss. Default: 1.0.
        tap_weights (Sequence[float] | None): Weight w_j of each tap; None gives 1.0 to every tap. Default: None.
        temperature (float): Softmax temperature tau > 0. Default: 0.1.
        num_negatives (int | None): K >= 1 negatives per anchor; None means B - 1 ('degraded': 1). Default: None.
        negatives (str): 'batch' | 'student' | 'degraded'. Default: 'batch'.
        eps (float): > 0, added to the norms of the C-vectors. Default: 1e-6.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 tap_weights: Optional[Sequence[float]] = None,
                 temperature: float = 0.1,
                 num_negatives: Optional[int] = None,
                 negatives: str = 'batch',
                 eps: float = 1e-6) -> None:
        super().__init__(loss_weight, tap_weights, negatives, num_negatives, eps)
        self.temperature = check_number('temperature', temperature, strict=True)

    def extra_repr(self) -> str:
        return (f'loss_weight={self.loss_weight}, tap_weights={self.tap_weights}, temperature={self.temperature}, '
                f'negatives={self.negatives!r}, num_negatives={self.num_negatives}, eps={self.eps}')

    def tap_terms(self, anchor: Tensor, teacher: Tensor, negatives: Optional[Tensor],
                  shifts: Tuple[int, ...]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample cross-entropy, 1 - cos to the positive, 1 - mean cos to the negatives; each (B, )."""
        a_hat, t_hat = channel_normalize(anchor, self.eps), channel_normalize(teacher, self.eps)
        p_hat = self.pool(a_hat, t_hat, None if negatives is None else channel_normalize(negatives, self.eps))
        cos = ShiftedChannelDot.apply(a_hat, t_hat, p_hat, shifts)  # (B, 1 + K, H, W), column 0 = positive
        scaled = cos / self.temperature
        loss = per_sample_mean(scaled.logsumexp(1) - scaled[:, 0])
        cos = cos.detach()
        return loss, 1 - per_sample_mean(cos[:, 0]), 1 - per_sample_mean(cos[:, 1:])
