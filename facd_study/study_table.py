"""The study's decision table (scripts/study.py): per row and versus row, the paired select and report differences
with their 95 % t-intervals, whether the row beats the versus row (:func:`facd_study.paired.verdict`), the worst
report photo's paired difference, and the row's mean colour offset on the report photos.

The mini-table (scripts/mini_table.py) keeps :func:`facd_study.ablation.results_table` (mean ± std).
"""
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence

from facd_basicsr.tools.bicubic import bicubic_upscale
from facd_study.ablation import SPLITS, Row, StudyScale, common_scale
from facd_study.paired import CHANNELS, colour_offset, format_interval, seed_deltas, verdict, worst_photo
from facd_study.scoring import format_mean_std, markdown_table, read_pairs, score_outputs, seed_values

BicubicScores = Mapping[str, Mapping[str, float]]  # split -> photo -> bicubic PSNR-Y

INTRO = ('Δ = paired mean PSNR-Y difference to the run of the named row with the same seed (same initialisation and '
         'data order), with its 95 % Student-t interval over seeds [low, high]. "beats" = yes when the select '
         'interval lies above 0 and the report mean difference is above 0; "no (worse)" in the mirror case '
         '(docs/ablation.md, "How we decide"). Worst report photo: the report photo with the lowest mean paired '
         'difference, with its interval. Colour offset: mean of output - GT per channel (R / G / B, 0-255) over '
         'the report photos and seeds; — for runs recorded before it was measured. Below bicubic: (run, photo) '
         'pairs of both splits where the student scores lower than bicubic up-scaling, and which photos.')


def bicubic_photo_scores(scale: StudyScale) -> Dict[str, Dict[str, float]]:
    """PSNR-Y of MATLAB-style bicubic up-scaling per photo of each split of ``scale``: ``{split: {stem: dB}}``."""
    result = {}
    for split in SPLITS:
        pairs = read_pairs(osp.join(scale.data, split), scale.scale)
        outputs = {stem: bicubic_upscale(lr, scale.scale) for stem, (lr, _) in pairs.items()}
        result[split] = {stem: v['psnr'] for stem, v in score_outputs(outputs, pairs, scale.scale).items()}
    return result


def below_bicubic_cell(runs: Sequence[Mapping], bicubic: BicubicScores) -> str:
    """``'0 of 12'`` or ``'2 of 12 (coffee)'``: (run, photo) pairs scoring below bicubic; '—' without per-photo
    scores."""
    if not all('per_image' in run for run in runs):
        return '—'
    total, below = 0, []
    for run in runs:
        for split, photos in bicubic.items():
            for stem, floor in photos.items():
                total += 1
                if run['per_image'][split][stem]['psnr'] < floor:
                    below.append(stem)
    names = ', '.join(sorted(set(below)))
    return f'{len(below)} of {total}' + (f' ({names})' if below else '')


def worst_photo_cell(runs: Sequence[Mapping], reference: Sequence[Mapping]) -> str:
    """``'motorcycle_left -0.052 [-0.120, +0.016]'`` or '—' (no paired runs, or records without ``per_image``)."""
    if not all('per_image' in run for run in list(runs) + list(reference)):
        return '—'
    worst = worst_photo(runs, reference, 'report')
    return '—' if worst is None else f'{worst[0]} {format_interval(worst[1])}'


def colour_cell(runs: Sequence[Mapping]) -> str:
    """``'+0.41 / -0.12 / +0.05'`` (R / G / B); '(k of n runs)' appended when older records lack the offsets."""
    found = colour_offset(runs, 'report')
    if found is None:
        return '—'
    means, count = found
    cell = ' / '.join(f'{means[c]:+.2f}' for c in CHANNELS)
    return cell if count == len(runs) else f'{cell} ({count} of {len(runs)} runs)'


def decision_cells(row: Row,
                   runs: Sequence[Mapping],
                   references: Sequence[Sequence[Mapping]],
                   bicubic: Optional[BicubicScores] = None) -> List[str]:
    """Cells of one row: label, n, PSNR / SSIM per split (mean ± std), then per versus row the select and report
    deltas with intervals, the verdict and the worst report photo; then the colour offset, (with ``bicubic``) the
    photos below bicubic, and the gate share."""
    cells = [row.label, str(len(runs))]
    for split in ('select', 'report'):
        cells += [
            format_mean_std(seed_values(runs, split, 'psnr'), 3),
            format_mean_std(seed_values(runs, split, 'ssim'), 4)
        ]
    for reference in references:
        select, report = (seed_deltas(runs, reference, split) for split in ('select', 'report'))
        if runs is reference or not select:
            cells += ['—'] * 4
            continue
        cells += [
            format_interval(select),
            format_interval(report),
            verdict(select, report),
            worst_photo_cell(runs, reference)
        ]
    cells.append(colour_cell(runs))
    if bicubic is not None:
        cells.append(below_bicubic_cell(runs, bicubic))
    gates = [run['gate_on'] for run in runs if run['gate_on'] == run['gate_on']]  # NaN: no FACDModel
    cells.append(f'{100 * sum(gates) / len(gates):.0f} %' if gates else '—')
    return cells


def decision_table(rows: Sequence[Row],
                   records: Mapping[str, List[dict]],
                   reference_keys: Sequence[str] = ('kd', ),
                   script: Optional[str] = None,
                   bicubic: Optional[BicubicScores] = None) -> str:
    """Markdown decision table of every row with at least one record (the arguments of ``results_table``; with
    ``bicubic`` (:func:`bicubic_photo_scores`) a column counts the photos a run scores below bicubic on)."""
    header = [
        f'student ({common_scale(rows).student})', 'n', 'select PSNR-Y', 'select SSIM-Y', 'report PSNR-Y',
        'report SSIM-Y'
    ]
    for key in reference_keys:
        header += [
            f'Δselect vs {key} [95 %]', f'Δreport vs {key} [95 %]', f'beats {key}?', f'worst report photo vs {key}'
        ]
    header += ['report colour offset R / G / B'] + (['below bicubic (runs x photos)'] if bicubic else [])
    header.append('gate on (last log)')
    references = [records.get(key, []) for key in reference_keys]
    lines = []
    for row in rows:
        if records.get(row.key):
            cells = decision_cells(row, records[row.key], references, bicubic)
            if script:
                seeds = [run['options']['manual_seed'] for run in records[row.key]]
                cells.append(f'`{row.command(script, seeds)}`')
            lines.append(cells)
    return markdown_table(header + (['reproduce'] if script else []), lines)
