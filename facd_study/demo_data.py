"""The demo / mini-table / study data set: real scikit-image photos split into train, select and report photos.

Layout written under ``root`` (default ``datasets/facd_demo``), each part as PNG folders and BasicSR LMDB twins::

    train/gt, train/lq_x{s}      GT tiles of ``tile`` px (and their LR tiles) cut from the TRAIN photos
    select/gt, select/lq_x{s}    whole SELECT photos: validation of the demo, choice of defaults in the studies
    report/gt, report/lq_x{s}    whole REPORT photos: held out, never used to choose anything

LR images are the MATLAB-style bicubic downscale of the whole GT photo (as BasicSR's scripts make them), cut into
tiles at the same positions as the GT, so a tile pair is exactly aligned. Training photos larger than
``max_side`` are first shrunk with area averaging (a cleaner HR, DIV2K-style), and near-flat tiles (black sky, the
dark rim of the retina) are skipped because they teach nothing.
"""
import json
import os.path as osp
import shutil
from typing import Dict, Iterable, Sequence, Tuple

import cv2
import numpy as np

from facd_basicsr.tools.bicubic import bicubic_lr
from facd_study.sample_data import load_photo, make_gt, write_folder_and_lmdb

TRAIN_PHOTOS = ('astronaut', 'rocket', 'hubble_deep_field', 'retina', 'immunohistochemistry')
SELECT_PHOTOS = ('chelsea', 'coffee')
REPORT_PHOTOS = ('motorcycle_left', 'motorcycle_right')  # two views of one stereo scene: one scene, held out
SPLITS = ('train', 'select', 'report')


def shrink_to(img: np.ndarray, max_side: int) -> np.ndarray:
    """``img`` shrunk with area averaging so that its longer side is at most ``max_side`` (never enlarged)."""
    h, w = img.shape[:2]
    factor = max_side / max(h, w)
    if factor >= 1:
        return img
    return cv2.resize(img, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)


def tile_positions(height: int, width: int, tile: int) -> Iterable[Tuple[int, int]]:
    """Top-left corners (y, x) of the non-overlapping ``tile`` x ``tile`` squares that fit in (height, width)."""
    for top in range(0, height - tile + 1, tile):
        for left in range(0, width - tile + 1, tile):
            yield top, left


def cut_tiles(stem: str, gt: np.ndarray, lq: np.ndarray, scale: int, tile: int,
              min_std: float) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Aligned GT / LR tile pairs of one photo, keyed ``{stem}_{k:03d}``; tiles with grey std < ``min_std`` dropped.

    Args:
        stem (str): photo name, the key prefix (no dots, LMDB keys).
        gt (ndarray): uint8 BGR GT photo (H, W, 3), H and W multiples of ``scale``.
        lq (ndarray): its LR image (H / scale, W / scale, 3).
        scale (int): SR factor.
        tile (int): GT tile side in px, a multiple of ``scale``.
        min_std (float): minimum standard deviation of the grey GT tile, in 8-bit levels.
    """
    gts, lqs = {}, {}
    for top, left in tile_positions(gt.shape[0], gt.shape[1], tile):
        patch = gt[top:top + tile, left:left + tile]
        if cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).std() < min_std:
            continue
        key = f'{stem}_{len(gts):03d}'
        gts[key] = np.ascontiguousarray(patch)
        t, lft, side = top // scale, left // scale, tile // scale
        lqs[key] = np.ascontiguousarray(lq[t:t + side, lft:lft + side])
    return gts, lqs


def build_train_tiles(root: str, photos: Sequence[str], scale: int, tile: int = 96, max_side: int = 640,
                      min_std: float = 8.) -> int:
    """Write ``root/gt``, ``root/lq_x{scale}`` and their LMDBs from tiles of ``photos``; returns the tile count."""
    if tile % scale:
        raise ValueError(f'tile ({tile}) must be a multiple of scale ({scale})')
    gts, lqs = {}, {}
    for name in photos:
        gt = make_gt(shrink_to(load_photo(name), max_side), scale, None)
        photo_gts, photo_lqs = cut_tiles(name, gt, bicubic_lr(gt, scale), scale, tile, min_std)
        gts.update(photo_gts)
        lqs.update(photo_lqs)
    write_folder_and_lmdb(osp.join(root, 'gt'), gts, lmdb=True)
    write_folder_and_lmdb(osp.join(root, f'lq_x{scale}'), lqs, lmdb=True)
    return len(gts)


def build_whole_photos(root: str, photos: Sequence[str], scale: int) -> None:
    """Write whole photos (cropped to a multiple of ``scale``) as ``root/gt``, ``root/lq_x{scale}`` + LMDBs."""
    gts = {name: make_gt(load_photo(name), scale, None) for name in photos}
    write_folder_and_lmdb(osp.join(root, 'gt'), gts, lmdb=True)
    write_folder_and_lmdb(osp.join(root, f'lq_x{scale}'), {k: bicubic_lr(v, scale) for k, v in gts.items()}, True)


def data_manifest(scale: int, tile: int, train_photos: Sequence[str], max_side: int) -> dict:
    """What defines a data set of :func:`build_demo_sets`; stored as ``root/manifest.json`` beside the splits."""
    return {'scale': scale, 'tile': tile, 'train_photos': list(train_photos), 'max_side': max_side,
            'select_photos': list(SELECT_PHOTOS), 'report_photos': list(REPORT_PHOTOS)}


def demo_sets_exist(root: str, scale: int = 2, manifest: dict = None) -> bool:
    """True when every split of :func:`build_demo_sets` is complete (both LMDBs have their meta_info.txt) and, with
    ``manifest``, was built from it (a set built from other photos or tiles is not reused)."""
    complete = all(
        osp.isfile(osp.join(root, split, sub, 'meta_info.txt')) for split in SPLITS
        for sub in ('gt.lmdb', f'lq_x{scale}.lmdb'))
    if not complete or manifest is None:
        return complete
    path = osp.join(root, 'manifest.json')
    if not osp.isfile(path):
        return False
    with open(path) as f:
        return json.load(f) == manifest


def build_demo_sets(root: str, scale: int = 2, tile: int = 96, train_photos: Sequence[str] = TRAIN_PHOTOS,
                    max_side: int = 640) -> Dict[str, str]:
    """Build (or reuse) the train / select / report sets under ``root``; returns ``{split: folder}``.

    Args:
        root (str): output folder, e.g. ``datasets/facd_demo``.
        scale (int): SR factor. Default: 2.
        tile (int): GT training tile side in px. Default: 96.
        train_photos (Sequence[str]): photos tiled for training. Default: :data:`TRAIN_PHOTOS`.
        max_side (int): training photos are first shrunk to this longer side. Default: 640.
    """
    folders = {split: osp.join(root, split) for split in SPLITS}
    manifest = data_manifest(scale, tile, train_photos, max_side)
    if demo_sets_exist(root, scale, manifest):
        return folders
    for folder in folders.values():  # interrupted, or built from other photos: start again
        shutil.rmtree(folder, ignore_errors=True)
    build_train_tiles(folders['train'], train_photos, scale, tile, max_side)
    build_whole_photos(folders['select'], SELECT_PHOTOS, scale)
    build_whole_photos(folders['report'], REPORT_PHOTOS, scale)
    with open(osp.join(root, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
    return folders
