"""What the adaptive gate did, per iteration: the share of patches it kept and the teacher's PSNR advantage.

``distill.gate_log: true`` writes ``gate_log.csv`` into the experiment's log folder (rank 0, its local batch; a
resumed run appends, so an iteration can appear twice: the last row counts). Columns: ``iter``, ``gate_on`` (mean
g_i over the batch; for a 0/1 gate the share of patches kept), and the teacher's advantage PSNR(SR^T_i) -
PSNR(SR^S_i) in dB over the batch's patches: ``adv_mean``, ``adv_min``, ``adv_p10``, ``adv_p50``, ``adv_p90``,
``adv_max``. The gate is per patch, so every tap sees the same g_i. The quantiles also go to BasicSR's log as
``gate_adv_p10/p50/p90`` whenever the gate computed the advantage (under DDP: the mean over ranks of each
rank's own quantiles).
"""
import csv
import os
import os.path as osp
from typing import Dict, List, Optional

import torch

COLUMNS = ('iter', 'gate_on', 'adv_mean', 'adv_min', 'adv_p10', 'adv_p50', 'adv_p90', 'adv_max')


def advantage_quantiles(advantage: torch.Tensor) -> torch.Tensor:
    """The 10 / 50 / 90 % quantiles of a (N,) advantage tensor in dB, shape (3,), on its device (no copy, no sync)."""
    adv = advantage.detach().float()
    return torch.quantile(adv, adv.new_tensor([0.1, 0.5, 0.9]))


def advantage_stats(advantage: torch.Tensor) -> Dict[str, float]:
    """Mean, min, 10/50/90 % quantiles and max of a (N,) advantage tensor, in dB."""
    adv = advantage.detach().float().cpu()
    quantiles = advantage_quantiles(adv).tolist()
    return {'adv_mean': adv.mean().item(), 'adv_min': adv.min().item(), 'adv_p10': quantiles[0],
            'adv_p50': quantiles[1], 'adv_p90': quantiles[2], 'adv_max': adv.max().item()}


class GateLog:
    """Appends one row per training iteration to ``path`` (a CSV file with the :data:`COLUMNS` header)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        if not osp.isfile(path) or osp.getsize(path) == 0:
            with open(path, 'w', newline='') as f:
                csv.writer(f).writerow(COLUMNS)

    def write(self, current_iter: int, gate: torch.Tensor, advantage: Optional[torch.Tensor]) -> None:
        row = {'iter': current_iter, 'gate_on': gate.float().mean().item()}
        row.update(advantage_stats(advantage) if advantage is not None else {})
        with open(self.path, 'a', newline='') as f:
            csv.writer(f).writerow([_cell(row.get(key)) for key in COLUMNS])


def _cell(value) -> str:
    if value is None:
        return ''
    return str(value) if isinstance(value, int) else f'{value:.4f}'


def read_gate_log(path: str) -> List[Dict[str, float]]:
    """The rows of a ``gate_log.csv``, one per iteration (the last row written for it), in iteration order."""
    by_iter = {}
    with open(path, newline='') as f:
        for row in csv.DictReader(f):
            by_iter[int(row['iter'])] = {k: float(v) for k, v in row.items() if v != ''}
    return [by_iter[i] for i in sorted(by_iter)]
