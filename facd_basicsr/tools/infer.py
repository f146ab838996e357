"""``facd-infer``: upscale an image file or a folder of images with a BasicSR network checkpoint.

Large images can be processed in overlapping tiles (``--tile``, ``--tile-overlap``, in LR pixels). Images that
cannot be read or processed are skipped and listed in the summary; the exit code is 1 when any image failed.
A 16-bit PNG / TIFF input gives a 16-bit output (``--ext png`` or ``tif``); a format that holds 8 bits only
(``--ext bmp`` / ``webp``) refuses a 16-bit input instead of reducing it silently.

Example::

    facd-infer --opt my_train.yml --ckpt experiments/my_run/models/net_g_latest.pth \\
        -i photos/ -o results/photos_x4 --tile 256 --tile-overlap 16
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from facd_basicsr.tools.common import (DEEP_EXTENSIONS, IMG_EXTENSIONS, add_network_args, check_output_location,
                                       config_error, infer_scale, list_images, network_from_args, pick_device,
                                       read_image, self_ensemble, tiled_forward, write_image)
from facd_basicsr.tools.scoring import upscale


def input_paths(path: str) -> List[str]:
    """The image files of a folder (non-recursive, by extension) or the single file ``path``."""
    if osp.isdir(path):
        paths = list_images(path)
        if not paths:
            raise FileNotFoundError(f'No image files ({", ".join(IMG_EXTENSIONS)}) in {path}')
        return paths
    if not osp.isfile(path):
        raise FileNotFoundError(f'Input not found: {path}')
    return [path]


def output_path(in_path: str, out_dir: str, suffix: str, ext: str) -> str:
    """``<out_dir>/<stem><suffix>.<ext>``."""
    stem = osp.splitext(osp.basename(in_path))[0]
    return osp.join(out_dir, f'{stem}{suffix}.{ext}')


def format_suffix(template: str, scale: int) -> str:
    """``template`` with ``{scale}`` replaced; ``ValueError`` for any other field."""
    try:
        return template.format(scale=scale)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f'--suffix {template!r}: only the field {{scale}} is allowed ({err!r})') from err


def upscale_one(net: torch.nn.Module, path: str, out_path: str, args: argparse.Namespace,
                device: torch.device) -> Optional[str]:
    """Upscale one image file into ``out_path``; returns None on success, else the reason of the failure."""
    img = read_image(path, keep_depth=True)
    if img is None:
        return 'cannot read or decode the image'
    if img.dtype not in (np.uint8, np.uint16):
        return f'{img.dtype} pixels are not supported (8- or 16-bit images only)'
    if img.dtype == np.uint16 and f'.{args.ext}' not in DEEP_EXTENSIONS:
        return f'a 16-bit image, and --ext {args.ext} holds 8 bits per channel: use --ext png or tif to keep 16 bits'

    def tiled(x: torch.Tensor) -> torch.Tensor:
        return tiled_forward(net, x, args.tile, args.tile_overlap)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return self_ensemble(tiled, x) if args.self_ensemble else tiled(x)

    try:
        write_image(out_path, upscale(forward, img, device))
    except (RuntimeError, OSError, cv2.error) as err:  # out of memory, unwritable output ...: report, go on
        return f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'
    return None


def upscale_all(net: torch.nn.Module, paths: List[str], args: argparse.Namespace, suffix: str,
                device: torch.device) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Upscale every path with a progress bar; returns (written outputs, (input, reason) of each failure)."""
    written, failed = [], []
    for path in tqdm(paths, desc='facd-infer', unit='img', file=sys.stderr, disable=args.no_progress):
        out_path = output_path(path, args.output, suffix, args.ext)
        reason = upscale_one(net, path, out_path, args, device)
        if reason is None:
            written.append(out_path)
        else:
            failed.append((path, reason))
    return written, failed


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='facd-infer', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(parser)
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', default='results/facd_infer', help='output folder')
    parser.add_argument('--suffix', default='_x{scale}', help='added to each output stem. Default: _x{scale}')
    parser.add_argument('--ext', default='png', choices=['png', 'bmp', 'tif', 'webp'],
                        help='output format. Default: png. png and tif keep 16-bit inputs 16-bit')
    parser.add_argument('--tile', type=int, default=0, help='LR tile side in pixels; 0: whole image. Default: 0')
    parser.add_argument('--tile-overlap', type=int, default=16, help='tile margin in LR pixels. Default: 16')
    parser.add_argument('--self-ensemble', action='store_true', help='x8 flip/rotation self-ensemble (8x slower)')
    parser.add_argument('--device', default='auto', help='auto, cpu or cuda[:i]. Default: auto')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-infer``; exit code 0 when every image was written, 1 when some failed, 2 on bad config."""
    args = parse_args(argv)
    try:
        if args.tile < 0 or args.tile_overlap < 0:
            raise ValueError(f'--tile ({args.tile}) and --tile-overlap ({args.tile_overlap}) must be >= 0')
        paths = input_paths(args.input)
        check_output_location('--output', args.output)
        device = pick_device(args.device)
        net, arch_opt, used_key = network_from_args(args, device)
        scale = infer_scale(net, arch_opt.get('num_in_ch', 3))
        suffix = format_suffix(args.suffix, scale)
        if osp.abspath(args.output) == osp.abspath(osp.dirname(paths[0])) and not suffix:
            raise ValueError('--output is the input folder and --suffix is empty: inputs would be overwritten')
    except (FileNotFoundError, KeyError, ValueError) as err:
        return config_error(err)
    print(f'{arch_opt["type"]} x{scale} from {args.ckpt} (param key: {used_key}); {len(paths)} image(s)')
    written, failed = upscale_all(net, paths, args, suffix, device)
    print(f'Wrote {len(written)} of {len(paths)} image(s) to {args.output}')
    if failed:
        print(f'FAILED {len(failed)} image(s):')
        for path, reason in failed:
            print(f'  {path}: {reason}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
