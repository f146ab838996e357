"""Shared helpers of the ``facd-*`` tools: network from a YAML + checkpoint, image files, argument helpers.

A network is described either by a BasicSR option file (train or test) and one of its network blocks
(``network_g`` by default), or by a YAML file holding a bare block such as ``{type: EDSR, num_feat: 64, ...}``.
Any architecture in BasicSR's ``ARCH_REGISTRY`` works, including the ones this package registers. Networks are
built by BasicSR's ``build_network`` and checkpoints read by the package's one strict reader
(``facd_basicsr.host.checkpoint``); the wrappers here only add messages that name the file at fault.
"""
import argparse
import inspect
import os
import os.path as osp
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from facd_basicsr.host.checkpoint import is_safetensors, load_strictly, read_state_dict
from facd_basicsr.host.option_file import load_option_file

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
DEFAULT_PARAM_KEY = 'params'  # what BasicSR's load_network reads unless an option file says otherwise
BARE_STATE_DICT = 'none'  # --param-key none: the checkpoint file is the state dict itself


def load_yaml(path: str) -> Dict[str, Any]:
    """Read an option file (or a bare architecture block) with the package's safe reader.

    Returns:
        dict: the top-level mapping (an ``OrderedDict``, as BasicSR reads it).

    Raises:
        OptionFileError: (a ``ValueError``) a missing or unreadable file, invalid YAML, a tag that would construct a
            Python object, or a top level that is not a mapping; the message names the file (and the line).
    """
    return load_option_file(path)


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


def check_registered(arch_opt: Dict[str, Any], source: str) -> None:
    """``KeyError`` naming ``source`` and every registered name when ``arch_opt['type']`` is not in the registry.

    BasicSR's ``ARCH_REGISTRY.get`` prints a suffix hint and raises without naming the file or the valid names. Like
    ``ARCH_REGISTRY.get``, a name registered with BasicSR's ``_basicsr`` suffix (``SRVGGNetCompact`` is registered as
    ``SRVGGNetCompact_basicsr`` in 1.4.2) is accepted under its plain name.
    """
    if arch_opt['type'] not in ARCH_REGISTRY and f'{arch_opt["type"]}_basicsr' not in ARCH_REGISTRY:
        names = ', '.join(sorted(name for name, _ in ARCH_REGISTRY))
        raise KeyError(f'{source}: architecture type {arch_opt["type"]!r} is not registered. Registered: {names}')


def build_arch(arch_opt: Dict[str, Any], source: str = 'architecture block') -> nn.Module:
    """BasicSR's ``build_network(arch_opt)``; an unknown type or keyword raises an error naming ``source``.

    Args:
        arch_opt (dict): ``{type: ..., **kwargs}``, e.g. a ``network_g`` block.
        source (str): where the block comes from, for messages, e.g. ``'train.yml (network_g)'``.
    """
    check_registered(arch_opt, source)
    try:
        return build_network(dict(arch_opt))
    except TypeError as err:  # an unexpected or missing keyword of the architecture's constructor
        raise ValueError(f'{source}: cannot build {arch_opt["type"]}: {err}') from err


def full_arch_opt(arch_opt: Dict[str, Any]) -> Dict[str, Any]:
    """``arch_opt`` completed with the constructor's defaults for every keyword the block leaves out."""
    check_registered(arch_opt, 'architecture block')
    full = {'type': arch_opt['type']}
    for name, param in inspect.signature(ARCH_REGISTRY.get(arch_opt['type']).__init__).parameters.items():
        if name != 'self' and param.default is not inspect.Parameter.empty:
            full[name] = param.default
    full.update(arch_opt)
    return full


def _has_param_key(path: str, param_key: str) -> bool:
    """Whether the checkpoint ``path`` holds ``param_key`` (read by the package's strict reader)."""
    try:
        read_state_dict(path, param_key, '--ckpt')
    except KeyError:
        return False
    return True


def _missing_key_message(path: str, param_key: str) -> str:
    """Why ``param_key`` cannot be read from ``path``, naming the BasicSR keys the file does hold."""
    present = [key for key in ('params', 'params_ema') if key != param_key and _has_param_key(path, key)]
    if present:
        hint = ' or '.join(f'--param-key {key}' for key in present)
        return f'--ckpt {path}: no param key {param_key!r}; the file holds {present}: pass {hint}'
    return (f'--ckpt {path}: no param key {param_key!r}, nor "params" or "params_ema" (BasicSR\'s keys); pass '
            f'--param-key with the key that holds the state dict, or --param-key {BARE_STATE_DICT} for a bare one')


def load_checkpoint(net: nn.Module, path: str, param_key: Optional[str] = None, network: str = 'the network') -> str:
    """Load ``path[param_key]`` into ``net`` strictly, through ``host.checkpoint`` (the package's one reader).

    No key is ever picked silently: ``param_key`` None reads ``params`` (as BasicSR's ``load_network``) and, when
    the file also holds ``params_ema``, prints a note to stderr saying so.

    Args:
        net (nn.Module): the network, already built.
        path (str): ``.pth`` file written by BasicSR's ``save_network``, ``{param_key: state_dict}``.
        param_key (str | None): key to read; ``'none'`` for a file that is a bare state dict. Default: ``params``.
        network (str): the network, for messages, e.g. ``'EDSR from arch.yml'``.

    Returns:
        str: the key that was used.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    key = DEFAULT_PARAM_KEY if param_key is None else param_key
    if param_key is None and is_safetensors(path):
        key = BARE_STATE_DICT  # a safetensors file is a bare state dict: there is no key to choose
    try:
        state = read_state_dict(path, None if key.lower() == BARE_STATE_DICT else key, '--ckpt')
    except KeyError:
        raise KeyError(_missing_key_message(path, key)) from None
    load_strictly(net, state, True, f'--ckpt {path} ({network})')
    if param_key is None and _has_param_key(path, 'params_ema'):
        print(
            f'note: {path} also holds "params_ema" (EMA weights); this run uses "{key}". '
            'Pass --param-key params_ema to use the EMA weights.',
            file=sys.stderr)
    return key


def load_network(arch_opt: Dict[str, Any],
                 path: str,
                 param_key: str = DEFAULT_PARAM_KEY,
                 source: str = 'architecture block') -> nn.Module:
    """Build ``arch_opt`` (BasicSR's ``build_network``), load ``path`` strictly; frozen, eval mode, on the CPU.

    Args:
        arch_opt (dict): ``{type: ..., **kwargs}``, e.g. a ``network_g`` block.
        path (str): checkpoint ``{param_key: state_dict}``.
        param_key (str): key to read (``'none'`` for a bare state dict). Default: ``params``.
        source (str): where ``arch_opt`` comes from, for messages.
    """
    net = build_arch(arch_opt, source)
    load_checkpoint(net, path, param_key, f'{arch_opt["type"]} from {source}')
    return net.eval().requires_grad_(False)


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
            help=f'key inside the checkpoint: params, params_ema (EMA weights) or {BARE_STATE_DICT} (a bare state '
            f'dict). Default: {DEFAULT_PARAM_KEY}, as BasicSR (a note says when the file also holds params_ema)')


def arch_opt_from_args(args: argparse.Namespace) -> Tuple[Dict[str, Any], str]:
    """The architecture block selected by ``--opt/--net-key`` or ``--arch-yaml``, and where it comes from."""
    if args.opt:
        return arch_opt_from_yaml(args.opt, args.net_key), f'{args.opt} ({args.net_key})'
    return arch_opt_from_yaml(args.arch_yaml, None), args.arch_yaml


def network_from_args(args: argparse.Namespace, device: torch.device) -> Tuple[nn.Module, Dict[str, Any], str]:
    """Build the network of ``args``, load ``--ckpt`` strictly and put it in eval mode on ``device``.

    Returns:
        tuple: (network, full architecture options with defaults, param key used).
    """
    arch_opt, source = arch_opt_from_args(args)
    net = build_arch(arch_opt, source)
    used_key = load_checkpoint(net, args.ckpt, args.param_key, f'{arch_opt["type"]} from {source}')
    net.eval().requires_grad_(False)
    return net.to(device), full_arch_opt(arch_opt), used_key


def config_error(err: Exception) -> int:
    """Print a configuration error (bad file, key or value) to stderr; returns the exit code 2."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f'error: {text}', file=sys.stderr)
    return 2


def _nearest_existing(path: str) -> str:
    """``path`` or its closest ancestor that exists."""
    while not osp.lexists(path) and osp.dirname(path) != path:
        path = osp.dirname(path)
    return path


def check_output_location(option: str, path: str, kind: str = 'folder') -> None:
    """Check, before any work, that the output ``path`` of ``option`` can be created and written.

    Nothing is created: the closest existing ancestor must be a folder this process can write in (tried with a
    nameless temporary file, so a read-only file system fails too, for root as well).

    Args:
        option (str): the option, for the message, e.g. ``'--out-dir'``.
        path (str): the folder (``kind='folder'``) or file (``kind='file'``) the tool will write.
        kind (str): ``'folder'`` or ``'file'``. Default: ``'folder'``.

    Raises:
        ValueError: ``<option> <path>: cannot write the output here: <why>``.
    """
    if kind not in ('folder', 'file'):
        raise ValueError(f'kind {kind!r} is not supported. Supported: folder, file')
    full = osp.abspath(path)
    why = None
    if kind == 'folder' and osp.exists(full) and not osp.isdir(full):
        why = 'it is a file, not a folder'
    elif kind == 'file' and osp.isdir(full):
        why = 'it is a folder, not a file'
    else:
        folder = full if kind == 'folder' else osp.dirname(full)
        existing = _nearest_existing(folder)
        if not osp.isdir(existing):
            why = f'{existing} is a file, so no folder can be made under it'
        else:
            try:
                with tempfile.TemporaryFile(dir=existing):
                    pass
            except OSError as err:
                why = f'cannot write in {existing} ({err.strerror or err})'
    if why:
        raise ValueError(f'{option} {path}: cannot write the output here: {why}')


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


DEEP_EXTENSIONS = ('.png', '.tif', '.tiff')  # the output formats that keep 16 bits per channel


def read_image(path: str, keep_depth: bool = False) -> Optional[np.ndarray]:
    """A colour image as uint8 BGR ``(H, W, 3)``; None when the file cannot be read or decoded.

    Args:
        path (str): the image file.
        keep_depth (bool): keep a 16-bit (or float) image at its depth instead of reducing it to uint8. Default:
            False.
    """
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    flags = cv2.IMREAD_COLOR | (cv2.IMREAD_ANYDEPTH if keep_depth else 0)
    img = cv2.imdecode(buf, flags) if buf.size else None
    return img


def write_image(path: str, img: np.ndarray) -> None:
    """Write a uint8 (or, as PNG / TIFF, uint16) BGR image (format from the extension), creating the folder.

    ``OSError`` on failure, and for a uint16 image in a format that would silently reduce it to 8 bits.
    """
    ext = osp.splitext(path)[1].lower() or '.png'
    if img.dtype == np.uint16 and ext not in DEEP_EXTENSIONS:
        raise OSError(f'Cannot write a 16-bit image as {ext} (8 bits per channel only): use PNG or TIFF')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise OSError(f'Cannot encode image for {path}')
    buf.tofile(path)


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
