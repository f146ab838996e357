"""The teacher checkpoint files we know of: name, SHA-256 prefix when known, source, and the option files using them.

BasicSR model-zoo files carry the first 8 hex digits of their SHA-256 in the name (``...-76ee1c8f.pth``); that is the
prefix recorded here. Official EDSR-PyTorch / RCAN ``.pt`` files and our converted RCAN ``.pth`` files have no
published hash: their prefix is ``None`` and ``facd-checksum`` reports them as UNKNOWN (we never invent hashes).
"""
import os.path as osp
import re
from dataclasses import dataclass
from typing import Optional, Tuple

ZOO_SOURCE = 'BasicSR model zoo (BasicSR scripts/download_pretrained_models.py EDSR)'
EDSR_PYTORCH_SOURCE = 'official EDSR-PyTorch, https://cv.snu.ac.kr/research/EDSR/models/'
RCAN_SOURCE = 'official RCAN (yulunzhang/RCAN, models_ECCV2018RCAN.zip)'
NAME_HASH = re.compile(r'-([0-9a-f]{8})\.pth$')
BASELINES = ('FACDAlways', 'FACDLiteral', 'FAKD', 'FD', 'KD')


@dataclass(frozen=True)
class TeacherFile:
    """One known checkpoint file.

    Attributes:
        name (str): file name (no folder).
        sha256_prefix (str | None): leading hex digits of its SHA-256; None when no hash is published.
        source (str): where to get it, or the command that makes it.
        option_files (tuple[str]): our option files that use it as ``path.pretrain_network_t``.
        needs_conversion (bool): True for official raw state dicts that BasicSR cannot load.
        note (str): anything else worth knowing.
    """
    name: str
    sha256_prefix: Optional[str]
    source: str
    option_files: Tuple[str, ...] = ()
    needs_conversion: bool = False
    note: str = ''


def _option_files(family: str, scale: int) -> Tuple[str, ...]:
    """Our option files that load the ``family`` teacher at ``scale`` (FACD and the distillation baselines)."""
    files = [f'options/train_FACD_{family}_x{scale}.yml']
    files += [f'options/baselines/train_{name}_{family}_x{scale}.yml' for name in BASELINES]
    if family == 'RCAN':  # the student starts from the teacher's tensors of matching shape
        files.append(f'options/baselines/train_TeacherInit_RCAN_x{scale}.yml')
    return tuple(files)


def _zoo_edsr() -> Tuple[TeacherFile, ...]:
    large = {2: 'be38e77d', 3: '3660f70d', 4: '76ee1c8f'}
    medium = {2: '3ba7b086', 3: '6908f88a', 4: '0c287733'}
    files = [
        TeacherFile(
            f'EDSR_Lx{s}_f256b32_DIV2K_official-{h}.pth',
            h,
            ZOO_SOURCE,
            _option_files('EDSR', s),
            note='EDSR-L 32 blocks x 256 ch, res_scale 0.1, key params; loads as it is') for s, h in large.items()
    ]
    files += [
        TeacherFile(
            f'EDSR_Mx{s}_f64b16_DIV2K_official-{h}.pth',
            h,
            ZOO_SOURCE,
            note='EDSR-baseline 16 blocks x 64 ch, res_scale 1 (student size); loads as it is')
        for s, h in medium.items()
    ]
    return tuple(files)


def _official_edsr() -> Tuple[TeacherFile, ...]:
    tags = {
        'edsr_x2': '0edfb8a3',
        'edsr_x3': 'ea3ef2c6',
        'edsr_x4': '4f62e9ef',
        'edsr_baseline_x2': '1bc95232',
        'edsr_baseline_x3': 'abf2a44e',
        'edsr_baseline_x4': '6b446fab'
    }
    return tuple(
        TeacherFile(
            f'{stem}-{tag}.pt',
            None,
            EDSR_PYTORCH_SOURCE,
            needs_conversion=True,
            note='the name tag is not known to be a SHA-256 prefix') for stem, tag in tags.items())


def _rcan() -> Tuple[TeacherFile, ...]:
    files = [
        TeacherFile(
            f'RCAN_BIX{s}.pt',
            None,
            RCAN_SOURCE,
            needs_conversion=True,
            note='10 groups x 20 blocks x 64 ch; convert with facd-convert-teacher') for s in (2, 3, 4, 8)
    ]
    files += [
        TeacherFile(
            f'RCAN_BIX{s}.pth',
            None,
            f'facd-convert-teacher RCAN_BIX{s}.pt experiments/pretrained_models/RCAN_BIX{s}.pth',
            _option_files('RCAN', s),
            note='converted here; its bytes depend on the torch '
            'version that saved it, so no hash is listed') for s in (2, 3, 4)
    ]
    return tuple(files)


TEACHER_FILES: Tuple[TeacherFile, ...] = _zoo_edsr() + _official_edsr() + _rcan()


def find_teacher_file(path: str) -> Optional[TeacherFile]:
    """The table entry whose name equals the base name of ``path``, or None."""
    name = osp.basename(path)
    for entry in TEACHER_FILES:
        if entry.name == name:
            return entry
    return None


def name_embedded_prefix(path: str) -> Optional[str]:
    """The SHA-256 prefix carried by a name of the form ``<stem>-<8 hex>.pth`` (BasicSR zoo convention), or None."""
    match = NAME_HASH.search(osp.basename(path))
    return match.group(1) if match else None


def expected_prefix(path: str) -> Optional[str]:
    """The SHA-256 prefix ``path`` should have: from the table first, else from its name; None when unknown."""
    entry = find_teacher_file(path)
    if entry is not None and entry.sha256_prefix:
        return entry.sha256_prefix
    return name_embedded_prefix(path)
