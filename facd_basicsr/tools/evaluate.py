"""``facd-eval``: PSNR/SSIM (Y channel, crop = scale) of a BasicSR network checkpoint on benchmark folders.

Two layouts, detected per set folder (``--layout`` picks one when a folder holds both):

* ``prepared``, what ``facd-prepare --benchmark`` writes: ``<root>/<Set>/GTmod12/*.png`` and
  ``<root>/<Set>/LRbicx<s>/*.png`` (``--data-root datasets`` after ``facd-prepare``);
* ``benchmark``, the EDSR / BasicSR benchmark download: ``<root>/<Set>/HR/*.png`` and
  ``<root>/<Set>/LR_bicubic/X<s>/*.png``; LR names may carry a scale suffix (``babyx4.png`` for ``baby.png``).

Without an LR folder the LR images are made from the HR ones with MATLAB-style bicubic (HR first cropped to a
multiple of the scale). An HR/LR pair whose sizes do not match the scale is refused (wrong LR folder or scale).

Example::

    facd-prepare --benchmark ~/Downloads/benchmark
    facd-eval --opt my_train.yml --ckpt experiments/my_run/models/net_g_latest.pth \\
        --data-root datasets --sets Set5 Urban100 --self-ensemble --out-dir results/eval_x4
"""
import argparse
import csv
import os
import os.path as osp
import re
import sys
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from facd_basicsr.tools.bicubic import bicubic_lr
from facd_basicsr.tools.common import (add_network_args, check_output_location, config_error, infer_scale, list_images,
                                       network_from_args, pick_device, read_image, self_ensemble, tiled_forward,
                                       write_image)
from facd_basicsr.tools.published import published_rows
from facd_basicsr.tools.scoring import image_scores, upscale

KNOWN_SETS = ('Set5', 'Set14', 'B100', 'BSD100', 'BSDS100', 'Urban100', 'Manga109', 'DIV2K')
B100_NAMES = ('b100', 'bsd100', 'bsds100')  # one set, three spellings (facd-prepare writes BSDS100)
# layout -> (HR folder, LR folder) inside a set folder; {lr} is --lr-dir-name, {s} the scale
LAYOUTS = {'prepared': ('GTmod12', 'LRbicx{s}'), 'benchmark': ('HR', '{lr}/X{s}')}
LOOKED_FOR = '<Set>/GTmod12/ (what facd-prepare writes) or <Set>/HR/ (a benchmark download)'


def set_layout(set_dir: str, layout: str) -> Optional[str]:
    """The layout of one set folder (``prepared`` or ``benchmark``); None when it holds neither HR folder.

    Args:
        set_dir (str): a set folder.
        layout (str): ``auto`` (detect), ``prepared`` or ``benchmark``.
    """
    found = [name for name, (hr, _) in LAYOUTS.items() if osp.isdir(osp.join(set_dir, hr))]
    if layout != 'auto':
        return layout if layout in found else None
    if len(found) > 1:
        raise ValueError(f'{set_dir} holds both GTmod12/ (facd-prepare) and HR/ (benchmark download): pass '
                         '--layout prepared or --layout benchmark')
    return found[0] if found else None


def _set_folder(root: str, name: str) -> Optional[str]:
    """The folder of set ``name`` under ``root``: the name itself, else another spelling of B100."""
    if osp.isdir(osp.join(root, name)) or name.lower() not in B100_NAMES:
        return name
    others = [n for n in sorted(os.listdir(root)) if n.lower() in B100_NAMES and osp.isdir(osp.join(root, n))]
    return others[0] if others else name


def find_sets(root: str, names: Optional[List[str]], layout: str = 'auto') -> List[Tuple[str, str]]:
    """Sets to run with their layouts: ``names`` (each must hold an HR folder) or every set folder of ``root``.

    Returns:
        list: ``(set folder name, layout)``. ``FileNotFoundError`` says what was looked for when nothing fits.
    """
    looked_for = LOOKED_FOR if layout == 'auto' else f'<Set>/{LAYOUTS[layout][0]}/ (--layout {layout})'
    if not osp.isdir(root):
        raise FileNotFoundError(f'--data-root not found: {root} (looked for {looked_for} under it)')
    if names:
        folders = [_set_folder(root, n) for n in names]
        found = [(n, set_layout(osp.join(root, n), layout)) for n in folders]
        missing = [n for n, kind in found if kind is None]
        if missing:
            raise FileNotFoundError(f'--sets {" ".join(missing)}: no such set under {root}: looked for '
                                    + looked_for.replace('<Set>', osp.join(root, missing[0])))
        return found
    found = [(n, set_layout(osp.join(root, n), layout)) for n in os.listdir(root) if osp.isdir(osp.join(root, n))]
    found = [(n, kind) for n, kind in found if kind is not None]
    if not found:
        hint = ''
        if osp.isdir(osp.join(root, 'datasets')):
            hint = f'; facd-prepare writes the sets to {osp.join(root, "datasets")}: pass --data-root there'
        raise FileNotFoundError(f'No set under --data-root {root}: looked for {looked_for}{hint}')
    order = {n.lower(): i for i, n in enumerate(KNOWN_SETS)}
    return sorted(found, key=lambda item: (order.get(item[0].lower(), len(order)), item[0]))


def _normalise_stem(stem: str, scale: int) -> str:
    """Lower-case ``stem`` without trailing tags such as ``x4``, ``_x4``, ``_HR``, ``_LR``, ``_LRBI``, ``_GT``."""
    stripped = re.sub(rf'([_-]?(x{scale}|hr|lr|lrbi|gt|bicubic))+$', '', stem.lower())
    return stripped or stem.lower()


def match_pairs(hr_paths: List[str], lr_dir: str, scale: int) -> List[Tuple[str, str]]:
    """Pair every HR image with its LR image in ``lr_dir``: exact stem first, then the stem without scale tags.

    Returns:
        list: ``(hr_path, lr_path)`` in HR order. ``FileNotFoundError`` names any HR image without an LR twin.
    """
    lr_paths = list_images(lr_dir)
    exact = {osp.splitext(osp.basename(p))[0]: p for p in lr_paths}
    loose: Dict[str, List[str]] = {}
    for path in lr_paths:
        loose.setdefault(_normalise_stem(osp.splitext(osp.basename(path))[0], scale), []).append(path)
    pairs, missing = [], []
    for hr_path in hr_paths:
        stem = osp.splitext(osp.basename(hr_path))[0]
        candidates = [exact[stem]] if stem in exact else loose.get(_normalise_stem(stem, scale), [])
        if len(candidates) > 1:
            raise ValueError(f'{hr_path}: several LR images match in {lr_dir}: {candidates}')
        if candidates:
            pairs.append((hr_path, candidates[0]))
        else:
            missing.append(osp.basename(hr_path))
    if missing:
        raise FileNotFoundError(f'No LR image in {lr_dir} for HR image(s): {", ".join(missing)}')
    return pairs


def check_sizes(hr_path: str, hr_size: Tuple[int, int], lr_path: str, lr_size: Tuple[int, int], scale: int) -> None:
    """``ValueError`` unless HR is ``scale`` x LR, up to a mod-crop remainder (fewer than ``scale`` extra pixels).

    Args:
        hr_path (str): the HR image file, for the message.
        hr_size (tuple): (H, W) of the HR image.
        lr_path (str): the LR image file, for the message.
        lr_size (tuple): (h, w) of the LR image.
        scale (int): the network's scale.
    """
    extra = [hr - lr * scale for hr, lr in zip(hr_size, lr_size)]
    if min(extra) < 0 or max(extra) >= scale:
        raise ValueError(f'HR {hr_path} is {hr_size[0]}x{hr_size[1]} but LR {lr_path} is {lr_size[0]}x{lr_size[1]}: '
                         f'at scale x{scale} the HR should be {lr_size[0] * scale}x{lr_size[1] * scale} (up to '
                         f'{scale - 1} pixel(s) more before a mod-crop): wrong LR folder or scale?')


def load_pair(hr_path: str, lr_path: Optional[str], scale: int) -> Tuple[np.ndarray, np.ndarray]:
    """HR (cropped to ``scale`` x the LR size) and LR uint8 BGR images; LR made by MATLAB bicubic when None.

    An HR image larger than ``scale`` x LR by fewer than ``scale`` pixels (not mod-cropped) is cropped; any other
    size mismatch is a ``ValueError`` (:func:`check_sizes`).
    """
    hr = read_image(hr_path)
    if hr is None:
        raise ValueError(f'Cannot read HR image {hr_path}')
    if lr_path is None:
        hr = hr[:hr.shape[0] - hr.shape[0] % scale, :hr.shape[1] - hr.shape[1] % scale]
        return np.ascontiguousarray(hr), bicubic_lr(hr, scale)
    lr = read_image(lr_path)
    if lr is None:
        raise ValueError(f'Cannot read LR image {lr_path}')
    check_sizes(hr_path, hr.shape[:2], lr_path, lr.shape[:2], scale)
    height, width = lr.shape[0] * scale, lr.shape[1] * scale
    return np.ascontiguousarray(hr[:height, :width]), lr


def evaluate_set(forward: Callable[[torch.Tensor], torch.Tensor],
                 set_dir: str,
                 scale: int,
                 folders: Tuple[str, str],
                 device: torch.device,
                 save_dir: Optional[str] = None) -> Tuple[List[Dict], bool]:
    """PSNR/SSIM (Y, crop = scale; :mod:`facd_basicsr.tools.scoring`) of every HR image of one set.

    Args:
        folders (tuple): (HR folder, LR folder) inside ``set_dir``, e.g. ``('GTmod12', 'LRbicx4')``.

    Returns:
        tuple: (per-image rows ``{'image', 'psnr', 'ssim'}``, whether the LR images were made from HR).
    """
    hr_dir, lr_dir = (osp.join(set_dir, folder) for folder in folders)
    hr_paths = list_images(hr_dir)
    if not hr_paths:
        raise FileNotFoundError(f'No images in {hr_dir}')
    made_lr = not osp.isdir(lr_dir)
    pairs = [(p, None) for p in hr_paths] if made_lr else match_pairs(hr_paths, lr_dir, scale)
    rows = []
    for hr_path, lr_path in pairs:
        hr, lr = load_pair(hr_path, lr_path, scale)
        sr = upscale(forward, lr, device)
        name = osp.splitext(osp.basename(hr_path))[0]
        if save_dir:
            write_image(osp.join(save_dir, f'{name}.png'), sr)
        rows.append({'image': name, **image_scores(sr, hr, scale)})
    return rows, made_lr


def summary_markdown(summary: List[Dict], scale: int) -> str:
    """The per-set results as a markdown table."""
    lines = ['| set | scale | images | LR | PSNR-Y (dB) | SSIM-Y |', '|---|---|---|---|---|---|']
    for row in summary:
        lines.append(f'| {row["set"]} | x{scale} | {row["images"]} | {row["lr"]} | {row["psnr"]:.4f} '
                     f'| {row["ssim"]:.4f} |')
    return '\n'.join(lines)


def published_markdown(rows: List[Tuple[str, Dict[str, float]]], summary: List[Dict], scale: int) -> str:
    """This run beside the published PSNR rows (only the sets that have a published figure)."""
    sets = list(rows[0][1])
    ours = {row['set']: row['psnr'] for row in summary}
    lines = [
        '| PSNR-Y (dB) | ' + ' | '.join(f'{s} x{scale}' for s in sets) + ' |', '|---' * (len(sets) + 1) + '|',
        '| **this run** | ' + ' | '.join(f'{ours[s]:.3f}' for s in sets) + ' |'
    ]
    lines += [f'| {label} | ' + ' | '.join(f'{values[s]:.3f}' for s in sets) + ' |' for label, values in rows]
    return '\n'.join(lines)


def write_csv(path: str, rows: List[Dict]) -> None:
    """Write a list of dicts (same keys) as CSV."""
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='facd-eval', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(parser)
    parser.add_argument('--data-root', required=True, help='folder of set folders: <Set>/GTmod12 + <Set>/LRbicx<s> '
                        '(facd-prepare: --data-root datasets) or <Set>/HR + <Set>/LR_bicubic/X<s>')
    parser.add_argument('--sets', nargs='+', default=None, help='set folder names. Default: every <Set> with '
                        'GTmod12/ or HR/')
    parser.add_argument('--layout', default='auto', choices=['auto', 'prepared', 'benchmark'],
                        help='prepared: GTmod12 + LRbicx<s>; benchmark: HR + LR_bicubic/X<s>. Default: auto '
                        '(detected per set; a set folder holding both is an error)')
    parser.add_argument('--scale', type=int, default=None, help='checked against the network. Default: measured')
    parser.add_argument('--lr-dir-name', default='LR_bicubic', help='LR folder inside a set of the benchmark layout. '
                        'Default: LR_bicubic')
    parser.add_argument('--self-ensemble', action='store_true', help='x8 flip/rotation self-ensemble')
    parser.add_argument('--tile', type=int, default=0, help='LR tile side for tiled inference; 0: whole image')
    parser.add_argument('--tile-overlap', type=int, default=16, help='tile margin in LR pixels. Default: 16')
    parser.add_argument('--out-dir', default=None, help='write summary.md, summary.csv, per_image.csv here')
    parser.add_argument('--save-sr', action='store_true', help='also save SR images to <out-dir>/<Set>/')
    parser.add_argument('--device', default='auto', help='auto, cpu or cuda[:i]. Default: auto')
    return parser.parse_args(argv)


def evaluate_sets(args: argparse.Namespace, forward: Callable[[torch.Tensor], torch.Tensor], scale: int,
                  device: torch.device) -> Tuple[List[Dict], List[Dict]]:
    """Evaluate every set of ``args``; returns (per-set summary rows, per-image rows)."""
    summary, per_image = [], []
    for name, layout in find_sets(args.data_root, args.sets, args.layout):
        save_dir = osp.join(args.out_dir, name) if args.save_sr else None
        hr_name, lr_name = LAYOUTS[layout]
        folders = (hr_name, lr_name.format(lr=args.lr_dir_name, s=scale))
        rows, made_lr = evaluate_set(forward, osp.join(args.data_root, name), scale, folders, device, save_dir)
        per_image += [{'set': name, **row} for row in rows]
        summary.append({
            'set': name,
            'scale': scale,
            'images': len(rows),
            'lr': 'bicubic from HR' if made_lr else 'files',
            'psnr': float(np.mean([r['psnr'] for r in rows])),
            'ssim': float(np.mean([r['ssim'] for r in rows])),
            'self_ensemble': args.self_ensemble
        })
    return summary, per_image


def write_outputs(out_dir: str, report: str, summary: List[Dict], per_image: List[Dict]) -> None:
    """``summary.md`` (the printed report), ``summary.csv`` and ``per_image.csv`` in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'summary.md'), 'w', encoding='utf-8') as f:
        f.write(report + '\n')
    write_csv(osp.join(out_dir, 'summary.csv'), summary)
    write_csv(osp.join(out_dir, 'per_image.csv'), per_image)


def run(args: argparse.Namespace) -> str:
    """Evaluate as ``args`` say; returns the report (markdown) and writes the files of ``--out-dir``."""
    if args.save_sr and not args.out_dir:
        raise ValueError('--save-sr needs --out-dir')
    if args.out_dir:
        check_output_location('--out-dir', args.out_dir)
    device = pick_device(args.device)
    net, arch_opt, used_key = network_from_args(args, device)
    scale = infer_scale(net, arch_opt.get('num_in_ch', 3))
    if args.scale is not None and args.scale != scale:
        raise ValueError(f'--scale {args.scale} does not match the network, which up-scales x{scale}')

    def forward(x: torch.Tensor) -> torch.Tensor:
        return tiled_forward(net, x, args.tile, args.tile_overlap)

    summary, per_image = evaluate_sets(args, (lambda x: self_ensemble(forward, x)) if args.self_ensemble else forward,
                                       scale, device)
    report = (f'Network {arch_opt["type"]} x{scale} from {args.ckpt} (param key: {used_key}); '
              f'self-ensemble: {"x8" if args.self_ensemble else "off"}; Y channel, crop {scale}.\n\n')
    report += summary_markdown(summary, scale)
    published = published_rows(arch_opt, scale, [row['set'] for row in summary])
    if published:
        report += '\n\nPublished figures (docs/method.md; RCAN 10x6 student from RCAN 10x20 teacher):\n\n'
        report += published_markdown(published, summary, scale)
    if args.out_dir:
        write_outputs(args.out_dir, report, summary, per_image)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-eval``; returns the exit code (0 success, 2 configuration error)."""
    args = parse_args(argv)
    try:
        report = run(args)
    except (FileNotFoundError, KeyError, ValueError) as err:
        return config_error(err)
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
