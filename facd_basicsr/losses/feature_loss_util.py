"""Shared pieces of the feature-distillation losses: option checks, the gated tap reduction, shifted-batch kernels.

The file name does not end in ``_loss.py`` on purpose: the registry scanner skips it, nothing here is registered.

Shifted-batch notation (used by ``FACDContrastiveLoss``): for a batch of B maps of a negative pool ``p`` (teacher
features by default), the negatives of sample i are ``p_{(i + s) mod B}`` for the shifts ``s`` in a tuple of K
integers: ``1..K`` for the other patches of the batch, ``0..K-1`` when the pool is a degraded copy of the batch (shift
0 = the same patch). The kernels loop over the K shifts without ever stacking them and keep only O(B*C*H*W) tensors
for backward.
"""
import math
from numbers import Real
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def check_number(name: str, value: object, minimum: float = 0.0, strict: bool = False) -> float:
    """Return ``value`` as a float after checking it is a finite real number ``>= minimum`` (``>`` when strict).

    Raises:
        ValueError: naming ``name``; a YAML string such as ``'1e-6'`` (written without ``!!float``) is called out.
    """
    bad = isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
    if not bad:
        bad = value <= minimum if strict else value < minimum
    if bad:
        relation = '>' if strict else '>='
        hint = ' (a YAML number like 1e-6 needs the !!float tag)' if isinstance(value, str) else ''
        raise ValueError(f'{name} must be a number {relation} {minimum}, got {value!r}{hint}.')
    return float(value)


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; raise a ValueError naming the option otherwise."""
    if value not in choices:
        raise ValueError(f'Unsupported {name} {value!r}. Supported: {", ".join(repr(c) for c in choices)}.')
    return value


def check_tap_weights(tap_weights: Optional[Sequence[float]]) -> Optional[Tuple[float, ...]]:
    """Check the ``tap_weights`` option: ``None`` (all taps weigh 1) or a non-empty list of numbers >= 0."""
    if tap_weights is None:
        return None
    if isinstance(tap_weights, (str, bytes)) or not isinstance(tap_weights, Sequence) or len(tap_weights) == 0:
        raise ValueError(f'tap_weights must be None or a non-empty list of numbers >= 0, got {tap_weights!r}.')
    return tuple(check_number(f'tap_weights[{j}]', w) for j, w in enumerate(tap_weights))


def resolve_tap_weights(tap_weights: Optional[Tuple[float, ...]], num_taps: int) -> Tuple[float, ...]:
    """Tap weights for ``num_taps`` taps: all 1.0 when None, else the configured list if its length matches."""
    if tap_weights is None:
        return (1.0, ) * num_taps
    if len(tap_weights) != num_taps:
        raise ValueError(f'tap_weights has {len(tap_weights)} entries but the loss got {num_taps} feature taps; '
                         'give one weight per tap or leave tap_weights unset (~).')
    return tap_weights


def check_features(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], same_channels: bool) -> int:
    """Check the tap lists: same length >= 1, 4-D maps, equal batch and spatial size per tap (and channels if asked).

    Returns:
        int: the batch size B.
    """
    if len(student_feats) == 0 or len(student_feats) != len(teacher_feats):
        raise ValueError(f'student_feats and teacher_feats must be non-empty lists of equal length (one map per tap), '
                         f'got {len(student_feats)} and {len(teacher_feats)}.')
    batch = student_feats[0].shape[0]
    for j, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        if s.dim() != 4 or t.dim() != 4:
            raise ValueError(f'tap {j}: features must be (B, C, H, W), got {tuple(s.shape)} and {tuple(t.shape)}.')
        keep = slice(None) if same_channels else slice(2, None)
        if s.shape[0] != batch or t.shape[0] != batch or s.shape[keep] != t.shape[keep]:
            need = 'shape' if same_channels else 'batch and spatial size'
            raise ValueError(
                f'tap {j}: student {tuple(s.shape)} and teacher {tuple(t.shape)} must have the same {need} '
                f'(batch {batch}).')
    return batch


def reduce_taps(per_sample: Sequence[Tensor], weight: Optional[Tensor], tap_weights: Optional[Tuple[float, ...]],
                loss_weight: float) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Gated, tap-weighted sum: ``loss_weight * sum_j w_j * (1/B) * sum_i g_i * L_ij``.

    Args:
        per_sample (Sequence[Tensor]): per-tap losses L_j of shape (B, ).
        weight (Tensor | None): per-sample gate g of shape (B, ) in [0, 1]; None means all ones. Not differentiated.
        tap_weights (tuple | None): w_j; None means all 1.0.
        loss_weight (float): global factor.

    Returns:
        tuple[Tensor, dict]: the scalar loss and ``{'tap{j}': (1/B) sum_i g_i L_ij}`` (detached).
    """
    weights = resolve_tap_weights(tap_weights, len(per_sample))
    batch = per_sample[0].shape[0]
    if weight is not None:
        if weight.shape != (batch, ):
            raise ValueError(f'weight (the per-sample gate) must have shape ({batch},), got {tuple(weight.shape)}.')
        weight = weight.detach().to(per_sample[0])
    loss, terms = per_sample[0].new_zeros(()), {}
    for j, tap_loss in enumerate(per_sample):
        gated = tap_loss if weight is None else tap_loss * weight
        tap = gated.sum() / batch
        terms[f'tap{j}'] = tap.detach()
        loss = loss + weights[j] * tap
    return loss_weight * loss, terms


def channel_normalize(x: Tensor, eps: float) -> Tensor:
    """Divide the C-vector at every position by its L2 norm (plus ``eps``). (B, C, H, W) -> (B, C, H, W)."""
    return x / (x.norm(dim=1, keepdim=True) + eps)


def centre_maps(x: Tensor) -> Tensor:
    """Subtract each map's spatial mean per channel: (..., C, H, W) -> (..., C, H, W), every (H, W) plane mean 0."""
    return x - x.mean(dim=(-2, -1), keepdim=True)


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is a bool; else a ValueError naming ``name`` (YAML 'false' strings are not booleans)."""
    if not isinstance(value, bool):
        raise ValueError(f'{name} must be true or false, got {value!r}.')
    return value


def shift_pairs(batch: int, shift: int) -> Tuple[Tuple[slice, slice], Tuple[slice, slice]]:
    """Row slices pairing anchor i with teacher ``(i + shift) mod batch`` in two contiguous blocks (no copy)."""
    return (slice(0, batch - shift), slice(shift, batch)), (slice(batch - shift, batch), slice(0, shift))


def shifts_are_all_others(batch: int, shifts: Sequence[int]) -> bool:
    """True when ``shifts`` pairs every sample with each of the other B - 1 once (the default K = B - 1 negatives)."""
    return len(shifts) == batch - 1 and set(shifts) == set(range(1, batch))


def shifted_mean(pool: Tensor, shifts: Sequence[int]) -> Tensor:
    """``m_i = (1/K) sum_{s in shifts} p_{(i+s) mod B}`` for any leading batch dim; computed without autograd.

    With all B - 1 others as negatives, ``m_i = (sum_k p_k - p_i) / (B - 1)``: two passes over the pool instead of K.
    """
    with torch.no_grad():
        batch = pool.shape[0]
        if shifts_are_all_others(batch, shifts):
            return (pool.sum(0, keepdim=True) - pool) / (batch - 1)
        total = torch.zeros_like(pool)
        for shift in shifts:
            for rows, cols in shift_pairs(batch, shift):
                total[rows] += pool[cols]
        return total / len(shifts)


def shifted_spread(pool: Tensor, mean: Tensor, shifts: Sequence[int]) -> Tensor:
    """``(1/K) sum_{s in shifts} ||p_{(i+s) mod B} - m_i||^2`` (sum over all but the batch dim), shape (B, ); no
    autograd. ``mean`` must be :func:`shifted_mean` of the same ``pool`` and ``shifts``.

    With all B - 1 others as negatives it is ``(Q - |q_i|^2) / K - |q_i|^2 / K^2`` with ``q = p - mean_k p_k`` and
    ``Q = sum_k |q_k|^2`` (then ``m_i`` minus the batch mean is ``-q_i / K``): O(B*C*H*W) work, not O(B*K*C*H*W); and
    centred on the batch mean so float32 does not cancel on features with a large common offset.
    """
    with torch.no_grad():
        batch = pool.shape[0]
        if shifts_are_all_others(batch, shifts):
            k = batch - 1
            squares = (pool - pool.mean(0, keepdim=True)).pow_(2).flatten(1).sum(1)
            return (squares.sum() - squares) / k - squares / k**2
        out = pool.new_zeros(batch)
        for shift in shifts:
            for rows, cols in shift_pairs(batch, shift):
                out[rows] += (pool[cols] - mean[rows]).pow_(2).flatten(1).sum(1)
        return out / len(shifts)


class ShiftedL1Mean(torch.autograd.Function):
    """``D_i = (1/K) sum_{s in shifts} mean_{C,H,W} |a_i - p_{(i+s) mod B}|``, shape (B, ); gradient for ``a`` only.

    Forward accumulates the K distances one shift at a time; backward recomputes each shift's sign, so only ``a`` and
    ``p`` are saved (autograd on a Python loop would keep K difference tensors alive). ``p`` may be ``a.detach()``.
    """

    @staticmethod
    def forward(ctx, anchor: Tensor, pool: Tensor, shifts: Sequence[int]) -> Tensor:
        ctx.save_for_backward(anchor, pool)
        ctx.shifts = tuple(shifts)
        out = anchor.new_zeros(anchor.shape[0])
        for shift in ctx.shifts:
            for rows, cols in shift_pairs(anchor.shape[0], shift):
                out[rows] += (anchor[rows] - pool[cols]).abs_().flatten(1).mean(1)
        return out / len(ctx.shifts)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], None, None]:
        anchor, pool = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grad = torch.zeros_like(anchor)
        for shift in ctx.shifts:
            for rows, cols in shift_pairs(anchor.shape[0], shift):
                grad[rows] += (anchor[rows] - pool[cols]).sign_()
        scale = grad_out / (len(ctx.shifts) * anchor[0].numel())
        return grad * scale.view(-1, *([1] * (anchor.dim() - 1))), None, None


class ShiftedChannelDot(torch.autograd.Function):
    """Channel dot products with the positive and the shifted negatives, s = shifts[k - 1]::

        z[i, 0, h, w] = <a_i(h, w), t_i(h, w)>          z[i, k, h, w] = <a_i(h, w), p_{(i+s) mod B}(h, w)>

    Shapes: anchor, positive t and pool p (B, C, H, W) -> z (B, 1 + K, H, W). The map is linear in ``a``, so
    backward needs only ``t`` and ``p`` (often the same tensor): nothing of size (B, K, C, H, W) is built or saved.
    """

    @staticmethod
    def forward(ctx, anchor: Tensor, positive: Tensor, pool: Tensor, shifts: Sequence[int]) -> Tensor:
        ctx.save_for_backward(positive, pool)
        ctx.shifts = tuple(shifts)
        batch, _, height, width = anchor.shape
        logits = anchor.new_empty(batch, len(ctx.shifts) + 1, height, width)
        logits[:, 0] = (anchor * positive).sum(1)
        for column, shift in enumerate(ctx.shifts, start=1):
            for rows, cols in shift_pairs(batch, shift):
                logits[rows, column] = (anchor[rows] * pool[cols]).sum(1)
        return logits

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logits: Tensor) -> Tuple[Optional[Tensor], None, None, None]:
        positive, pool = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad = positive * grad_logits[:, :1]
        for column, shift in enumerate(ctx.shifts, start=1):
            for rows, cols in shift_pairs(pool.shape[0], shift):
                grad[rows] += pool[cols] * grad_logits[rows, column:column + 1]
        return grad, None, None, None
