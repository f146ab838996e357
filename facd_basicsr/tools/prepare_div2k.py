"""``facd-prepare --div2k``: DIV2K sub-images and LMDBs, where and how the recipes read them.

Input, as the official archives unpack (or the archives themselves, read in place)::

    <src>/DIV2K_train_HR/0001.png ...                   or <src>/DIV2K_train_HR.zip
    <src>/DIV2K_train_LR_bicubic/X4/0001x4.png ...      or <src>/DIV2K_train_LR_bicubic_X4.zip   (X2, X3 alike)

Output (``<root>/datasets/DIV2K/``), as BasicSR's ``extract_subimages.py`` + ``create_lmdb.py`` write them::

    DIV2K_train_HR_sub.lmdb                 480x480 crops, step 240, threshold 0: keys 0001_s001 ...
    DIV2K_train_LR_bicubic_X4_sub.lmdb      the same crops of the LR image (480/4, step 240/4): the same keys

Crops go to ``.facd-prepare-partial/<name>/`` first (one marker per source image when all its crops are written),
then into ``.facd-prepare-partial/<name>.lmdb`` with BasicSR's ``LmdbMaker``, renamed to its final place when whole.
"""
import json
import math
import os
import os.path as osp
import posixpath
import shutil
import zipfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

# isort: off
import facd_basicsr  # noqa: F401  (compat shim: must precede the first basicsr import)
from basicsr.utils.lmdb_util import LmdbMaker, read_img_worker
# isort: on
from facd_basicsr.tools.prepare_io import (IMG_EXTS, STAGE_DIR, ImageSource, Log, PrepareError, list_images, publish,
                                           read_image, remove_if_empty, run_jobs, write_png)

HR_DIR = 'DIV2K_train_HR'
LR_DIR = 'DIV2K_train_LR_bicubic'
DEFAULT_SCALES = (2, 3, 4)
Target = Optional[int]  # None: the HR images; s: the LR images at scale s


def lmdb_name(target: Target) -> str:
    """Final LMDB folder name, as the option files spell it."""
    return 'DIV2K_train_HR_sub.lmdb' if target is None else f'DIV2K_train_LR_bicubic_X{target}_sub.lmdb'


def _find_images(root: str, folder: str, archive: str) -> Optional[Tuple[str, Dict[str, ImageSource]]]:
    """Images of ``root/folder``, else the members under ``folder/`` of ``root/archive``: (where, {stem: source})."""
    dir_path = osp.join(root, folder)
    if osp.isdir(dir_path):
        return dir_path, {osp.splitext(n)[0]: ImageSource(osp.join(dir_path, n)) for n in list_images(dir_path)}
    zip_path = osp.join(root, archive)
    if not osp.isfile(zip_path):
        return None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.namelist()
    except zipfile.BadZipFile as err:
        raise PrepareError(f'{zip_path}: not a readable zip archive ({err})') from None
    prefix = '/' + folder.replace(os.sep, '/') + '/'
    found = {}
    for member in members:
        parent, base = posixpath.split(member)
        if ('/' + parent + '/').endswith(prefix) and not base.startswith('.') \
                and posixpath.splitext(base)[1].lower() in IMG_EXTS:
            found[posixpath.splitext(base)[0]] = ImageSource(zip_path, member)
    return zip_path, found


def find_div2k(src: str, scales: Optional[Sequence[int]]) -> Tuple[Dict[str, ImageSource], Dict[int, Dict]]:
    """HR and LR sources of an official DIV2K download; ``scales`` None: every scale found among 2, 3, 4.

    Returns:
        tuple: ``{stem: source}`` of the HR images and ``{scale: {stem: source}}`` of the LR ones (``0001x4`` ->
        ``0001``). ``PrepareError`` names what is missing: a folder/archive, or LR twins of HR images.
    """
    hr = _find_images(src, HR_DIR, f'{HR_DIR}.zip')
    if hr is None:
        raise PrepareError(f'no DIV2K HR images: expected the folder {osp.join(src, HR_DIR)} or the archive '
                           f'{osp.join(src, HR_DIR)}.zip (as the official DIV2K download)')
    if not hr[1]:
        raise PrepareError(f'no images in {hr[0]} (under {HR_DIR}/)')
    lrs = {}
    for scale in scales or DEFAULT_SCALES:
        found = _find_images(src, osp.join(LR_DIR, f'X{scale}'), f'{LR_DIR}_X{scale}.zip')
        if found is None:
            if scales:
                raise PrepareError(f'--scales {scale}: expected the folder {osp.join(src, LR_DIR, f"X{scale}")} or '
                                   f'the archive {osp.join(src, LR_DIR)}_X{scale}.zip')
            continue
        where, images = found
        lrs[scale] = {_strip_scale(stem, scale): image for stem, image in images.items()}
        missing = sorted(set(hr[1]) - set(lrs[scale]))
        extra = sorted(set(lrs[scale]) - set(hr[1]))
        if missing or extra:
            raise PrepareError(f'{where}: LR x{scale} images missing for HR image(s) {_names(missing)}'
                               if missing else f'{where}: LR x{scale} image(s) without an HR image: {_names(extra)}')
    if not lrs:
        raise PrepareError(f'no DIV2K LR images: expected {osp.join(src, LR_DIR)}/X<s>/ or '
                           f'{osp.join(src, LR_DIR)}_X<s>.zip for s in 2, 3, 4')
    return hr[1], lrs


def _strip_scale(stem: str, scale: int) -> str:
    return stem[:-len(f'x{scale}')] if stem.lower().endswith(f'x{scale}') else stem


def _names(names: List[str], limit: int = 10) -> str:
    return ', '.join(names[:limit]) + (f' ... ({len(names)} in all)' if len(names) > limit else '')


def crop_starts(length: int, crop: int, step: int, thresh: int) -> List[int]:
    """Window starts along one axis, as BasicSR's ``extract_subimages.py``: every ``step``, plus a last window
    flush with the border when more than ``thresh`` pixels would be left over."""
    if length < crop:
        raise ValueError(f'side {length} is smaller than the crop size {crop}')
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


class CropJob(NamedTuple):
    """One source image: its HR and LR files and the staging crop folders still missing its crops."""
    stem: str
    hr: ImageSource
    lrs: Tuple[Tuple[int, ImageSource], ...]
    folders: Tuple[Tuple[Target, str], ...]
    crop_size: int
    step: int
    thresh_size: int
    compression: int


def _marker(folder: str, stem: str) -> str:
    return osp.join(folder, '.done', stem)


def crop_job(job: CropJob) -> str:
    """Read the HR image and its LR twins, check their sizes agree, write the crops (``<stem>_s001.png`` ...)."""
    images = {None: read_image(job.hr)}
    h, w = images[None].shape[:2]
    for scale, src in job.lrs:
        images[scale] = read_image(src)
        lr_h, lr_w = images[scale].shape[:2]
        if (lr_h, lr_w) not in ((h // scale, w // scale), (math.ceil(h / scale), math.ceil(w / scale))):
            raise PrepareError(f'{src}: size {lr_w}x{lr_h} is not the HR size {w}x{h} ({job.hr}) divided by {scale}')
    sources, grids = {None: job.hr, **dict(job.lrs)}, {}
    for target, img in images.items():
        div = target or 1
        try:
            grids[target] = [crop_starts(img.shape[axis], job.crop_size // div, job.step // div,
                                         job.thresh_size // div) for axis in (0, 1)]
        except ValueError as err:
            raise PrepareError(f'{sources[target]}: {err}; lower --crop-size') from None
        if [len(g) for g in grids[target]] != [len(g) for g in grids[None]]:
            raise PrepareError(f'{job.stem}: the x{target} LR image does not give the crops of the HR image')
    for target, folder in job.folders:
        div = target or 1
        size, index = job.crop_size // div, 0
        for y in grids[target][0]:
            for x in grids[target][1]:
                index += 1
                crop = np.ascontiguousarray(images[target][y:y + size, x:x + size, ...])
                write_png(osp.join(folder, f'{job.stem}_s{index:03d}.png'), crop, job.compression)
        with open(_marker(folder, job.stem) + '.tmp', 'w') as f:
            f.write(f'{index}\n')
        os.replace(_marker(folder, job.stem) + '.tmp', _marker(folder, job.stem))
    return job.stem


def _open_crop_folder(folder: str, params: Dict, log: Log) -> None:
    """Create a staging crop folder, or keep one left by an interrupted run when it was made with ``params``."""
    params_file = osp.join(folder, '.params.json')
    if osp.isdir(folder):
        try:
            with open(params_file) as f:
                same = json.load(f) == params
        except (OSError, ValueError):
            same = False
        if same:
            return
        log(f'{folder}: left by a run with other inputs or crop settings; starting it again')
        shutil.rmtree(folder)
    os.makedirs(osp.join(folder, '.done'))
    with open(params_file, 'w') as f:
        json.dump(params, f)


def _encode_job(job: Tuple[str, str]) -> Tuple[str, np.ndarray, Tuple[int, int, int]]:
    """BasicSR's ``read_img_worker`` (PNG, compression 1) with the crop named when it cannot be read."""
    path, key = job
    try:
        return read_img_worker(path, key, 1)
    except AttributeError:  # cv2.imread gave None
        raise PrepareError(f'corrupt or unreadable crop: {path}') from None


def build_lmdb(folder: str, final: str, workers: int, overwrite: bool) -> int:
    """Write the crops of ``folder`` into ``<folder>.lmdb`` with BasicSR's ``LmdbMaker``, then rename it ``final``.

    Keys are the crop names without extension in sorted order, ``meta_info.txt`` lines ``0001_s001.png (480,480,3)
    1`` (BasicSR's ``create_lmdb.py``). Returns the number of keys.
    """
    names = list_images(folder)
    expected = 0
    for stem in os.listdir(osp.join(folder, '.done')):
        if not stem.endswith('.tmp'):
            with open(osp.join(folder, '.done', stem)) as f:
                expected += int(f.read())
    if len(names) != expected:
        raise PrepareError(f'{folder}: {len(names)} crops where the source images give {expected}; delete the '
                           f'folder and run again')
    staged = folder + '.lmdb'
    if osp.exists(staged):  # an LMDB left by an interrupted run: rebuilt from the crops, to the same contents
        shutil.rmtree(staged)
    map_size = 4 * sum(osp.getsize(osp.join(folder, n)) for n in names) + (1 << 26)
    maker = LmdbMaker(staged, map_size=map_size, batch=5000, compress_level=1)
    jobs = [(osp.join(folder, n), osp.splitext(n)[0]) for n in names]
    for key, img_byte, shape in run_jobs(_encode_job, jobs, workers, osp.basename(final), unit='crop', ordered=True):
        maker.put(img_byte, key, shape)
    maker.close()
    publish(staged, final, overwrite)
    return len(names)


def prepare_div2k(src: str, root: str, scales: Optional[Sequence[int]], workers: int, overwrite: bool, log: Log,
                  crop_size: int = 480, step: int = 240, thresh_size: int = 0, compression: int = 3) -> List[str]:
    """Crop the DIV2K HR images and their LR twins and write them as LMDBs under ``<root>/datasets/DIV2K``.

    Args:
        src (str): Folder holding the official folders or archives (module docstring).
        root (str): Folder the recipes run from.
        scales (Sequence[int] | None): LR scales; None: every one found among 2, 3, 4.
        workers (int): Processes.
        overwrite (bool): Rebuild LMDBs that exist (else they are kept, and named).
        log (callable): Progress messages.
        crop_size (int): HR crop side (LR: divided by the scale). Default: 480.
        step (int): HR window step. Default: 240.
        thresh_size (int): Leftover border above which a last, flush window is added. Default: 0.
        compression (int): PNG level of the staging crops. Default: 3.

    Returns:
        list[str]: The LMDBs written.
    """
    hr, lrs = find_div2k(src, scales)
    for scale in lrs:
        if crop_size % scale or step % scale or thresh_size % scale:
            raise PrepareError(f'--crop-size {crop_size}, --step {step} and --thresh-size {thresh_size} must be '
                               f'multiples of every scale; x{scale} is not')
    out_dir = osp.normpath(osp.join(root, 'datasets', 'DIV2K'))
    stage = osp.join(out_dir, STAGE_DIR)
    folders = []
    for target in [None, *sorted(lrs)]:
        final = osp.join(out_dir, lmdb_name(target))
        if osp.exists(final) and not overwrite:
            log(f'{final} exists: kept (--overwrite rebuilds it)')
            continue
        folder = osp.join(stage, lmdb_name(target)[:-len('.lmdb')])
        _open_crop_folder(folder, dict(src=osp.abspath(src), scale=target, crop_size=crop_size, step=step,
                                       thresh_size=thresh_size, compression=compression), log)
        folders.append((target, folder, final))
    if not folders:
        return []
    jobs = []
    for stem in sorted(hr):
        todo = tuple((t, f) for t, f, _ in folders if not osp.exists(_marker(f, stem)))
        if todo:
            jobs.append(CropJob(stem, hr[stem], tuple((s, lrs[s][stem]) for s in sorted(lrs)), todo, crop_size, step,
                                thresh_size, compression))
    log(f'DIV2K: {len(hr)} images from {src}, {len(hr) - len(jobs)} already cropped; scales {sorted(lrs)}')
    for _ in run_jobs(crop_job, jobs, workers, 'DIV2K crops'):
        pass
    written = []
    for target, folder, final in folders:
        count = build_lmdb(folder, final, workers, overwrite)
        shutil.rmtree(folder)
        log(f'wrote {final} ({count} images)')
        written.append(final)
    remove_if_empty(stage)
    return written
