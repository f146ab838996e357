"""The protocol between FACDModel and its ``train.feature_opt`` loss: the :class:`FeatureLoss` base class.

The file name does not end in ``_loss.py`` on purpose: the registry scanner skips it, the base is not registered.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor, nn


class FeatureLoss(nn.Module):
    """Base class of every loss FACDModel accepts as ``train.feature_opt``; it declares what the model relies on.

    FACDModel taps the teacher and the student at the paired module paths of ``distill.teacher_taps`` /
    ``distill.student_taps`` and calls ``loss(student_feats, teacher_feats, weight=gate, negative_feats=...)``.
    A subclass implements :meth:`forward` and overrides the class attributes below only where it differs:

    - ``uses_adapter`` (bool): True (default) when the student features pass through FACD's DR adapters (1x1 conv
      from the student's to the teacher's channel count) before the loss; False when the loss takes the raw student
      maps (their channel count may then differ from the teacher's), and FACDModel builds no adapter.
    - ``needs_degraded_features`` (bool): False (default); True when the loss needs the teacher features of
      degraded inputs as ``negative_feats`` (FACDModel then runs the teacher a second time per step). It may be a
      property that depends on the options.
    - ``needs_history_features`` (bool): False (default); True when the loss needs the ``history`` pool's
      negatives (FACDModel then keeps an EMA copy of the student and adapters and passes, per tap, an
      (M, N, C, H, W) tensor of its adapted maps for M degraded or clean copies of every patch as ``negative_feats``).
    - :meth:`validate_batch_size`: called once at start-up with ``batch_size_per_gpu``; the default accepts any.

    Write your own: subclass, decorate with ``register_once(LOSS_REGISTRY)`` (from ``facd_basicsr.registry``), put
    it in a file whose name ends in ``_loss.py`` inside a package that is imported before the model is built::

        @register_once(LOSS_REGISTRY)
        class MyFeatureLoss(FeatureLoss):
            uses_adapter = True

            def forward(self, student_feats, teacher_feats, weight=None, negative_feats=None):
                self.reject_negative_feats(negative_feats)
                per_tap = [(s - t.detach()).abs().flatten(1).mean(1) for s, t in zip(student_feats, teacher_feats)]
                return reduce_taps(per_tap, weight, None, 1.0)   # from facd_basicsr.losses.feature_loss_util
    """

    uses_adapter: bool = True
    needs_degraded_features: bool = False
    needs_history_features: bool = False

    def validate_batch_size(self, batch_size: int) -> None:
        """Raise a ValueError when a batch of ``batch_size`` patches cannot feed the loss. Default: any size works.

        Args:
            batch_size (int): ``datasets.train.batch_size_per_gpu``, the batch each forward gets.
        """

    def forward(self,
                student_feats: Sequence[Tensor],
                teacher_feats: Sequence[Tensor],
                weight: Optional[Tensor] = None,
                negative_feats: Optional[Sequence[Tensor]] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The feature loss summed over taps.

        Args:
            student_feats (Sequence[Tensor]): one (N, C_s, H, W) map per tap, after the adapters when
                ``uses_adapter`` (then C_s = C_t).
            teacher_feats (Sequence[Tensor]): one (N, C_t, H, W) map per tap; constants (no gradient may reach them).
            weight (Tensor | None): per-sample gate g of shape (N, ) in [0, 1]; None means all ones.
            negative_feats (Sequence[Tensor] | None): teacher features of degraded inputs, shaped like
                ``teacher_feats``, when ``needs_degraded_features`` is True; the history pool's (M, N, C, H, W)
                maps per tap when ``needs_history_features`` is True; otherwise None.

        Returns:
            tuple[Tensor, dict]: the scalar loss, and detached scalar logging terms; FACDModel logs a ``tap{j}`` key
            as ``l_feat_tap{j}`` and any other key as it is.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement forward')

    def reject_negative_feats(self, negative_feats: Optional[Sequence[Tensor]]) -> None:
        """For losses without degraded negatives: raise a ValueError when ``negative_feats`` is given anyway."""
        if negative_feats is not None:
            raise ValueError(f'{type(self).__name__} takes no negative_feats (its needs_degraded_features is False).')


def registered_feature_losses() -> List[str]:
    """Names in BasicSR's LOSS_REGISTRY whose class is a :class:`FeatureLoss` subclass, in registration order."""
    return [name for name, obj in LOSS_REGISTRY if isinstance(obj, type) and issubclass(obj, FeatureLoss)]


def check_feature_loss(loss: nn.Module, option: str = 'train.feature_opt') -> FeatureLoss:
    """Return ``loss`` if it speaks the feature-loss protocol; raise a TypeError naming ``option`` otherwise.

    Raises:
        TypeError: ``loss`` is not a :class:`FeatureLoss` (e.g. BasicSR's ``L1Loss``, which compares two images).
    """
    if isinstance(loss, FeatureLoss):
        return loss
    raise TypeError(f'{option} has type {type(loss).__name__}, which is not a feature loss: FACDModel needs a '
                    f'subclass of facd_basicsr.losses.feature_loss_base.FeatureLoss, one of '
                    f'{", ".join(registered_feature_losses())}. Image losses such as L1Loss belong in '
                    f'train.pixel_opt or train.kd_opt.')
