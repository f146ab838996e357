"""A CPU-safe replacement for ``basicsr.train.load_resume_state``.

BasicSR's version always calls ``torch.cuda.current_device()`` and maps the state onto that GPU, so
``--auto_resume`` crashes on a machine without CUDA. Ours maps onto the current GPU when there is one and onto the
CPU otherwise; everything else (auto-resume lookup, ``check_resume``) is BasicSR's behaviour.
"""
import os.path as osp
from typing import Optional

import torch
from basicsr.utils import scandir
from basicsr.utils.misc import check_resume


def find_latest_state(experiment_name: str) -> Optional[str]:
    """Path of the highest-iteration ``.state`` file of ``experiments/<name>/training_states``, or None."""
    state_dir = osp.join('experiments', experiment_name, 'training_states')
    if not osp.isdir(state_dir):
        return None
    iters = [int(float(v.split('.state')[0])) for v in scandir(state_dir, suffix='state', recursive=False)]
    return osp.join(state_dir, f'{max(iters)}.state') if iters else None


def state_map_location():
    """``map_location`` for ``torch.load``: the current GPU when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        return lambda storage, loc: storage.cuda(device_id)
    return 'cpu'


def load_resume_state(opt: dict) -> Optional[dict]:
    """Drop-in for ``basicsr.train.load_resume_state`` that also works without CUDA.

    Args:
        opt (dict): parsed options; ``opt['path']['resume_state']`` is set when auto-resuming.

    Returns:
        dict | None: the training state (``epoch``, ``iter``, ``optimizers``, ``schedulers`` ...).
    """
    if opt['auto_resume']:
        latest = find_latest_state(opt['name'])
        if latest is not None:
            opt['path']['resume_state'] = latest
    state_path = opt['path'].get('resume_state')
    if not state_path:
        return None
    resume_state = torch.load(state_path, map_location=state_map_location(), weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state
