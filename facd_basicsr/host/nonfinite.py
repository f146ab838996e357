"""Non-finite losses and weights: found at the step they appear, never written into a checkpoint.

``train.nonfinite: stop`` (default) stops the run at the first step whose loss has a NaN or Inf term, naming the
terms, the iteration and the batch (``lq_path`` / ``gt_path``: file paths, or LMDB keys); ``skip`` logs the same and
skips that step (no backward, no optimizer step, no EMA update). Independently, a checkpoint is never written when
a saved network has a non-finite weight (a finite loss can still give an overflowing update).
"""
import glob
import math
import os.path as osp
from typing import Dict, List, Mapping, Optional

import torch
from basicsr.utils import get_root_logger
from torch import nn


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or Inf (``train.nonfinite: stop``)."""


class NonFiniteWeightsError(FloatingPointError):
    """A network about to be saved has NaN or Inf weights; nothing was written."""


def nonfinite_terms(loss_dict: Mapping[str, Optional[torch.Tensor]], total: torch.Tensor) -> Dict[str, float]:
    """``{name: value}`` of the loss terms (``l_*`` keys) that are not finite; the total only when no term is.

    Other logged values (``gate_on``, ``d_pos`` ...) are diagnostics, not terms of the loss, and are not checked.
    """
    terms = {k: v.detach().float().mean() for k, v in loss_dict.items() if k.startswith('l_') and torch.is_tensor(v)}
    if bool(torch.isfinite(torch.stack([*terms.values(), total.detach().float().reshape(())])).all()):
        return {}  # one device sync per step
    bad = {k: float(v) for k, v in terms.items() if not math.isfinite(float(v))}
    total_value = float(total.detach().float())
    if not bad and not math.isfinite(total_value):
        bad['l_total'] = total_value
    return bad


def any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` on any process of a distributed run (every rank must skip the same step, or DDP hangs)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([1. if flag else 0.], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def describe_batch(batch_keys: Mapping[str, list], limit: int = 8) -> str:
    """``lq_path [...], gt_path [...]`` of a batch (at most ``limit`` entries each); a note when none are known."""
    parts = []
    for key, values in batch_keys.items():
        values = list(values)
        more = f' + {len(values) - limit} more' if len(values) > limit else ''
        parts.append(f'{key} {[str(v) for v in values[:limit]]}{more}')
    return ', '.join(parts) or 'the dataset gives no lq_path / gt_path'


def newest_checkpoint(opt: dict) -> str:
    """The newest ``.state`` of the run, for messages; 'none yet' when there is none."""
    states = glob.glob(osp.join(glob.escape(opt['path'].get('training_states', '')), '*.state'))
    if not states:
        return 'none yet'
    return max(states, key=lambda p: int(float(osp.basename(p).split('.state')[0])))


def check_step(loss_dict: Mapping[str, Optional[torch.Tensor]], total: torch.Tensor, current_iter: int, mode: str,
               batch_keys: Mapping[str, list], opt: dict, output: Optional[torch.Tensor] = None) -> bool:
    """True when the step must be skipped (``mode`` 'skip' and a non-finite term); raises in mode 'stop'.

    Args:
        loss_dict (dict): the step's logged values; the ``l_*`` ones are checked, with ``total`` (the summed loss).
        current_iter (int): for messages.
        mode (str): ``train.nonfinite``, 'stop' or 'skip'.
        batch_keys (dict): ``lq_path`` / ``gt_path`` lists of the batch, for messages.
        opt (dict): the run's options (to name its newest checkpoint).
        output (Tensor | None): the student output (N, C, H, W); the message says whether it is finite.

    Raises:
        NonFiniteLossError: a term is NaN or Inf and ``mode`` is 'stop'.
    """
    bad = nonfinite_terms(loss_dict, total)
    if not any_rank(bool(bad), total.device):
        return False
    terms = ', '.join(f'{k} = {v}' for k, v in bad.items()) or 'on another rank'
    what = f'iteration {current_iter}: non-finite loss ({terms}) on the batch {describe_batch(batch_keys)}'
    if output is not None:
        what += '; the student output is ' + ('finite' if bool(torch.isfinite(output).all()) else 'not finite')
    if mode == 'skip':
        get_root_logger().warning(f'{what}: step skipped (train.nonfinite: skip)')
        return True
    raise NonFiniteLossError(f'{what}. Stopped (train.nonfinite: stop) before the update; nothing was saved for this '
                             f'step; the newest checkpoint is {newest_checkpoint(opt)}. Lower the learning rate, '
                             'check the data and the teacher, or set train.nonfinite: skip to skip such steps')


def check_weights(nets: Mapping[str, nn.Module], current_iter: int, opt: dict) -> None:
    """Raise :class:`NonFiniteWeightsError` when a tensor of ``nets`` (label -> network) is not finite."""
    bad: List[str] = []
    for label, net in nets.items():
        bad += [f'{label}.{name}' for name, t in net.state_dict().items()
                if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeightsError(f'iteration {current_iter}: not saving a checkpoint whose weights are not finite '
                                    f'({len(bad)} tensors, e.g. {bad[:4]}); the newest checkpoint is '
                                    f'{newest_checkpoint(opt)}')


def check_finite_state(state: Mapping[str, torch.Tensor], path: str, option: str) -> None:
    """``ValueError`` naming ``option`` and ``path`` when a floating-point tensor of ``state`` has a NaN or Inf."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f'{option}: {path} has non-finite weights ({len(bad)} tensors, e.g. {bad[:4]}): a diverged '
                         'or corrupt checkpoint')
