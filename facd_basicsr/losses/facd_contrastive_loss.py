"""FACD's feature-domain contrastive loss: adapted student features against teacher features of the same patch
(positive) and of other patches in the batch (negatives)."""
from typing import Dict, Optional, Sequence, Tuple

from basicsr.utils.registry import LOSS_REGISTRY
from torch import Tensor

from facd_basicsr.losses.feature_loss_base import FeatureLoss
from facd_basicsr.losses.feature_loss_util import (ShiftedChannelDot, ShiftedL1Mean, channel_normalize, check_choice,
                                                   check_features, check_number, check_tap_weights, reduce_taps,
                                                   resolve_tap_weights, shifted_mean, shifted_spread)
from facd_basicsr.registry import register_once

_FORMS = ('ratio', 'infonce')
_DISTANCES = ('l1', 'l2', 'cosine')
_NEGATIVES = ('batch', 'student', 'degraded', 'history')
# Keys that only some settings read: key -> (the setting it depends on, the values that read it, what it applies to).
_SCOPED_KEYS = {
    'distance': ('form', ('ratio', ), 'the ratio form (InfoNCE always compares unit C-vectors by cosine similarity)'),
    'normalize': ('form', ('ratio', ), 'the ratio form (InfoNCE always compares unit C-vectors)'),
    'temperature': ('form', ('infonce', ), 'the InfoNCE form (the softmax temperature)'),
}
_DEFAULTS = {'distance': 'l1', 'normalize': False, 'temperature': 0.1}


def _per_sample_mean(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: (B, ...) -> (B, )."""
    return x.flatten(1).mean(1)


def _ratio_distances(anchor: Tensor, teacher: Tensor, pool: Tensor, distance: str, shifts: Tuple[int, ...],
                     eps: float) -> Tuple[Tensor, Tensor]:
    """``d(a_i, t_i)`` and ``(1/K) sum_s d(a_i, p_{(i+s) mod B})``, both (B, ), in O(B*C*H*W) saved memory.

    ``pool`` holds the negatives (teacher features, or detached student or degraded-input teacher features), all
    constants. l2 and cosine use exact decompositions around the pool mean ``m_i = (1/K) sum_s p_{(i+s) mod B}``;
    l1 uses :class:`ShiftedL1Mean`, which recomputes each shift in backward.
    """
    size = anchor[0].numel()
    if distance == 'l1':
        return _per_sample_mean((anchor - teacher).abs()), ShiftedL1Mean.apply(anchor, pool, shifts)
    if distance == 'l2':
        # mean_s ||a - p_s||^2 = ||a - m||^2 + mean_s ||p_s - m||^2   (sums over C, H, W; then / (C*H*W))
        mean_p = shifted_mean(pool, shifts)
        d_neg = _per_sample_mean((anchor - mean_p).pow(2)) + shifted_spread(pool, mean_p, shifts) / size
        return _per_sample_mean((anchor - teacher).pow(2)), d_neg
    if distance == 'cosine':
        # mean_s (1 - mean_hw <a^, p^_s>) = 1 - mean_hw <a^, mean_s p^_s>   (a^: unit C-vector per position)
        a_hat, t_hat = channel_normalize(anchor, eps), channel_normalize(teacher, eps)
        p_hat = t_hat if pool is teacher else channel_normalize(pool, eps)
        d_pos = 1 - _per_sample_mean((a_hat * t_hat).sum(1))
        d_neg = 1 - _per_sample_mean((a_hat * shifted_mean(p_hat, shifts)).sum(1))
        return d_pos, d_neg
    raise ValueError(f'Unsupported distance {distance!r}. Supported: {", ".join(_DISTANCES)}.')


def _history_distances(anchor: Tensor, teacher: Tensor, pool: Tensor, distance: str,
                       eps: float) -> Tuple[Tensor, Tensor]:
    """``d(a_i, t_i)`` and ``(1/M) sum_m d(a_i, p_mi)`` for a same-patch pool (M, B, C, H, W), both (B, ).

    l2 and cosine go through the pool mean as in :func:`_ratio_distances`; l1 sums the M distances, which saves
    O(M*B*C*H*W) for backward (M is small: the history pool's copies).
    """
    if distance == 'l1':
        d_neg = sum(_per_sample_mean((anchor - p).abs()) for p in pool.unbind(0)) / pool.shape[0]
        return _per_sample_mean((anchor - teacher).abs()), d_neg
    if distance == 'l2':
        mean_p = pool.mean(0)
        spread = _per_sample_mean((pool - mean_p).pow(2).mean(0))
        return _per_sample_mean((anchor - teacher).pow(2)), _per_sample_mean((anchor - mean_p).pow(2)) + spread
    if distance == 'cosine':
        a_hat, t_hat = channel_normalize(anchor, eps), channel_normalize(teacher, eps)
        p_hat = channel_normalize(pool.flatten(0, 1), eps).view_as(pool).mean(0)
        return 1 - _per_sample_mean((a_hat * t_hat).sum(1)), 1 - _per_sample_mean((a_hat * p_hat).sum(1))
    raise ValueError(f'Unsupported distance {distance!r}. Supported: {", ".join(_DISTANCES)}.')


@register_once(LOSS_REGISTRY)
class FACDContrastiveLoss(FeatureLoss):
    """Feature-domain contrastive distillation loss of FACD, with in-batch teacher negatives by default.

    Paper: Moon et al., "Feature-domain Adaptive Contrastive Distillation for Efficient Single Image
    Super-Resolution", IEEE Access 11, 2023 (arXiv 2211.15951).

    For sample i and tap j, anchor ``a = F^S_ij`` (student feature after the DR adapter), positive ``t_i = F^T_ij``,
    negatives, by ``negatives``:

    - ``'batch'`` (default): teacher features ``t_k`` of the other patches ``k = (i + s) mod B``, ``s = 1..K``;
    - ``'student'``: the adapted student features of those patches, detached (no gradient flows into a negative);
    - ``'degraded'``: teacher features of degraded inputs, which FACDModel computes by a second teacher forward on
      the LR batch after a bicubic down-and-up round trip by the scale (the blur bicubic interpolation leaves):
      ``s = 0..K-1``, so K = 1 (the default here) is the same patch's degraded features alone.
    - ``'history'``: hard negatives of the same patch from the student's own past: FACDModel keeps an EMA copy of
      the student and adapters (``distill.history``, :mod:`facd_basicsr.distill.history`) and passes its adapted
      maps for K noisy copies of the patch (plus the clean patch): ``d_neg = (1/M) sum_m d(a_i, p_mi)``. Ratio form
      only; M comes from ``distill.history``, so ``num_negatives`` must stay unset. OUR READING of DCKD (AAAI
      2025) in the feature domain.

    - ``form='ratio'`` (default): ``L_ij = d(a_i, t_i) / (mean_s d(a_i, t_{(i+s) mod B}) + eps)``.
    - ``form='infonce'``: at every position, cosine similarities (over channels) of ``a_i`` with ``t_i`` and the K
      negatives, divided by ``temperature``, cross-entropy with the positive as target, averaged over (H, W).

    Distances d (ratio form): ``'l1'`` mean |u - v| over (C, H, W); ``'l2'`` mean (u - v)^2 over (C, H, W);
    ``'cosine'`` 1 - mean over (H, W) of the cosine similarity of the C-vectors, each divided by (its norm + eps).

    Reduction: ``loss = loss_weight * sum_j w_j * (1/B) * sum_i g_i * L_ij`` (divided by B, not by sum g).

    OUR READING, not published: the FACD authors released no code and the paper text was not available to us; only
    the abstract and the framework figure (anchor, positive, negative, d_pos, d_neg; no softmax drawn) are certain.
    The ratio formula (the CSD / AECR-Net contrastive-regularisation form), the distances, the choice of teacher
    features of other batch patches as negatives, the number K, the student and degraded-input negative pools,
    ``normalize`` and the whole InfoNCE form are ours.

    Memory is O(B*C*H*W) per tap for any K (InfoNCE adds O(B*K*H*W) logits); time is O(B*K*C*H*W).

    Example (the key under ``train`` is read by FACDModel)::

        feature_opt:
          type: FACDContrastiveLoss
          loss_weight: 0.3
          tap_weights: ~          # one weight per tap, ~ = all 1.0
          form: ratio             # ratio | infonce
          distance: l1            # l1 | l2 | cosine  (ratio form only)
          negatives: batch        # batch | student | degraded | history
          num_negatives: ~        # K, ~ = batch size - 1 (degraded: 1)
          eps: !!float 1e-6
          normalize: false        # unit C-vectors before the distance (ratio form, l1 / l2 only)
          # temperature: 0.1      # infonce only: with form: infonce, drop distance and normalize and set this

    Keys a setting does not read are refused, so an option file never carries a knob that does nothing: with
    ``form: infonce``, ``distance`` and ``normalize``; with ``form: ratio``, ``temperature``; with ``distance:
    cosine``, ``normalize`` (cosine already divides the C-vectors by their norms). "Given" means not None: those
    three arguments default to None (YAML ``~`` or leaving the key out) and None resolves to the default of the
    form that reads the key (distance 'l1', normalize False, temperature 0.1); the attribute of a key the form does
    not read stays None. ``negatives``, ``num_negatives`` and ``eps`` are read by every form.

    Args:
        loss_weight (float): Global factor of the loss. Default: 1.0.
        tap_weights (Sequence[float] | None): Weight w_j of each tap; None gives 1.0 to every tap. Default: None.
        form (str): 'ratio' | 'infonce'. Default: 'ratio'.
        distance (str | None): 'l1' | 'l2' | 'cosine', ratio form only. Default: None ('l1' under the ratio form).
        negatives (str): 'batch' | 'student' | 'degraded' | 'history', the pool of negatives (see above).
            Default: 'batch'.
        num_negatives (int | None): K >= 1 negatives per anchor; None means B - 1 ('degraded': 1). Must be < B
            ('degraded': <= B). Default: None.
        temperature (float | None): InfoNCE temperature tau > 0, infonce form only. Default: None (0.1 under
            infonce).
        eps (float): > 0, added to the ratio's denominator and to the norms of the cosine. Default: 1e-6.
        normalize (bool | None): Divide student and teacher C-vectors by their L2 norm (+ eps) at every position
            before the ratio-form distance; ratio form with l1 or l2 only. Default: None (False).

    Raises:
        ValueError: a bad value, or a key the chosen form (or distance) does not read; the message names the key,
            the setting and what the key applies to.
    """

    uses_adapter = True  # needs_degraded_features: a property, below

    def __init__(self,
                 loss_weight: float = 1.0,
                 tap_weights: Optional[Sequence[float]] = None,
                 form: str = 'ratio',
                 distance: Optional[str] = None,
                 num_negatives: Optional[int] = None,
                 negatives: str = 'batch',
                 temperature: Optional[float] = None,
                 eps: float = 1e-6,
                 normalize: Optional[bool] = None) -> None:
        super().__init__()
        self.loss_weight = check_number('loss_weight', loss_weight)
        self.tap_weights = check_tap_weights(tap_weights)
        self.form = check_choice('form', form, _FORMS)
        given = self._resolve(distance=distance, normalize=normalize, temperature=temperature)
        distance = given['distance']
        self.distance = None if distance is None else check_choice('distance', distance, _DISTANCES)
        if self.distance == 'cosine' and normalize is not None:
            raise ValueError(
                'normalize does nothing with distance: cosine; it applies to the ratio form with distance '
                'l1 or l2 (cosine already divides the C-vectors by their norms). Remove normalize from the '
                'options.')
        if num_negatives is not None and (isinstance(num_negatives, bool) or not isinstance(num_negatives, int)
                                          or num_negatives < 1):
            raise ValueError(
                f'num_negatives must be an integer >= 1 or None (= batch size - 1), got {num_negatives!r}.')
        self.num_negatives = num_negatives
        self.negatives = check_choice('negatives', negatives, _NEGATIVES)
        if self.negatives == 'history' and self.form != 'ratio':
            raise ValueError('negatives: history works with form: ratio only (its M same-patch negatives enter the '
                             'ratio\'s denominator).')
        if self.negatives == 'history' and num_negatives is not None:
            raise ValueError('num_negatives does nothing with negatives: history; the number of negatives comes from '
                             'distill.history (num_degraded + include_clean). Remove num_negatives from the options.')
        self.temperature = (None if given['temperature'] is None else check_number(
            'temperature', given['temperature'], strict=True))
        self.eps = check_number('eps', eps, strict=True)
        if given['normalize'] is not None and not isinstance(given['normalize'], bool):
            raise ValueError(f'normalize must be true or false, got {normalize!r}.')
        self.normalize = given['normalize']

    def _resolve(self, **values: object) -> Dict[str, object]:
        """Refuse a given (not None) key that ``self.form`` does not read; None -> the default where it is read."""
        resolved = {}
        for key, value in values.items():
            setting, readers, applies_to = _SCOPED_KEYS[key]
            read = getattr(self, setting) in readers
            if value is not None and not read:
                raise ValueError(f'{key} does nothing with {setting}: {getattr(self, setting)}; it applies to '
                                 f'{applies_to}. Remove {key} from the options.')
            resolved[key] = (_DEFAULTS[key] if value is None else value) if read else None
        return resolved

    def extra_repr(self) -> str:
        form_keys = (f'temperature={self.temperature}'
                     if self.form == 'infonce' else f'distance={self.distance!r}, normalize={self.normalize}')
        return (f'loss_weight={self.loss_weight}, tap_weights={self.tap_weights}, form={self.form!r}, {form_keys}, '
                f'negatives={self.negatives!r}, num_negatives={self.num_negatives}, eps={self.eps}')

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
            raise ValueError(f'FACDContrastiveLoss takes its negatives from the other patches of the batch: '
                             f'batch_size_per_gpu must be >= 2, got {batch_size}.')
        if self.num_negatives is not None and self.num_negatives >= batch_size:
            raise ValueError(f'num_negatives (K={self.num_negatives}) must be < batch size ({batch_size}): each patch '
                             f'has only {batch_size - 1} other patches. Lower num_negatives or set it to ~.')

    def _pool(self, anchor: Tensor, teacher: Tensor, degraded: Optional[Tensor]) -> Tensor:
        """The constant tensor the negatives are taken from, (B, C, H, W), transformed like ``anchor``."""
        if self.negatives == 'student':
            return anchor.detach()
        return teacher if degraded is None else degraded.detach()

    def _tap_terms(self, anchor: Tensor, teacher: Tensor, degraded: Optional[Tensor],
                   shifts: Tuple[int, ...]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss, d_pos and mean negative distance at one tap, each of shape (B, )."""
        teacher = teacher.detach()
        if self.form == 'infonce':
            a_hat, t_hat = channel_normalize(anchor, self.eps), channel_normalize(teacher, self.eps)
            p_hat = self._pool(a_hat, t_hat, None if degraded is None else channel_normalize(degraded, self.eps))
            cos = ShiftedChannelDot.apply(a_hat, t_hat, p_hat, shifts)  # (B, 1 + K, H, W), column 0 = positive
            scaled = cos / self.temperature
            loss = _per_sample_mean(scaled.logsumexp(1) - scaled[:, 0])
            cos = cos.detach()
            return loss, 1 - _per_sample_mean(cos[:, 0]), 1 - _per_sample_mean(cos[:, 1:])
        if self.normalize:
            anchor, teacher = channel_normalize(anchor, self.eps), channel_normalize(teacher, self.eps)
            degraded = None if degraded is None else channel_normalize(degraded.flatten(0, -4), self.eps).view_as(
                degraded)
        if self.negatives == 'history':
            d_pos, d_neg = _history_distances(anchor, teacher, degraded.detach(), self.distance, self.eps)
            return d_pos / (d_neg + self.eps), d_pos, d_neg
        pool = self._pool(anchor, teacher, degraded)
        d_pos, d_neg = _ratio_distances(anchor, teacher, pool, self.distance, shifts, self.eps)
        return d_pos / (d_neg + self.eps), d_pos, d_neg

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
            negative_feats (Sequence[Tensor] | None): with ``negatives: degraded`` only (then required): teacher
                features of the degraded inputs, shaped like ``teacher_feats``; with ``negatives: history`` (then
                required): the history pool's maps, (M, B, C, H, W) per tap. Treated as constants.

        Returns:
            tuple[Tensor, dict]: the scalar loss, and detached logging terms ``tap{j}`` ((1/B) sum_i g_i L_ij),
            ``d_pos`` and ``d_neg`` (means over taps and all samples, ungated).
        """
        batch = check_features(student_feats, teacher_feats, same_channels=True)
        self.validate_batch_size(batch)
        resolve_tap_weights(self.tap_weights, len(student_feats))  # fail before the work, not after
        degraded = self._check_negative_feats(teacher_feats, negative_feats)
        shifts = self.shifts(batch)
        per_tap = [self._tap_terms(s, t, d, shifts) for s, t, d in zip(student_feats, teacher_feats, degraded)]
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
                             f'{[tuple(n.shape) for n in negative_feats]}.')
        return negative_feats
