"""Small paired SR datasets made from the real colour photos that ship inside scikit-image.

Used by the tests, ``make demo`` and ``make mini-table``: no download needed. Both BasicSR layouts are written:
image folders (``gt/``, ``lq_x{s}/``) and LMDB (``gt.lmdb``, ``lq_x{s}.lmdb`` with ``meta_info.txt``), through
BasicSR's own ``make_lmdb_from_imgs``. LR images come from MATLAB-style bicubic (``basicsr.utils.matlab_functions``),
as BasicSR's data-preparation scripts make them.
"""
import os
import os.path as osp
from typing import Dict, Iterable, Optional

import cv2
import numpy as np
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from facd_basicsr.tools.bicubic import bicubic_lr

# Every colour photograph bundled in a package we install (loader name = stem used as file name / LMDB key): the
# scikit-image wheel's, and matplotlib's one sample photo. (skimage's colorwheel and logo, and matplotlib's other
# sample images, are drawings or icons, not photos; the other skimage images are grey or need a download.)
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry', 'retina',
          'motorcycle_left', 'motorcycle_right', 'grace_hopper')
# The two colour photos inside the scikit-learn wheel (only the x4 study uses them; scikit-learn is in make venv).
SKLEARN_PHOTOS = ('china', 'flower')
# scikit-image's grey photographs (camera, coins, moon) and photographed textures (brick, grass, gravel): loaded as
# three equal channels. Only the x4 study trains on them (its PSNR is on Y, which they carry in full).
GREY_PHOTOS = ('camera', 'coins', 'moon', 'brick', 'grass', 'gravel')

# The small x2 set of the tests and the tiny option files: datasets/sample/{train,val}.
SAMPLE_TRAIN = ('astronaut', 'chelsea', 'coffee', 'rocket')
SAMPLE_VAL = ('hubble_deep_field', 'immunohistochemistry')


def load_photo(name: str) -> np.ndarray:
    """One bundled photo (:data:`PHOTOS`, :data:`SKLEARN_PHOTOS`, :data:`GREY_PHOTOS`) as uint8 BGR (H, W, 3)."""
    from skimage import data
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image
        rgb = load_sample_image(f'{name}.jpg')
        return np.ascontiguousarray(rgb[..., ::-1])
    if name in GREY_PHOTOS:
        return np.ascontiguousarray(np.repeat(getattr(data, name)()[..., None], 3, axis=2))
    if name == 'grace_hopper':
        from matplotlib import cbook
        return np.ascontiguousarray(cv2.imread(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)))
    if name in ('motorcycle_left', 'motorcycle_right'):
        left, right, _ = data.stereo_motorcycle()
        rgb = left if name == 'motorcycle_left' else right
    elif name in PHOTOS:
        rgb = getattr(data, name)()
    else:
        known = PHOTOS + SKLEARN_PHOTOS + GREY_PHOTOS
        raise ValueError(f'Unknown photo {name!r}. Available: {", ".join(known)}')
    return np.ascontiguousarray(rgb[..., ::-1])


def make_gt(img: np.ndarray, scale: int, size: Optional[int]) -> np.ndarray:
    """Centre-crop ``img`` to a square and resize it to ``size`` (``None``: keep it); sides a multiple of ``scale``."""
    if size is not None:
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = cv2.resize(img[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[:h - h % scale, :w - w % scale])


def write_folder_and_lmdb(folder: str, images: Dict[str, np.ndarray], lmdb: bool) -> None:
    """Write ``images`` (stem -> uint8 BGR) as PNGs into ``folder`` and, optionally, as ``folder + '.lmdb'``."""
    os.makedirs(folder, exist_ok=True)
    for stem, img in images.items():
        cv2.imwrite(osp.join(folder, f'{stem}.png'), img)
    if lmdb and not osp.isdir(folder + '.lmdb'):
        stems = sorted(images)
        paths = [f'{stem}.png' for stem in stems]
        map_size = 10 * sum(img.nbytes for img in images.values()) + (1 << 20)
        make_lmdb_from_imgs(folder, folder + '.lmdb', paths, stems, compress_level=1, map_size=map_size)


def build_paired_set(root: str, photos: Iterable[str], scale: int, size: Optional[int] = None,
                     lmdb: bool = True) -> Dict[str, str]:
    """Build a paired SR set under ``root``: ``gt/``, ``lq_x{scale}/`` and, with ``lmdb``, their ``.lmdb`` twins.

    Args:
        root (str): output folder; created when missing. Existing files are overwritten, LMDBs kept.
        photos (Iterable[str]): names from :data:`PHOTOS`.
        scale (int): down-scaling factor of the LR images.
        size (int | None): side of the square GT images; None keeps each photo's size (cropped to the scale).
        lmdb (bool): also write LMDB copies. Default: True.

    Returns:
        dict: ``{'gt': ..., 'lq': ..., 'gt_lmdb': ..., 'lq_lmdb': ...}`` paths (LMDB keys only with ``lmdb``).
    """
    gts = {name: make_gt(load_photo(name), scale, size) for name in photos}
    lqs = {name: bicubic_lr(gt, scale) for name, gt in gts.items()}
    paths = {'gt': osp.join(root, 'gt'), 'lq': osp.join(root, f'lq_x{scale}')}
    write_folder_and_lmdb(paths['gt'], gts, lmdb)
    write_folder_and_lmdb(paths['lq'], lqs, lmdb)
    if lmdb:
        paths.update(gt_lmdb=paths['gt'] + '.lmdb', lq_lmdb=paths['lq'] + '.lmdb')
    return paths


def build_sample_sets(root: str, scale: int = 2) -> None:
    """``root/train`` (4 photos, GT 96 px) and ``root/val`` (2 other photos, GT 64 px), folders and LMDB."""
    build_paired_set(osp.join(root, 'train'), SAMPLE_TRAIN, scale, size=96)
    build_paired_set(osp.join(root, 'val'), SAMPLE_VAL, scale, size=64)
