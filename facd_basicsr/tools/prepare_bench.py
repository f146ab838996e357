"""``facd-prepare --benchmark``: ``GTmod12`` and ``LRbicx{s}`` folders of the test sets, as the recipes read them.

Input: a folder of set folders (``Set5``, ``Set14``, ``B100`` / ``BSD100`` / ``BSDS100``, ``Urban100``,
``Manga109``, any case), each holding its HR images directly or in ``HR/`` (the EDSR / BasicSR benchmark download);
or one such set folder. Output (``<root>/datasets/<Set>/``; B100 is written as ``BSDS100``, the name the recipes use)::

    GTmod12/<stem>.png      HR cropped to a multiple of 12 (``basicsr.data.transforms.mod_crop``)
    LRbicx4/<stem>.png      uint8(round(clip(imresize(GTmod12 / 255, 1 / 4) * 255)))  (BasicSR's MATLAB bicubic)

LR and GT share the stem (the option files' default ``filename_tmpl: '{}'``). Folders are built in
``.facd-prepare-partial/`` and renamed when complete.
"""
import os
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

# isort: off
import facd_basicsr  # noqa: F401  (compat shim: must precede the first basicsr import)
from basicsr.data.transforms import mod_crop
from basicsr.utils.matlab_functions import imresize
# isort: on
from facd_basicsr.tools.prepare_io import (STAGE_DIR, ImageSource, Log, PrepareError, list_images, publish, read_image,
                                           remove_if_empty, run_jobs, write_png)

SET_NAMES = {'set5': 'Set5', 'set14': 'Set14', 'b100': 'BSDS100', 'bsd100': 'BSDS100', 'bsds100': 'BSDS100',
             'urban100': 'Urban100', 'manga109': 'Manga109'}
DEFAULT_SCALES = (2, 3, 4)
MOD = 12


def bicubic_lr(gt: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic downscale (BasicSR's ``imresize``, antialiased) of a uint8 image, back to uint8.

    Args:
        gt (ndarray): (H, W, C) or (H, W) uint8, H and W multiples of ``scale``.
        scale (int): Downscale factor.

    Returns:
        ndarray: (H / scale, W / scale[, C]) uint8.
    """
    lr = imresize(gt.astype(np.float32) / 255., 1 / scale)
    return np.clip((lr * 255.).round(), 0, 255).astype(np.uint8)


def find_benchmark(src: str, sets: Optional[Sequence[str]]) -> Dict[str, Dict[str, ImageSource]]:
    """Benchmark sets under ``src`` (or ``src`` itself when it is one): ``{output name: {stem: source}}``."""
    if not osp.isdir(src):
        raise PrepareError(f'--benchmark folder not found: {src}')
    wanted = None if not sets else {_set_name(s, '--sets') for s in sets}
    if osp.basename(osp.normpath(src)).lower() in SET_NAMES:
        candidates = {SET_NAMES[osp.basename(osp.normpath(src)).lower()]: src}
    else:
        candidates = {SET_NAMES[n.lower()]: osp.join(src, n) for n in sorted(os.listdir(src))
                      if n.lower() in SET_NAMES and osp.isdir(osp.join(src, n))}
    if wanted:
        absent = sorted(wanted - set(candidates))
        if absent:
            raise PrepareError(f'--sets {" ".join(absent)}: no such set folder in {src}')
        candidates = {k: v for k, v in candidates.items() if k in wanted}
    if not candidates:
        raise PrepareError(f'no benchmark set folder in {src}: expected some of Set5, Set14, B100, Urban100, '
                           f'Manga109 (each with its HR images, directly or in HR/)')
    found = {}
    for name, folder in candidates.items():
        hr_dir = osp.join(folder, 'HR') if osp.isdir(osp.join(folder, 'HR')) else folder
        stems: Dict[str, ImageSource] = {}
        for file_name in list_images(hr_dir):
            stem = osp.splitext(file_name)[0]
            if stem in stems:
                raise PrepareError(f'{hr_dir}: two images named {stem} ({stems[stem]}, {file_name})')
            stems[stem] = ImageSource(osp.join(hr_dir, file_name))
        if not stems:
            raise PrepareError(f'no images in {hr_dir}')
        found[name] = stems
    return found


def _set_name(name: str, flag: str) -> str:
    if name.lower() not in SET_NAMES:
        raise PrepareError(f'{flag} {name}: unknown set; known: Set5, Set14, B100, Urban100, Manga109')
    return SET_NAMES[name.lower()]


class BenchJob(NamedTuple):
    """One HR image and the staging folders still missing its outputs ((scale or None for GTmod12, folder))."""
    stem: str
    src: ImageSource
    folders: Tuple[Tuple[Optional[int], str], ...]


def bench_job(job: BenchJob) -> str:
    """Write ``GTmod12/<stem>.png`` and ``LRbicx<s>/<stem>.png`` (only those the job names)."""
    gt = mod_crop(read_image(job.src), MOD)
    if gt.shape[0] == 0 or gt.shape[1] == 0:
        raise PrepareError(f'{job.src}: smaller than {MOD} pixels')
    for scale, folder in job.folders:
        out = gt if scale is None else bicubic_lr(gt, scale)
        write_png(osp.join(folder, f'{job.stem}.png'), out)
    return job.stem


def prepare_benchmark(src: str, root: str, sets: Optional[Sequence[str]], scales: Optional[Sequence[int]],
                      workers: int, overwrite: bool, log: Log) -> List[str]:
    """Write ``GTmod12`` and ``LRbicx{s}`` of every benchmark set found under ``src`` into ``<root>/datasets``.

    Args:
        src (str): Folder of set folders, or one set folder (module docstring).
        root (str): Folder the recipes run from.
        sets (Sequence[str] | None): Sets to prepare; None: every one found.
        scales (Sequence[int] | None): LR scales. Default: 2, 3, 4.
        workers (int): Processes.
        overwrite (bool): Rebuild folders that exist (else they are kept, and named).
        log (callable): Progress messages.

    Returns:
        list[str]: The folders written.
    """
    written = []
    for name, images in find_benchmark(src, sets).items():
        out_dir = osp.normpath(osp.join(root, 'datasets', name))
        stage = osp.join(out_dir, STAGE_DIR)
        folders = []
        for scale in [None, *sorted(scales or DEFAULT_SCALES)]:
            final = osp.join(out_dir, 'GTmod12' if scale is None else f'LRbicx{scale}')
            if osp.exists(final) and not overwrite:
                log(f'{final} exists: kept (--overwrite rebuilds it)')
                continue
            folders.append((scale, osp.join(stage, osp.basename(final)), final))
            os.makedirs(folders[-1][1], exist_ok=True)
        jobs = []
        for stem in sorted(images):
            todo = tuple((s, f) for s, f, _ in folders if not osp.exists(osp.join(f, f'{stem}.png')))
            if todo:
                jobs.append(BenchJob(stem, images[stem], todo))
        for _ in run_jobs(bench_job, jobs, workers, name):
            pass
        for _, folder, final in folders:
            extra = sorted(set(list_images(folder)) - {f'{s}.png' for s in images})
            if extra:  # left by a run on other inputs: never published as part of this set
                raise PrepareError(f'{folder}: holds image(s) not in {src}: {", ".join(extra[:10])}; delete it')
            publish(folder, final, overwrite)
            log(f'wrote {final} ({len(images)} images)')
            written.append(final)
        remove_if_empty(stage)
    return written
