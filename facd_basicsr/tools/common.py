"""Shared helpers of the ``facd-*`` tools: network from a YAML + checkpoint, image I/O, argument helpers.

A network is described either by a BasicSR option file (train or test) and one of its network blocks
(``network_g`` by default), or by a YAML file holding a bare block such as ``{type: EDSR, num_feat: 64, ...}``.
Any architecture in BasicSR's ``ARCH_REGISTRY`` works, including the ones this package registers.
"""
import argparse
import inspect
import os
import os.path as osp
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import basicsr.archs  # noqa: F401  (registers BasicSR's architectures; the parent package ran the compat alias)
import cv2
import numpy as np
import torch
import yaml
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def load_yaml(path: str) -> Dict[str, Any]:
    """Read a YAML file into a dict; ``FileNotFoundError``/``ValueError`` name the file on failure."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'YAML file not found: {path}')
    with open(path, encoding='utf-8') as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a YAML mapping at the top level, got {type(data).__name__}')
    return data


def arch_opt_from_yaml(path: str, net_key: Optional[str] = None) -> Dict[str, Any]:
    """The architecture block ``{type: ..., **kwargs}`` of a YAML file.

    Args:
        path (str): a BasicSR option file (with ``net_key``) or a YAML holding a bare block (``net_key=None``).
        net_key (str | None): key of the block in an option file, e.g. ``network_g`` or ``network_t``.

    Returns:
        dict: a copy of the block, ``type`` included.
    """
    data = load_yaml(path)
    if net_key is None:
        block = data
    elif net_key in data:
        block = data[net_key]
    else:
        found = sorted(k for k in data if str(k).startswith('network_'))
        raise KeyError(f'{path}: no {net_key!r} block. Network blocks in this file: {found or "none"}')
    if not isinstance(block, dict) or not isinstance(block.get('type'), str):
        where = f'block {net_key!r}' if net_key else 'bare architecture block'
        raise ValueError(f'{path}: the {where} needs a string key "type" naming a registered architecture')
    return dict(block)


def arch_class(arch_type: str) -> type:
    """The class registered as ``arch_type`` in BasicSR's ``ARCH_REGISTRY``."""
    if arch_type not in ARCH_REGISTRY:
        names = ', '.join(sorted(name for name, _ in ARCH_REGISTRY))
        raise KeyError(f'Architecture type {arch_type!r} is not registered. Registered: {names}')
    return ARCH_REGISTRY.get(arch_type)


def full_arch_opt(arch_opt: Dict[str, Any]) -> Dict[str, Any]:
    """``arch_opt`` completed with the constructor's defaults for every keyword the block leaves out."""
    cls = arch_class(arch_opt['type'])
    full = {'type': arch_opt['type']}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name != 'self' and param.default is not inspect.Parameter.empty:
            full[name] = param.default
    full.update(arch_opt)
    return full


def build_arch(arch_opt: Dict[str, Any]) -> nn.Module:
    """Instantiate the architecture ``arch_opt['type']`` with the remaining keys as keyword arguments."""
    kwargs = {k: v for k, v in arch_opt.items() if k != 'type'}
    try:
        return arch_class(arch_opt['type'])(**kwargs)
    except TypeError as err:
        raise ValueError(f'Cannot build {arch_opt["type"]} from {kwargs}: {err}') from err


def load_checkpoint(net: nn.Module, path: str, param_key: Optional[str] = None) -> str:
    """Load a BasicSR checkpoint ``{param_key: state_dict}`` into ``net`` strictly.

    Args:
        net (nn.Module): the network, already built.
        path (str): ``.pth`` file written by BasicSR's ``save_network`` (or a bare state dict).
        param_key (str | None): key to read; None takes ``params_ema`` when present, else ``params``.

    Returns:
        str: the key that was used (``'<state_dict>'`` for a bare state dict).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: expected a dict checkpoint, got {type(ckpt).__name__}')
    bare = all(torch.is_tensor(v) for v in ckpt.values())
    if param_key is None:
        param_key = next((k for k in ('params_ema', 'params') if k in ckpt), '<state_dict>' if bare else None)
        if param_key is None:
            raise KeyError(f'{path}: neither "params_ema" nor "params" found. Keys: {sorted(ckpt)}')
    elif param_key not in ckpt:
        raise KeyError(f'{path}: param key {param_key!r} not found. Keys: {sorted(ckpt)}')
    state = ckpt if param_key == '<state_dict>' else ckpt[param_key]
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    return param_key


def infer_scale(net: nn.Module, num_in_ch: int = 3, size: int = 16) -> int:
    """Up-scaling factor of ``net``, measured with one forward pass on a ``size`` x ``size`` input."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    with torch.inference_mode():
        out = net(torch.zeros(1, num_in_ch, size, size, device=device))
    if out.shape[-1] % size or out.shape[-2] != out.shape[-1]:
        raise ValueError(f'Cannot infer an integer scale: input {size}x{size} gave output {tuple(out.shape[-2:])}')
    return out.shape[-1] // size


def add_network_args(parser: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """Add ``--opt/--net-key`` or ``--arch-yaml`` (one required) and, with ``checkpoint``, ``--ckpt/--param-key``."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--opt', help='BasicSR option file (train or test) holding the network block')
    group.add_argument('--arch-yaml', help='YAML file holding a bare block {type: EDSR, num_feat: 64, ...}')
    parser.add_argument('--net-key', default='network_g', help='network block of --opt. Default: network_g')
    if checkpoint:
        parser.add_argument('--ckpt', required=True, help='checkpoint (.pth) saved by BasicSR')
        parser.add_argument(
            '--param-key',
            default=None,
            help='key inside the checkpoint. Default: params_ema when present, else params')


def arch_opt_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The architecture block selected by ``--opt/--net-key`` or ``--arch-yaml``."""
    if args.opt:
        return arch_opt_from_yaml(args.opt, args.net_key)
    return arch_opt_from_yaml(args.arch_yaml, None)


def network_from_args(args: argparse.Namespace, device: torch.device) -> Tuple[nn.Module, Dict[str, Any], str]:
    """Build the network of ``args``, load ``--ckpt`` and put it in eval mode on ``device``.

    Returns:
        tuple: (network, full architecture options with defaults, param key used).
    """
    arch_opt = arch_opt_from_args(args)
    net = build_arch(arch_opt)
    used_key = load_checkpoint(net, args.ckpt, args.param_key)
    net.eval().requires_grad_(False)
    return net.to(device), full_arch_opt(arch_opt), used_key


def config_error(err: Exception) -> int:
    """Print a configuration error (bad file, key or value) to stderr; returns the exit code 2."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f'error: {text}', file=sys.stderr)
    return 2


def pick_device(name: str) -> torch.device:
    """``'auto'`` (CUDA when available), ``'cpu'`` or ``'cuda[:i]'``."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {name}: CUDA is not available here; use cpu or auto')
    return torch.device(name)


def parse_size(text: str) -> Tuple[int, int]:
    """``'HxW'`` (or a single ``'N'`` for a square) as ``(H, W)``; an ``argparse`` type."""
    parts = text.lower().split('x')
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f'size {text!r} is not HxW with positive integers (e.g. 64x48)')
    return sizes[0], sizes[1]


def list_images(folder: str) -> List[str]:
    """Sorted paths of the files in ``folder`` (non-recursive) whose extension looks like an image."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'Image folder not found: {folder}')
    names = sorted(n for n in os.listdir(folder) if osp.splitext(n)[1].lower() in IMG_EXTENSIONS)
    return [osp.join(folder, n) for n in names]


def read_image(path: str) -> Optional[np.ndarray]:
    """A colour image as uint8 BGR ``(H, W, 3)``; None when the file cannot be read or decoded."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    return img


def write_image(path: str, img: np.ndarray) -> None:
    """Write a uint8 BGR image (format from the extension), creating the folder; ``OSError`` on failure."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    ok, buf = cv2.imencode(osp.splitext(path)[1] or '.png', img)
    if not ok:
        raise OSError(f'Cannot encode image for {path}')
    buf.tofile(path)


def img_to_tensor(img: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 BGR ``(H, W, 3)`` to float RGB ``(1, 3, H, W)`` in [0, 1]."""
    rgb = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))
    return torch.from_numpy(rgb).float().div_(255.).unsqueeze(0).to(device)


def tensor_to_img(tensor: torch.Tensor) -> np.ndarray:
    """Float RGB ``(1, 3, H, W)`` in [0, 1] to uint8 BGR ``(H, W, 3)``, clamped and rounded as BasicSR does."""
    arr = tensor.detach().float().cpu().clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    return np.ascontiguousarray((arr * 255.).round().astype(np.uint8)[..., ::-1])


def self_ensemble(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x8 geometric self-ensemble: mean of ``T^-1(forward(T(x)))`` over the 8 flips/rotations ``T``.

    Args:
        forward (callable): maps an LR batch ``(N, C, h, w)`` to its SR batch ``(N, C, h*s, w*s)``.
        x (Tensor): LR batch ``(N, C, h, w)``.

    Returns:
        Tensor: the averaged SR batch ``(N, C, h*s, w*s)``.
    """
    total = None
    for flip in (False, True):
        for turns in range(4):
            xt = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
            y = torch.rot90(forward(xt), -turns, dims=(-2, -1))
            y = y.flip(-1) if flip else y
            total = y if total is None else total + y
    return total / 8


def tiled_forward(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int,
                  overlap: int) -> torch.Tensor:
    """Run ``forward`` on ``tile`` x ``tile`` LR tiles, each extended by ``overlap`` pixels, and stitch the outputs.

    Each tile's output keeps only its core (the tile without the overlap margin). The result equals the
    whole-image output when ``overlap`` (LR pixels) covers the network's receptive-field radius and the network
    has no image-wide operation (RCAN's channel attention pools the whole input, so there it is approximate).

    Args:
        forward (callable): maps an LR batch ``(N, C, h, w)`` to its SR batch ``(N, C', h*s, w*s)``.
        x (Tensor): LR batch ``(N, C, H, W)``.
        tile (int): tile side in LR pixels; 0 (or a tile covering the image) runs the whole image at once.
        overlap (int): margin added on every side of a tile, in LR pixels.

    Returns:
        Tensor: SR batch ``(N, C', H*s, W*s)``.
    """
    if tile < 0 or overlap < 0:
        raise ValueError(f'tile ({tile}) and overlap ({overlap}) must be >= 0')
    height, width = x.shape[-2:]
    if tile == 0 or (height <= tile and width <= tile):
        return forward(x)
    out, scale = None, 0
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            top0, left0 = max(top - overlap, 0), max(left - overlap, 0)
            bottom0, right0 = min(bottom + overlap, height), min(right + overlap, width)
            y = forward(x[..., top0:bottom0, left0:right0])
            if out is None:
                scale = y.shape[-1] // (right0 - left0)
                out = y.new_zeros(*y.shape[:-2], height * scale, width * scale)
            if tuple(y.shape[-2:]) != ((bottom0 - top0) * scale, (right0 - left0) * scale):
                raise ValueError(f'Tile output {tuple(y.shape[-2:])} is not {scale}x the tile input')
            core = y[..., (top - top0) * scale:(bottom - top0) * scale, (left - left0) * scale:(right - left0) * scale]
            out[..., top * scale:bottom * scale, left * scale:right * scale] = core
    return out
