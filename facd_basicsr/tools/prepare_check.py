"""``facd-prepare --check``: does a prepared tree hold everything the option files read?

For every option file, every ``datasets.<phase>`` block: each ``dataroot_gt`` / ``dataroot_lq`` exists (relative
paths against the folder the recipes run from); an LMDB has ``data.mdb`` and ``meta_info.txt``, as many keys as
``meta_info.txt`` lines, and its first and last images decode to the recorded shapes; a folder holds images; GT and
LQ hold the same names (LMDB keys, or ``filename_tmpl`` for folders) and every GT size is the LQ size times ``scale``.

Manga109 is not freely downloadable, so data of :data:`OPTIONAL_SETS` that is not there at all is "missing,
optional": reported, but the check still passes when everything else is ready (:func:`run_check`). An optional set
that is there but broken is a problem like any other.
"""
import os
import os.path as osp
import re
import struct
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import lmdb
import numpy as np
import yaml

from facd_basicsr.tools.prepare_io import list_images

# dataroots that facd-prepare writes: the only ones a scan of the shipped option files holds against a tree
PREPARED = re.compile(r'(^|/)datasets/(DIV2K/DIV2K_train_(HR|LR_bicubic_X\d+)_sub\.lmdb|[^/]+/(GTmod12|LRbicx\d+))/?$')
Sizes = Dict[str, Tuple[int, int]]
OPTIONAL_SETS = ('Manga109', )  # benchmark sets a user may not have: the shipped test files read them separately
OPTIONAL_ROOT = re.compile(r'(^|/)datasets/(' + '|'.join(OPTIONAL_SETS) + r')/')


def shipped_options() -> str:
    """The ``options/`` folder of this checkout."""
    import facd_basicsr
    return osp.join(osp.dirname(osp.dirname(osp.abspath(facd_basicsr.__file__))), 'options')


def option_files(paths: Sequence[str]) -> List[Tuple[str, bool]]:
    """``(file, named)`` for the YAML files given or found (recursively) in folders; ``named``: given as a file."""
    found = []
    for path in paths:
        if osp.isfile(path):
            found.append((path, True))
        elif osp.isdir(path):
            for folder, _, names in sorted(os.walk(path)):
                found += [(osp.join(folder, n), False) for n in sorted(names) if n.endswith(('.yml', '.yaml'))]
        else:
            found.append((path, True))  # reported as unreadable by check_option_file
    return found


def _png_size(path: str) -> Optional[Tuple[int, int]]:
    """(H, W) from a PNG header, None for other files."""
    with open(path, 'rb') as f:
        head = f.read(24)
    if head[:8] != b'\x89PNG\r\n\x1a\n' or head[12:16] != b'IHDR':
        return None
    w, h = struct.unpack('>II', head[16:24])
    return h, w


def check_folder(path: str) -> Tuple[List[str], Sizes]:
    """Problems of an image folder and ``{file name: (H, W)}``."""
    if not osp.isdir(path):
        return ['not found'], {}
    sizes, problems = {}, []
    for name in list_images(path):
        size = _png_size(osp.join(path, name))
        if size is None:
            img = cv2.imread(osp.join(path, name), cv2.IMREAD_UNCHANGED)
            if img is None:
                problems.append(f'unreadable image {name}')
                continue
            size = img.shape[:2]
        sizes[name] = size
    return (problems or (['no images'] if not sizes else [])), sizes


def check_lmdb(path: str) -> Tuple[List[str], Sizes]:
    """Problems of a BasicSR LMDB and ``{key: (H, W)}`` from its ``meta_info.txt``."""
    if not osp.isdir(path):
        return ['not found'], {}
    missing = [n for n in ('data.mdb', 'meta_info.txt') if not osp.isfile(osp.join(path, n))]
    if missing:
        return [f'no {" or ".join(missing)} (not a finished LMDB)'], {}
    sizes = {}
    with open(osp.join(path, 'meta_info.txt')) as f:
        for number, line in enumerate(f, 1):
            match = re.fullmatch(r'(\S+?)\.\w+ \((\d+),(\d+),(\d+)\) \d+', line.strip())
            if match is None:
                return [f'meta_info.txt line {number} is not "<key>.png (h,w,c) level": {line.strip()!r}'], {}
            sizes[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False)
    try:
        entries = env.stat()['entries']
        problems = [] if entries == len(sizes) else [f'{entries} LMDB keys but {len(sizes)} meta_info.txt lines']
        with env.begin() as txn:
            for key in dict.fromkeys([next(iter(sizes), None), next(reversed(sizes), None)]):
                if key is None:
                    problems.append('empty')
                    continue
                value = txn.get(key.encode('ascii'))
                img = None if value is None else cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
                if img is None or tuple(img.shape[:2]) != sizes[key]:
                    problems.append(f'key {key}: missing or not the {sizes[key]} image meta_info.txt records')
    finally:
        env.close()
    return problems, sizes


def check_pair(gt: Sizes, lq: Sizes, scale: int, tmpl: str, lmdb_keys: bool) -> List[str]:
    """GT and LQ hold the same images (``filename_tmpl`` for folders) and GT sizes are ``scale`` x LQ sizes."""
    if lmdb_keys:
        pairs = {k: k for k in gt}
    else:
        pairs = {n: tmpl.format(osp.splitext(n)[0]) + osp.splitext(n)[1] for n in gt}
    problems = []
    unmatched = sorted(n for n, m in pairs.items() if m not in lq)
    if unmatched or len(gt) != len(lq):
        problems.append(f'{len(gt)} GT and {len(lq)} LQ images; GT without LQ: {", ".join(unmatched[:5]) or "-"}')
    wrong = [n for n, m in pairs.items() if m in lq and gt[n] != (lq[m][0] * scale, lq[m][1] * scale)]
    if wrong:
        n = wrong[0]
        problems.append(f'{len(wrong)} GT/LQ size(s) disagree with scale {scale}, e.g. {n}: GT {gt[n]}, '
                        f'LQ {lq[pairs[n]]}')
    return problems


def check_option_file(path: str, root: str, cache: Dict) -> Optional[List[str]]:
    """Problems of the tree under ``root`` for option file ``path``; None when it names no dataroot at all."""
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        return [f'cannot read the option file: {err}']
    datasets = opt.get('datasets') if isinstance(opt, dict) else None
    problems, named = [], False
    for phase, ds in (datasets or {}).items():
        if not isinstance(ds, dict):
            continue
        lmdb_io = (ds.get('io_backend') or {}).get('type') == 'lmdb'
        results = {}
        for key in ('dataroot_gt', 'dataroot_lq'):
            if not ds.get(key):
                continue
            named = True
            full = osp.normpath(osp.join(root, ds[key]))
            if (full, lmdb_io) not in cache:
                cache[full, lmdb_io] = check_lmdb(full) if lmdb_io else check_folder(full)
            results[key] = cache[full, lmdb_io]
            problems += [f'{ds[key]} (datasets.{phase}.{key}): {p}' for p in results[key][0]]
        ok = len(results) == 2 and not any(r[0] for r in results.values())
        if ok and opt.get('scale'):
            pair = check_pair(results['dataroot_gt'][1], results['dataroot_lq'][1], int(opt['scale']),
                              ds.get('filename_tmpl', '{}'), lmdb_io)
            problems += [f'{ds["dataroot_gt"]} + {ds["dataroot_lq"]} (datasets.{phase}): {p}' for p in pair]
    return problems if named else None


def names_prepared_data(path: str) -> bool:
    """Whether option file ``path`` reads any dataroot that facd-prepare writes."""
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return True  # let the check report it
    datasets = opt.get('datasets') if isinstance(opt, dict) else None
    return any(PREPARED.search(str(ds.get(k, '')).replace('\\', '/'))
               for ds in (datasets or {}).values() if isinstance(ds, dict) for k in ('dataroot_gt', 'dataroot_lq'))


def check_tree(root: str, paths: Sequence[str]) -> List[Tuple[str, Optional[List[str]]]]:
    """``(option file, problems)`` for each option file; problems None: skipped (reads nothing facd-prepare makes).

    Files named directly are always checked; files found in folders only when they read data facd-prepare writes.
    """
    cache: Dict = {}
    report = []
    for path, named in option_files(paths):
        if not named and not names_prepared_data(path):
            report.append((path, None))
            continue
        problems = check_option_file(path, root, cache)
        report.append((path, problems if problems is not None else ['names no dataroot']))
    return report


def optional_problem(problem: str) -> bool:
    """Whether ``problem`` (a line of :func:`check_option_file`) is an optional set's dataroot that is not there."""
    return problem.endswith(': not found') and bool(OPTIONAL_ROOT.search(problem.split(' ', 1)[0].replace('\\', '/')))


def file_status(problems: Optional[List[str]]) -> str:
    """``'skipped'`` (None), ``'ok'``, ``'optional'`` (only optional data is missing) or ``'missing'``."""
    if problems is None:
        return 'skipped'
    if not problems:
        return 'ok'
    return 'optional' if all(optional_problem(p) for p in problems) else 'missing'


def run_check(root: str, opt_paths: Optional[Sequence[str]] = None, out: Callable[[str], None] = print) -> int:
    """``facd-prepare --check``: per option file, what the tree under ``root`` lacks.

    Each checked file is ``ok``, ``MISSING`` (data it needs is absent or broken) or ``missing, optional`` (only a set
    of :data:`OPTIONAL_SETS` is absent, e.g. the Manga109 test files). Returns 0 when no file is ``MISSING`` (every
    recipe and test file of the free data is ready), 1 otherwise or when no file was checked.
    """
    report = check_tree(root, opt_paths or [shipped_options()])
    counts = {'ok': 0, 'missing': 0, 'optional': 0, 'skipped': 0}
    labels = {'ok': 'ok', 'missing': 'MISSING', 'optional': 'missing, optional'}
    for path, problems in report:
        status = file_status(problems)
        counts[status] += 1
        if status == 'skipped':
            continue
        shown = osp.relpath(path) if not osp.relpath(path).startswith('..') else path
        out(f'{shown}: {labels[status]}')
        for problem in problems:
            out(f'  - {problem}')
    optional = (f', {counts["optional"]} optional with missing data ({", ".join(OPTIONAL_SETS)} is not freely '
                'downloadable; facd-prepare --benchmark prepares it when you have it)') if counts['optional'] else ''
    skipped = f', {counts["skipped"]} skipped (read no data facd-prepare writes)' if counts['skipped'] else ''
    out(f'facd-prepare --check ({osp.abspath(root)}): {counts["ok"]} option file(s) ok, {counts["missing"]} '
        f'incomplete{optional}{skipped}')
    if counts['skipped'] == len(report):
        print('facd-prepare --check: no option file checked', file=sys.stderr)
        return 1
    return 1 if counts['missing'] else 0
