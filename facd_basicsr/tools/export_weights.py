"""Weight files for the tools where people run SR networks: safetensors with metadata, and the official RCAN layout.

* ``safetensors``: the network's state dict under BasicSR's names, plus string metadata: ``arch`` (the registered
  type), ``arch_kwargs`` (its constructor keywords as JSON, defaults included where JSON can hold them), ``scale``
  and ``source``. spandrel (chaiNNer, ComfyUI) detects BasicSR-layout SwinIR, RRDBNet (as ESRGAN) and
  SRVGGNetCompact from these names; traiNNer-redux reads bare safetensors state dicts; our own loaders read it through
  ``facd_basicsr.host.checkpoint`` (:func:`load_safetensors_network` rebuilds the network from the metadata alone).
* ``official`` (RCAN only): the EDSR-PyTorch layout of the RCAN authors (``head.0``,
  ``body.{g}.body.{b}.body.{0,2,3}``, ``tail.1``, the ``sub_mean`` / ``add_mean`` convs), the one spandrel detects as
  RCAN; the inverse of ``facd-convert-teacher``. BasicSR's ``img_range`` is folded into the first and last convs and
  ``rgb_mean`` into the MeanShift biases (the official network scales by 255 and subtracts ``255 * mean``).
  spandrel has no EDSR at all, so EDSR has no ``official`` export: ONNX runs it anywhere.
"""
import json
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from facd_basicsr.host.checkpoint import load_strictly, read_safetensors
from facd_basicsr.host.nonfinite import check_finite_state
from facd_basicsr.tools.common import build_arch

OFFICIAL_RGB_RANGE = 255.
StateDict = Dict[str, torch.Tensor]


def official_format_error(arch_type: str) -> Optional[str]:
    """Why ``--format official`` cannot export ``arch_type`` (None for RCAN, which it can)."""
    if arch_type == 'RCAN':
        return None
    if arch_type == 'EDSR':
        return ('--format official: EDSR has no official-layout export, because spandrel (the loader of chaiNNer and '
                'ComfyUI) has no EDSR architecture; export it with --format onnx (any ONNX runtime) or --format '
                'safetensors (traiNNer-redux, our tools)')
    return (f'--format official: only RCAN has an official layout here, not {arch_type}; spandrel loads BasicSR-layout '
            'SwinIR, RRDBNet and SRVGGNetCompact as they are: use --format safetensors (or onnx)')


def json_kwargs(arch_opt: Dict[str, Any]) -> Dict[str, Any]:
    """The keywords of ``arch_opt`` (``type`` left out) that JSON can hold; others (e.g. ``norm_layer``) are dropped."""

    def plain(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch_opt.items() if k != 'type' and plain(v)}


def safetensors_metadata(arch_opt: Dict[str, Any], scale: int, source: str) -> Dict[str, str]:
    """String metadata of an exported safetensors file (safetensors metadata maps str to str)."""
    return {
        'format': 'pt',
        'arch': arch_opt['type'],
        'arch_kwargs': json.dumps(json_kwargs(arch_opt), sort_keys=True),
        'scale': str(scale),
        'source': source,
        'producer': 'facd-basicsr facd-export',
    }


def load_safetensors_network(path: str, option: str = '--ckpt') -> Tuple[nn.Module, Dict[str, str]]:
    """The BasicSR network of a ``facd-export`` safetensors file, built from its metadata and loaded strictly.

    Returns:
        tuple: (network in eval mode on the CPU, metadata).

    Raises:
        FileNotFoundError, CheckpointError: see ``read_safetensors``.
        ValueError: no ``arch`` / ``arch_kwargs`` metadata, non-finite weights, or weights that do not fit.
    """
    state, metadata = read_safetensors(path, option)
    if 'arch' not in metadata or 'arch_kwargs' not in metadata:
        raise ValueError(f'{option}: {path} has no "arch" / "arch_kwargs" metadata (found {sorted(metadata)}): it was '
                         'not written by facd-export; pass its architecture with --opt or --arch-yaml')
    arch_opt = dict(json.loads(metadata['arch_kwargs']), type=metadata['arch'])
    net = build_arch(arch_opt, f'{path} (metadata)')
    check_finite_state(state, path, option)
    load_strictly(net, state, True, f'{option} {path}')
    return net.eval().requires_grad_(False), metadata


# official EDSR-PyTorch RCAN layout: BasicSR name pattern -> official name ({blocks} / {groups} filled per network)
_RCAN_TO_OFFICIAL = (
    (r'conv_first\.', 'head.0.'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.([02])\.', r'body.\1.body.\2.body.\3.'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.1\.', r'body.\1.body.\2.body.3.conv_du.0.'),
    (r'body\.(\d+)\.residual_group\.(\d+)\.rcab\.3\.attention\.3\.', r'body.\1.body.\2.body.3.conv_du.2.'),
    (r'body\.(\d+)\.conv\.', r'body.\1.body.{blocks}.'),
    (r'conv_after_body\.', 'body.{groups}.'),
    (r'upsample\.(\d+)\.', r'tail.0.\1.'),
    (r'conv_last\.', 'tail.1.'),
)


def _official_name(key: str, blocks: int, groups: int) -> str:
    for pattern, target in _RCAN_TO_OFFICIAL:
        match = re.match(pattern, key)
        if match:
            return match.expand(target.format(blocks=blocks, groups=groups)) + key[match.end():]
    raise ValueError(f'--format official: the RCAN key {key!r} has no place in the official layout (is this '
                     'BasicSR\'s RCAN?)')


def official_rcan_state(state: StateDict, arch_opt: Dict[str, Any]) -> StateDict:
    """A BasicSR ``RCAN`` state dict in the official EDSR-PyTorch layout, computing the same function.

    Args:
        state (dict): BasicSR ``RCAN`` state dict.
        arch_opt (dict): its full options (``num_block``, ``num_group``, ``img_range``, ``rgb_mean``, ...).

    Raises:
        ValueError: a network the official RCAN cannot express (``res_scale`` != 1, not 3 channels in and out).
    """
    if float(arch_opt.get('res_scale', 1)) != 1:
        raise ValueError(f'--format official: RCAN res_scale {arch_opt["res_scale"]} cannot be written in the '
                         'official layout (its RCAB adds the residual unscaled); use --format safetensors or onnx')
    if (arch_opt.get('num_in_ch'), arch_opt.get('num_out_ch')) != (3, 3):
        raise ValueError('--format official: the official RCAN takes and gives 3-channel RGB (its MeanShift convs), '
                         f'not {arch_opt.get("num_in_ch")} -> {arch_opt.get("num_out_ch")}; use --format onnx')
    img_range = float(arch_opt.get('img_range', OFFICIAL_RGB_RANGE))
    mean = torch.tensor([float(v) for v in arch_opt.get('rgb_mean', (0.4488, 0.4371, 0.4040))])
    out = {_official_name(k, arch_opt['num_block'], arch_opt['num_group']): v.detach().cpu().float().clone()
           for k, v in state.items()}
    # official: head(255 * x - 255 * mean); BasicSR: conv_first(img_range * (x - mean)); likewise at the tail
    out['head.0.weight'] *= img_range / OFFICIAL_RGB_RANGE
    out['tail.1.weight'] *= OFFICIAL_RGB_RANGE / img_range
    out['tail.1.bias'] *= OFFICIAL_RGB_RANGE / img_range
    eye = torch.eye(3).view(3, 3, 1, 1)
    out.update({
        'sub_mean.weight': eye.clone(),
        'sub_mean.bias': -OFFICIAL_RGB_RANGE * mean,
        'add_mean.weight': eye.clone(),
        'add_mean.bias': OFFICIAL_RGB_RANGE * mean
    })
    return out


def check_with_spandrel(path: str, inputs: List[torch.Tensor],
                        reference: List[np.ndarray]) -> Tuple[str, int, List[float]]:
    """(architecture id, scale, max abs difference per input) of ``path`` loaded by ``spandrel.ModelLoader``.

    Raises:
        ImportError: spandrel is not installed.
        ValueError: spandrel does not recognise the file (its ``UnsupportedModelError``) or cannot load it.
    """
    import spandrel
    try:
        model = spandrel.ModelLoader(device='cpu').load_from_file(path)
    except Exception as err:  # noqa: B902  (UnsupportedModelError, a size mismatch of a guessed hyper-parameter ...)
        raise ValueError(f'spandrel cannot load {path}: {type(err).__name__}: {str(err).splitlines()[0]}') from None
    model.model.eval()
    if any(tuple(ref.shape[-2:]) != (x.shape[-2] * model.scale, x.shape[-1] * model.scale)
           for x, ref in zip(inputs, reference)):
        return model.architecture.id, int(model.scale), [float('inf')] * len(inputs)  # another scale: no comparison
    with torch.inference_mode():
        diffs = [float(np.abs(model.model(x.clone()).numpy() - ref).max()) for x, ref in zip(inputs, reference)]
    return model.architecture.id, int(model.scale), diffs
