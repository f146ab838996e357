"""Shared pieces of ``facd-prepare``: image sources (files or zip members), atomic writes, a worker pool with a bar.

Every output image is written under a temporary name and renamed into place, so a file that exists is complete; a
folder or LMDB is built in a ``.facd-prepare-partial`` staging folder and renamed to its final name only when it is
whole, so an interrupted run never leaves anything a recipe or ``facd-prepare --check`` would take as finished.
"""
import os
import os.path as osp
import shutil
import sys
import time
import zipfile
from multiprocessing import Pool
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

IMG_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.webp')
STAGE_DIR = '.facd-prepare-partial'
Log = Callable[[str], None]


class PrepareError(RuntimeError):
    """A user-facing error of ``facd-prepare`` (missing or corrupt input, bad flag): the CLI prints it, exit 2."""


class ImageSource(NamedTuple):
    """An input image: a file, or a member of a zip archive.

    Attributes:
        path (str): The image file, or the zip archive holding it.
        member (str | None): Member name inside the archive; None for a plain file.
    """
    path: str
    member: Optional[str] = None

    def __str__(self) -> str:
        return self.path if self.member is None else f'{self.path}:{self.member}'


_OPEN_ZIPS: Dict[str, zipfile.ZipFile] = {}  # one handle per archive and process (workers open their own)


def read_image(src: ImageSource) -> np.ndarray:
    """Decode an 8-bit image as stored (``cv2.IMREAD_UNCHANGED``), alpha dropped.

    Returns:
        ndarray: (H, W, 3) BGR or (H, W) grey, uint8. ``PrepareError`` names the image when it is missing, corrupt,
        or not 8-bit.
    """
    try:
        if src.member is None:
            with open(src.path, 'rb') as f:
                data = f.read()
        else:
            if src.path not in _OPEN_ZIPS:
                _OPEN_ZIPS[src.path] = zipfile.ZipFile(src.path)
            data = _OPEN_ZIPS[src.path].read(src.member)
    except (OSError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise PrepareError(f'cannot read image {src}: {err}') from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise PrepareError(f'corrupt or unreadable image: {src}')
    if img.dtype != np.uint8:
        raise PrepareError(f'{src}: only 8-bit images are supported, got {img.dtype}')
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def write_png(path: str, img: np.ndarray, compression: int = 3) -> None:
    """Write ``img`` as PNG atomically: encode, write ``<path>.tmp``, rename (a killed run leaves no half file)."""
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise PrepareError(f'could not encode {path}')
    tmp = f'{path}.tmp'
    with open(tmp, 'wb') as f:
        f.write(buf.tobytes())
    os.replace(tmp, path)


def list_images(folder: str) -> List[str]:
    """Sorted image file names in ``folder`` (not recursive; hidden and temporary files left out)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith('.') and osp.splitext(n)[1].lower() in IMG_EXTS)


def publish(staged: str, final: str, overwrite: bool) -> None:
    """Rename a finished ``staged`` folder to ``final``; an existing ``final`` goes only with ``overwrite``."""
    if osp.lexists(final):
        if not overwrite:
            raise PrepareError(f'{final} appeared while it was being prepared; not overwritten (use --overwrite)')
        if osp.isdir(final) and not osp.islink(final):
            shutil.rmtree(final)
        else:
            os.remove(final)
    os.rename(staged, final)


def remove_if_empty(folder: str) -> None:
    """Remove ``folder`` when it exists and holds nothing."""
    if osp.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def _init_worker() -> None:
    """One thread per worker process for OpenCV and torch (the pool provides the parallelism)."""
    cv2.setNumThreads(0)
    import torch
    torch.set_num_threads(1)


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, desc: str, unit: str = 'img',
             ordered: bool = False) -> Iterator[Any]:
    """Yield ``fn(job)`` for every job, in ``workers`` processes, behind one progress bar per stage.

    On a terminal the bar is tqdm's (count, rate, ETA); when stderr is a file or a pipe (a log, ``make demo``, a CI
    job) the bar is off and one line per stage says what was done: ``<desc>: <count> <unit> in <seconds> s``.

    Args:
        fn (callable): A module-level function (it is pickled for the workers).
        jobs (Sequence): Its arguments, one per call.
        workers (int): Processes; 1 runs in this process.
        desc (str): Bar label.
        unit (str): Bar unit. Default: 'img'.
        ordered (bool): Results in job order (else as they finish). Default: False.
    """
    live = sys.stderr.isatty()
    start = time.monotonic()
    with tqdm(total=len(jobs), desc=desc, unit=unit, dynamic_ncols=True, disable=not live, file=sys.stderr) as bar:
        if workers <= 1 or len(jobs) <= 1:
            results: Iterator[Any] = (fn(job) for job in jobs)
            yield from _counted(results, bar)
        else:
            with Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
                mapper = pool.imap if ordered else pool.imap_unordered
                yield from _counted(mapper(fn, jobs, chunksize=1 if not ordered else 8), bar)
    if not live and jobs:
        print(f'{desc}: {len(jobs)} {unit} in {time.monotonic() - start:.1f} s', file=sys.stderr)


def _counted(results: Iterator[Any], bar: tqdm) -> Iterator[Any]:
    """Yield each result and advance ``bar`` by one."""
    for result in results:
        yield result
        bar.update(1)
