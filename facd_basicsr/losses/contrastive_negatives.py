"""The negatives shared by FACD's two contrastive losses (ratio: ``FACDContrastiveLoss``; ``FACDInfoNCELoss``).

The file name does not end in ``_loss.py`` on purpose: the registry scanner skips it, nothing here is registered.

Pools of negatives, by ``negatives``:

- ``'batch'`` (default): teacher features ``t_k`` of the other patches ``k = (i + s) mod B``, ``s = 1..K``;
- ``'student'``: the adapted student features of those patches, detached (no gradient flows into a negative);
- ``'degraded'``: teacher features of degraded inputs, which FACDModel computes by a second teacher forward on the LR
  batch after a bicubic down-and-up round trip by the scale (the blur bicubic interpolation leaves): ``s = 0..K-1``,
  so K = 1 (the default there) is the same patch's degraded features alone;
- ``'history'`` (ratio form only): FACDModel's EMA copy of the student and adapters run on noisy copies of the same
  patch (:mod:`facd_basicsr.distill.history`), M maps per patch.
"""
from typing import Dict, Optional, Sequence, Tuple

from torch import Tensor

from facd_basicsr.losses.feature_loss_base import FeatureLoss
from facd_basicsr.losses.feature_loss_util import (check_choice, check_features, check_number, check_tap_weights,
                                                   reduce_taps, resolve_tap_weights)


def per_sample_mean(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (B, ...) -> (B, )."""
    return x.flatten(1).mean(1)


class ContrastiveFeatureLoss(FeatureLoss):
    """Options and negatives common to the contrastive feature losses; subclasses implement :meth:`tap_terms`.

    Args:
        loss_weight (float): global factor of the loss.
        tap_weights (Sequence[float] | None): weight w_j of each tap; None gives 1.0 to every tap.
        negatives (str): the pool (see the module notes); one of the subclass's ``NEGATIVES``.
        num_negatives (int | None): K >= 1 negatives per anchor; None means B - 1 ('degraded': 1). Must be < B
            ('degraded': <= B); must stay None with 'history' (M comes from ``distill.history``).
        eps (float): > 0, added to denominators and norms.
    """

    uses_adapter = True
    NEGATIVES: Tuple[str, ...] = ('batch', 'student', 'degraded')

    def __init__(self, loss_weight: float, tap_weights: Optional[Sequence[float]], negatives: str,
                 num_negatives: Optional[int], eps: float) -> None:
        super().__init__()
        self.loss_weight = check_number('loss_weight', loss_weight)
        self.tap_weights = check_tap_weights(tap_weights)
        self.negatives = check_choice('negatives', negatives, self.NEGATIVES)
        if num_negatives is not None and (isinstance(num_negatives, bool) or not isinstance(num_negatives, int)
                                          or num_negatives < 1):
            raise ValueError(
                f'num_negatives must be an integer >= 1 or None (= batch size - 1), got {num_negatives!r}.')
        if self.negatives == 'history' and num_negatives is not None:
            raise ValueError('num_negatives does nothing with negatives: history; the number of negatives comes from '
                             'distill.history (num_degraded + include_clean). Remove num_negatives from the options.')
        self.num_negatives = num_negatives
        self.eps = check_number('eps', eps, strict=True)

    @property
    def needs_degraded_features(self) -> bool:
        """True when the caller must pass the teacher features of degraded inputs as ``negative_feats``."""
        return self.negatives == 'degraded'

    @property
    def needs_history_features(self) -> bool:
        """True when the caller must pass the history pool's maps, (M, B, C, H, W) per tap, as ``negative_feats``."""
        return self.negatives == 'history'

    def shifts(self, batch_size: int) -> Tuple[int, ...]:
        """The batch shifts s of the K negatives of every anchor (see the module notes of feature_loss_util)."""
        if self.negatives == 'degraded':
            return tuple(range(1 if self.num_negatives is None else self.num_negatives))
        return tuple(range(1, (batch_size if self.num_negatives is None else self.num_negatives + 1)))

    def validate_batch_size(self, batch_size: int) -> None:
        """Raise a ValueError when a batch of ``batch_size`` patches cannot supply the negatives."""
        if self.negatives == 'history':
            return
        if self.negatives == 'degraded':
            if self.num_negatives is not None and self.num_negatives > batch_size:
                raise ValueError(f'num_negatives (K={self.num_negatives}) must be <= batch size ({batch_size}) with '
                                 'negatives: degraded (the degraded copies of the batch are the pool).')
            return
        if batch_size < 2:
            raise ValueError(f'{type(self).__name__} takes its negatives from the other patches of the batch: '
                             f'batch_size_per_gpu must be >= 2, got {batch_size}.')
        if self.num_negatives is not None and self.num_negatives >= batch_size:
            raise ValueError(f'num_negatives (K={self.num_negatives}) must be < batch size ({batch_size}): each patch '
                             f'has only {batch_size - 1} other patches. Lower num_negatives or set it to ~.')

    def pool(self, anchor: Tensor, teacher: Tensor, degraded: Optional[Tensor]) -> Tensor:
        """The constant tensor the shifted negatives are taken from, (B, C, H, W), transformed like ``anchor``."""
        if self.negatives == 'student':
            return anchor.detach()
        return teacher if degraded is None else degraded.detach()

    def tap_terms(self, anchor: Tensor, teacher: Tensor, negatives: Optional[Tensor],
                  shifts: Tuple[int, ...]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss, d_pos and mean negative distance at one tap, each (B, ); ``teacher`` is detached."""
        raise NotImplementedError

    def forward(self,
                student_feats: Sequence[Tensor],
                teacher_feats: Sequence[Tensor],
                weight: Optional[Tensor] = None,
                negative_feats: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Contrastive loss summed over taps.

        Args:
            student_feats (Sequence[Tensor]): adapted student features, one (B, C, H, W) map per tap.
            teacher_feats (Sequence[Tensor]): teacher features of the same shapes; treated as constants.
            weight (Tensor | None): per-sample gate g of shape (B, ) in [0, 1]; None means all ones.
            negative_feats (Sequence[Tensor] | None): with ``negatives: degraded`` (then required): teacher features
                of the degraded inputs, shaped like ``teacher_feats``; with ``negatives: history`` (then required):
                the history pool's maps, (M, B, C, H, W) per tap. Treated as constants.

        Returns:
            tuple[Tensor, dict]: the scalar loss, and detached logging terms ``tap{j}`` ((1/B) sum_i g_i L_ij),
            ``d_pos`` and ``d_neg`` (means over taps and all samples, ungated).
        """
        batch = check_features(student_feats, teacher_feats, same_channels=True)
        self.validate_batch_size(batch)
        resolve_tap_weights(self.tap_weights, len(student_feats))  # fail before the work, not after
        negatives = self._check_negative_feats(teacher_feats, negative_feats)
        shifts = self.shifts(batch)
        per_tap = [self.tap_terms(s, t.detach(), n, shifts) for s, t, n in zip(student_feats, teacher_feats, negatives)]
        loss, terms = reduce_taps([p[0] for p in per_tap], weight, self.tap_weights, self.loss_weight)
        terms['d_pos'] = sum(p[1].detach().mean() for p in per_tap) / len(per_tap)
        terms['d_neg'] = sum(p[2].detach().mean() for p in per_tap) / len(per_tap)
        return loss, terms

    def _check_negative_feats(self, teacher_feats: Sequence[Tensor],
                              negative_feats: Optional[Sequence[Tensor]]) -> Sequence[Optional[Tensor]]:
        """One negative map per tap (teacher's shape; history: (M, *shape)) or Nones; raises a ValueError otherwise."""
        if not (self.needs_degraded_features or self.needs_history_features):
            if negative_feats is not None:
                raise ValueError(f'negative_feats are only used with negatives: degraded or history (this loss has '
                                 f'negatives: {self.negatives}).')
            return [None] * len(teacher_feats)
        if negative_feats is None:
            raise ValueError(f'negatives: {self.negatives} needs negative_feats (FACDModel passes them).')
        shapes = [tuple(t.shape) for t in teacher_feats]
        found = [tuple(n.shape) for n in negative_feats]
        if self.needs_history_features:
            if len(found) != len(shapes) or any(f[1:] != s for f, s in zip(found, shapes)):
                raise ValueError(f'negative_feats must be (M, *teacher shape) per tap, teacher shapes {shapes}; got '
                                 f'{found}.')
            return negative_feats
        if found != shapes:
            raise ValueError(f'negative_feats must match the teacher features tap by tap, shapes {shapes}; got '
                             f'{found}.')
        return negative_feats
