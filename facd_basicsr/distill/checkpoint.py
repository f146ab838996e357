"""Strict checkpoint loading for the teacher, and a fingerprint of its weights.

BasicSR's ``load_network`` silently falls back from a missing param key to ``params``; for the teacher a wrong key
means a wrong teacher, so here every mismatch is an error naming the option and the keys.
"""
import hashlib
import os.path as osp
from typing import Dict

import torch
from torch import nn


def read_state_dict(path: str, param_key: str, option: str) -> Dict[str, torch.Tensor]:
    """The state dict stored under ``param_key`` in the checkpoint ``path`` (``param_key`` None: the file itself).

    Args:
        path (str): checkpoint file.
        param_key (str | None): e.g. 'params' or 'params_ema'.
        option (str): the option that named the file, for messages, e.g. 'path.pretrain_network_t'.
    """
    if not path or not osp.isfile(path):
        raise FileNotFoundError(f'{option}: teacher checkpoint {path!r} does not exist')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if param_key is not None:
        if not isinstance(ckpt, dict) or param_key not in ckpt:
            keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise KeyError(f'{option}: {path} has no param key {param_key!r} (top-level keys: {keys}); '
                           'set path.param_key_t, or use ~ for a bare state dict')
        ckpt = ckpt[param_key]
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in ckpt.items()}


def load_strictly(net: nn.Module, state: Dict[str, torch.Tensor], strict: bool, option: str) -> None:
    """Load ``state`` into ``net``; any missing, unexpected (``strict``) or mis-shaped key raises ValueError."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f'{k}: file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}'
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append('shape mismatches: ' + '; '.join(shapes[:5]))
    if strict and missing:
        problems.append(f'{len(missing)} missing keys, e.g. {missing[:5]}')
    if strict and unexpected:
        problems.append(f'{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}')
    if problems:
        raise ValueError(f'{option}: the checkpoint does not fit the network: ' + ' | '.join(problems))
    net.load_state_dict(state, strict=strict)


def fingerprint(net: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of every tensor in ``net.state_dict()`` (a weights identity)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(f'{name}:{tuple(tensor.shape)}:{tensor.dtype}'.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
