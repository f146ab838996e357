"""Non-finite losses and weights: found at the step they appear, never written into a checkpoint.

``train.nonfinite: stop`` (default) stops the run at the first step whose loss has a NaN or Inf term, naming the
terms, the iteration and the batch (``lq_path`` / ``gt_path``: file paths, or LMDB keys); ``skip`` logs the same and
skips that step (no backward, no optimizer step, no EMA update), and stops the run once
``train.nonfinite_skip_limit`` (default 100) steps in a row were skipped: a run that diverged for good ends with an
error, not with "End of training". Independently, a checkpoint is never written when a saved network has a
non-finite weight, or when the student's output on the current batch is not finite (finite weights as large as
1e30 still give NaN outputs).
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


class NonFiniteSkips:
    """Counts the steps ``train.nonfinite: skip`` skipped; stops the run after ``limit`` in a row."""

    def __init__(self, limit: int) -> None:
        self.limit, self.consecutive, self.total = limit, 0, 0

    def record(self, skipped: bool, current_iter: int, opt: dict) -> None:
        """Count one step; raise :class:`NonFiniteLossError` when ``limit`` steps in a row were skipped."""
        if not skipped:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.limit:
            raise NonFiniteLossError(f'iteration {current_iter}: {self.consecutive} steps in a row had a non-finite '
                                     f'loss and were skipped (train.nonfinite_skip_limit: {self.limit}): the run has '
                                     f'diverged. {self.summary()} The newest checkpoint is {newest_checkpoint(opt)}; '
                                     'lower the learning rate and resume from it, or start again')

    def summary(self) -> str:
        return f'train.nonfinite: skip skipped {self.total} step(s) in this run.'

    def state_dict(self) -> dict:
        return {'consecutive': self.consecutive, 'total': self.total}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state:
            self.consecutive, self.total = int(state['consecutive']), int(state['total'])


@torch.no_grad()
def check_output(net: nn.Module, lq: torch.Tensor, current_iter: int, opt: dict,
                 batch_keys: Optional[Mapping[str, list]] = None) -> None:
    """Raise :class:`NonFiniteWeightsError` when ``net``'s output on ``lq`` (the current batch) is not finite."""
    was_training = net.training
    net.eval()
    try:
        finite = bool(torch.isfinite(net(lq)).all())
    finally:
        net.train(was_training)
    if not finite:
        raise NonFiniteWeightsError(f'iteration {current_iter}: not saving a checkpoint whose student gives a '
                                    f'non-finite output on the current batch {describe_batch(batch_keys or {})} (its '
                                    f'weights are finite, but the run has diverged); the newest checkpoint is '
                                    f'{newest_checkpoint(opt)}. Lower the learning rate')


def check_finite_state(state: Mapping[str, torch.Tensor], path: str, option: str) -> None:
    """``ValueError`` naming ``option`` and ``path`` when a floating-point tensor of ``state`` has a NaN or Inf."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f'{option}: {path} has non-finite weights ({len(bad)} tensors, e.g. {bad[:4]}): a diverged '
                         'or corrupt checkpoint')
