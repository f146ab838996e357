"""How the study decides that a variant beats another (docs/ablation.md, "How we decide"): paired differences over
seeds with a 95 % Student-t interval, the worst photo's paired difference, and the mean colour offset.

A seed fixes the student's initialisation and data order, so two rows' runs with the same seed are paired. For a
row A against a row B on one split, d_s = PSNR(A, seed s) - PSNR(B, seed s); the interval is
mean(d) ± t(0.975, n - 1) * std(d) / sqrt(n), std with n - 1 in the denominator.

**A beats B** when the select interval lies above 0 and the report mean difference is above 0 too; B beats A in
the mirror case. Anything else is "no" (a tie within what the seeds can tell).

The t quantile is computed, not tabulated (scipy is not a dependency): for an integer number of degrees of freedom
the two-sided probability ``P(|T| < t)`` has a closed form in ``theta = atan(t / sqrt(df))`` (a finite sum of
powers of cos(theta)), and the quantile is found by bisection.
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

YES, NO, LOSES = 'yes', 'no', 'no (worse)'
CHANNELS = ('r', 'g', 'b')


def t_two_sided(t: float, df: int) -> float:
    """``P(|T| < t)`` for Student's t with ``df`` (a positive integer) degrees of freedom, ``t >= 0``."""
    if df < 1 or int(df) != df:
        raise ValueError(f'degrees of freedom must be a positive integer, got {df}')
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta)**2
    if df % 2 == 1:  # 2/pi * (theta + sin(theta) * (cos + 2/3 cos^3 + 2*4/(3*5) cos^5 + ... up to cos^(df-2)))
        term, total = math.cos(theta), 0.
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total) if df > 1 else 2 / math.pi * theta
    term, total = 1., 0.  # sin(theta) * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(df-2))
    for k in range(1, df // 2 + 1):
        total += term
        term *= cos2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 < p < 1``) of Student's t with ``df`` degrees of freedom, e.g. t(0.975, 2) = 4.303."""
    if not 0.5 < p < 1:
        raise ValueError(f'p must lie in (0.5, 1), got {p}')
    target, low, high = 2 * p - 1, 0., 1.
    while t_two_sided(high, df) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_two_sided(mid, df) < target else (low, mid)
        if high - low < 1e-12 * high:
            break
    return (low + high) / 2


def paired_interval(diffs: Sequence[float], level: float = 0.95) -> Tuple[float, float, float]:
    """(mean, low, high) of the ``level`` t-interval of the mean of ``diffs``; low = high = NaN for a single value."""
    if not diffs:
        raise ValueError('paired_interval needs at least one difference')
    n = len(diffs)
    mean = float(np.mean(diffs))
    if n == 1:
        return mean, float('nan'), float('nan')
    half = t_quantile((1 + level) / 2, n - 1) * float(np.std(diffs, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def format_interval(diffs: Sequence[float], digits: int = 3) -> str:
    """``'+0.035 [-0.052, +0.122]'`` (mean and 95 % interval); ``'+0.035 (n = 1)'``; ``'—'`` without differences."""
    if not diffs:
        return '—'
    mean, low, high = paired_interval(diffs)
    if len(diffs) == 1:
        return f'{mean:+.{digits}f} (n = 1)'
    return f'{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]'


def verdict(select_diffs: Sequence[float], report_diffs: Sequence[float]) -> str:
    """'yes' when A beats B (select interval above 0, report mean above 0), 'no (worse)' when B beats A, else 'no'.

    Args:
        select_diffs (Sequence[float]): per-seed A - B on the select photos.
        report_diffs (Sequence[float]): per-seed A - B on the report photos.
    """
    if len(select_diffs) < 2 or not report_diffs:
        return NO
    _, low, high = paired_interval(select_diffs)
    report = float(np.mean(report_diffs))
    if low > 0 and report > 0:
        return YES
    if high < 0 and report < 0:
        return LOSES
    return NO


def _by_seed(runs: Sequence[Mapping]) -> Dict[int, Mapping]:
    return {run['options']['manual_seed']: run for run in runs}


def seed_deltas(runs: Sequence[Mapping], reference: Sequence[Mapping], split: str) -> List[float]:
    """Per-seed PSNR differences of ``runs`` to ``reference`` (records) on ``split``, at the seeds both have."""
    ref = _by_seed(reference)
    return [
        run['scores'][split]['psnr'] - ref[seed]['scores'][split]['psnr']
        for seed, run in sorted(_by_seed(runs).items()) if seed in ref
    ]


def photo_deltas(runs: Sequence[Mapping], reference: Sequence[Mapping], split: str) -> Dict[str, List[float]]:
    """Per photo of ``split``, the per-seed PSNR differences of ``runs`` to ``reference`` (from ``per_image``)."""
    ref = _by_seed(reference)
    deltas: Dict[str, List[float]] = {}
    for seed, run in sorted(_by_seed(runs).items()):
        if seed not in ref:
            continue
        mine, theirs = run['per_image'][split], ref[seed]['per_image'][split]
        for stem in sorted(set(mine) & set(theirs)):
            deltas.setdefault(stem, []).append(mine[stem]['psnr'] - theirs[stem]['psnr'])
    return deltas


def worst_photo(runs: Sequence[Mapping],
                reference: Sequence[Mapping],
                split: str = 'report') -> Optional[Tuple[str, List[float]]]:
    """The photo of ``split`` with the lowest mean paired difference, and its per-seed differences (None if none)."""
    deltas = photo_deltas(runs, reference, split)
    if not deltas:
        return None
    stem = min(deltas, key=lambda s: (float(np.mean(deltas[s])), s))
    return stem, deltas[stem]


def colour_offset(runs: Sequence[Mapping], split: str = 'report') -> Optional[Tuple[Dict[str, float], int]]:
    """Mean colour offset (student - GT, 0-255) per channel over the photos of ``split`` and the runs that recorded
    it (``colour_offset`` of :func:`facd_study.ablation.score_run`; older records lack it), and how many did."""
    offsets = [run['colour_offset'][split] for run in runs if run.get('colour_offset')]
    if not offsets:
        return None
    means = {
        c: float(np.mean([np.mean([photo[c] for photo in per_photo.values()]) for per_photo in offsets]))
        for c in CHANNELS
    }
    return means, len(offsets)
