"""Scores of trained networks on the photo sets of :mod:`facd_study.demo_data`, and the tables built on them.

The forward pass and the per-image PSNR / SSIM are the tools' (:mod:`facd_basicsr.tools.scoring`, the same path as
``facd-eval``): BasicSR's ``calculate_psnr`` / ``calculate_ssim`` on the Y channel with ``crop_border = scale`` (the
FAKD / FACD protocol), on 8-bit outputs as BasicSR's validation does. What lives here is the harness's own part: the
photo folders of the demo sets, and the tables. A run's score on a set is the mean over its photos; a table row is
the mean ± sample standard deviation (n - 1) of that score over seeds.
"""
import glob
import math
import os.path as osp
from typing import Dict, List, Mapping, Sequence, Tuple

import cv2
import numpy as np
import torch

from facd_basicsr.tools.scoring import image_scores, upscale

Pair = Tuple[np.ndarray, np.ndarray]  # (LR, GT), uint8 BGR (H, W, 3)


def read_pairs(split_folder: str, scale: int) -> Dict[str, Pair]:
    """``{stem: (lr, gt)}`` from ``split_folder/gt/*.png`` and ``split_folder/lq_x{scale}/*.png``."""
    gt_paths = sorted(glob.glob(osp.join(split_folder, 'gt', '*.png')))
    if not gt_paths:
        raise FileNotFoundError(f'no ground-truth PNG in {osp.join(split_folder, "gt")}')
    pairs = {}
    for gt_path in gt_paths:
        stem = osp.splitext(osp.basename(gt_path))[0]
        lq_path = osp.join(split_folder, f'lq_x{scale}', f'{stem}.png')
        if not osp.isfile(lq_path):
            raise FileNotFoundError(f'{lq_path} (the LR twin of {gt_path}) is missing')
        pairs[stem] = (cv2.imread(lq_path, cv2.IMREAD_COLOR), cv2.imread(gt_path, cv2.IMREAD_COLOR))
    return pairs


def score_outputs(outputs: Mapping[str, np.ndarray], pairs: Mapping[str, Pair], scale: int) -> Dict[str, dict]:
    """Per-image scores ``{stem: {'psnr', 'ssim'}}`` of ``outputs`` (stem -> uint8 BGR) against the pairs' GT."""
    return {stem: image_scores(outputs[stem], gt, scale) for stem, (_, gt) in pairs.items()}


def colour_offsets(outputs: Mapping[str, np.ndarray], pairs: Mapping[str, Pair], crop: int) -> Dict[str, dict]:
    """Per image, the mean of output - GT per channel on the 0-255 scale, ``crop`` border pixels cut (as the scores):
    ``{stem: {'r': ..., 'g': ..., 'b': ...}}`` (a positive value: the output is brighter in that channel)."""
    offsets = {}
    for stem, (_, gt) in pairs.items():
        diff = outputs[stem].astype(np.float64) - gt.astype(np.float64)
        if crop:
            diff = diff[crop:-crop, crop:-crop]
        blue, green, red = diff.reshape(-1, 3).mean(0)  # uint8 BGR images
        offsets[stem] = {'r': float(red), 'g': float(green), 'b': float(blue)}
    return offsets


def mean_scores(per_image: Mapping[str, Mapping[str, float]]) -> Dict[str, float]:
    """Average each metric over the images: ``{'psnr': ..., 'ssim': ...}``."""
    metrics = next(iter(per_image.values())).keys()
    return {m: float(np.mean([scores[m] for scores in per_image.values()])) for m in metrics}


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError('mean_std needs at least one value')
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.
    return mean, math.sqrt(sum((v - mean)**2 for v in values) / (len(values) - 1))


def format_mean_std(values: Sequence[float], digits: int) -> str:
    """``'27.812 ± 0.014'`` (or just the value for a single run)."""
    mean, std = mean_std(values)
    return f'{mean:.{digits}f}' if len(values) == 1 else f'{mean:.{digits}f} ± {std:.{digits}f}'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table; the first column is left-aligned, the others right-aligned."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join([':---'] + ['---:'] * (len(header) - 1)) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def split_scores(net: torch.nn.Module, pairs: Mapping[str, Pair], scale: int) -> Tuple[Dict, Dict[str, np.ndarray]]:
    """Per-image scores of ``net`` on ``pairs``, and its outputs (stem -> uint8 BGR)."""
    outputs = {stem: upscale(net, lr) for stem, (lr, _) in pairs.items()}
    return score_outputs(outputs, pairs, scale), outputs


def seed_values(runs: Sequence[Mapping], split: str, metric: str) -> List[float]:
    """One value per run from records ``{'scores': {split: {metric: ...}}}``."""
    return [run['scores'][split][metric] for run in runs]
