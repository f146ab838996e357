"""A safe, CPU-capable replacement for ``basicsr.train.load_resume_state`` (runs of our models), and the one-line
CPU fix of BasicSR's own (every other run: :func:`cpu_capable`).

BasicSR's version unpickles the training state with ``weights_only=False`` (a ``.state`` file planted in the
experiment folder runs its code on ``--auto_resume``), always calls ``torch.cuda.current_device()`` (so resuming
crashes without CUDA) and trusts the newest ``.state`` even when it was cut short. Ours:

* loads every state with ``weights_only=True`` (plus :data:`~facd_basicsr.host.checkpoint.STATE_SAFE_GLOBALS`);
* maps it onto the current GPU when there is one and onto the CPU otherwise;
* resumes from the newest *complete* checkpoint: a ``.state`` that loads, whose ``net_g_<iter>.pth`` and other
  ``net_*_<iter>.pth`` files load too. With ``--auto_resume`` an incomplete newer one is skipped with a warning
  naming it (a checkpoint whose writing was interrupted); an explicit ``path.resume_state`` that is incomplete is an
  error naming it and the newest complete one.

Everything else (``check_resume`` rewriting the network paths) is BasicSR's behaviour.
"""
import functools
import glob
import logging
import os.path as osp
from typing import Callable, List, Optional, Tuple

import torch
from basicsr.utils import scandir
from basicsr.utils.misc import check_resume

from facd_basicsr.host.checkpoint import STATE_SAFE_GLOBALS, CheckpointError, safe_torch_load

STATE_KEYS = ('epoch', 'iter', 'optimizers', 'schedulers')


def state_map_location():
    """``map_location`` for ``torch.load``: the current GPU when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        return lambda storage, loc: storage.cuda(device_id)
    return 'cpu'


def read_training_state(path: str, option: str = 'path.resume_state', map_location='cpu') -> dict:
    """BasicSR's training state ``path`` (``{epoch, iter, optimizers, schedulers}``), loaded without running code.

    Raises:
        FileNotFoundError, CheckpointError: missing, unreadable or not a training state; the message names ``path``.
    """
    state = safe_torch_load(path, option, 'training state', STATE_SAFE_GLOBALS, map_location)
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f'{option}: {path} is not a BasicSR training state (expected keys {STATE_KEYS}, '
                              f'found {found})')
    return state


def state_files(state_dir: str) -> List[str]:
    """``<iter>.state`` files of ``state_dir``, newest (highest iteration) first."""
    if not osp.isdir(state_dir):
        return []
    names = list(scandir(state_dir, suffix='state', recursive=False))
    return [osp.join(state_dir, n) for n in sorted(names, key=lambda n: -int(float(n.split('.state')[0])))]


def check_checkpoint(opt: dict, state_path: str, map_location='cpu') -> Tuple[Optional[dict], Optional[str]]:
    """(state, None) when ``state_path`` and the networks it resumes load safely, else (None, why not)."""
    try:
        state = read_training_state(state_path, 'path.resume_state', map_location)
    except (CheckpointError, FileNotFoundError) as err:
        return None, str(err)
    models = opt['path']['models']
    net_g = osp.join(models, f'net_g_{state["iter"]}.pth')
    nets = sorted(set(glob.glob(osp.join(glob.escape(models), f'net_*_{state["iter"]}.pth'))) | {net_g})
    for path in nets:
        try:
            safe_torch_load(path, f'the checkpoint of {state_path}', 'network file')
        except (CheckpointError, FileNotFoundError) as err:
            return None, str(err)
    return state, None


def find_complete_state(opt: dict, map_location='cpu') -> Tuple[Optional[str], Optional[dict], List[str]]:
    """The newest complete checkpoint of ``opt['path']['training_states']``: (path, state, problems of newer ones)."""
    problems = []
    for path in state_files(opt['path']['training_states']):
        state, problem = check_checkpoint(opt, path, map_location)
        if state is not None:
            return path, state, problems
        problems.append(problem)
    return None, None, problems


def load_resume_state(opt: dict) -> Optional[dict]:
    """Drop-in for ``basicsr.train.load_resume_state``: safe, CPU-capable, never from an incomplete checkpoint.

    Args:
        opt (dict): parsed options; ``opt['path']['resume_state']`` is set when auto-resuming.

    Returns:
        dict | None: the training state (``epoch``, ``iter``, ``optimizers``, ``schedulers``).

    Raises:
        CheckpointError: the checkpoint to resume is incomplete or unsafe (and, with ``--auto_resume``, no complete
            one exists although ``.state`` files do).
    """
    location = state_map_location()
    if opt['auto_resume']:
        path, state, problems = find_complete_state(opt, location)
        if problems and path is None:
            raise CheckpointError('--auto_resume: no complete checkpoint to resume from: ' + ' | '.join(problems))
        for problem in problems:
            logging.getLogger('basicsr').warning(f'--auto_resume skips an incomplete checkpoint: {problem}')
        if path is not None:
            if problems:
                logging.getLogger('basicsr').warning(f'--auto_resume resumes from {path}, the newest complete one')
            opt['path']['resume_state'] = path
            check_resume(opt, state['iter'])
            return state
    state_path = opt['path'].get('resume_state')
    if not state_path:
        return None
    state, problem = check_checkpoint(opt, state_path, location)
    if state is None:
        good, _, _ = find_complete_state(opt)
        hint = f'the newest complete checkpoint is {good}' if good else 'there is no complete checkpoint'
        raise CheckpointError(f'{problem}; {hint} (--auto_resume picks the newest complete one)')
    check_resume(opt, state['iter'])
    return state


def cpu_capable(stock_load_resume_state: Callable) -> Callable:
    """BasicSR's ``load_resume_state`` where CUDA is available; without CUDA (where it crashes in
    ``torch.cuda.current_device()``) the same choice of state, loaded onto the CPU. Nothing else changes."""
    if getattr(stock_load_resume_state, 'facd_cpu_capable', False):
        return stock_load_resume_state

    @functools.wraps(stock_load_resume_state)
    def load(opt: dict) -> Optional[dict]:
        if torch.cuda.is_available():
            return stock_load_resume_state(opt)
        path = opt['path'].get('resume_state')
        if opt['auto_resume']:
            newest = state_files(osp.join('experiments', opt['name'], 'training_states'))
            path = newest[0] if newest else None
            if path is not None:
                opt['path']['resume_state'] = path
        if not path:
            return None
        state = torch.load(path, map_location='cpu')
        check_resume(opt, state['iter'])
        return state

    load.facd_cpu_capable = True
    return load
