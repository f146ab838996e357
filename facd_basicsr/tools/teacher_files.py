"""The teacher checkpoint files we know of: name, SHA-256 prefix when known, source, and the option files using them.

BasicSR model-zoo files carry the first 8 hex digits of their SHA-256 in the name (``...-76ee1c8f.pth``); that is the
prefix recorded here. Official EDSR-PyTorch / RCAN ``.pt`` files and our converted RCAN ``.pth`` files have no
published hash: their prefix is ``None`` and ``facd-checksum`` reports them as UNKNOWN (we never invent hashes).
The official SwinIR releases carry no hash in their names; for x2 and x4 the whole SHA-256 recorded here is the one
that public third-party code states for the file (not computed here, we have no copy); x3 has none.
"""
import os.path as osp
import re
from dataclasses import dataclass
from typing import Optional, Tuple

ZOO_SOURCE = 'BasicSR model zoo (BasicSR scripts/download_pretrained_models.py EDSR)'
EDSR_PYTORCH_SOURCE = 'official EDSR-PyTorch, https://cv.snu.ac.kr/research/EDSR/models/'
RCAN_SOURCE = 'official RCAN (yulunzhang/RCAN, models_ECCV2018RCAN.zip)'
NAME_HASH = re.compile(r'-([0-9a-f]{8})\.pth$')
SWINIR_SOURCE = 'official SwinIR release v0.0, https://github.com/JingyunLiang/SwinIR/releases'
ESRGAN_SOURCE = 'BasicSR model zoo (BasicSR scripts/download_pretrained_models.py ESRGAN)'
BASELINES = ('FACDAlways', 'FACDLiteral', 'FAKD', 'FD', 'KD')
DEPLOY_BASELINES = ('FACDAlways', 'FD', 'KD')  # the distillation baselines of the SwinIR and Compact families
# SHA-256 of official SwinIR-M files as stated by public third-party code (x4: two independent repositories agree;
# x2: one). Not verified here: no copy of the files on this machine.
SWINIR_M_SHA256 = {
    2: 'ac6d4895f73aa1b3d563937e29dcedcfdff4d401280e248f23db3c6f68e8343b',
    3: None,
    4: '129dc773ba2d4c07f3eb0bb116fbe692011b7cc072d9ca12797cd3748198610a',
}


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
    baselines = BASELINES if family in ('EDSR', 'RCAN') else DEPLOY_BASELINES
    files += [f'options/baselines/train_{name}_{family}_x{scale}.yml' for name in baselines]
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


def _swinir() -> Tuple[TeacherFile, ...]:
    files = [
        TeacherFile(
            f'001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth',
            SWINIR_M_SHA256[s],
            SWINIR_SOURCE,
            _option_files('SwinIR', s),
            note='SwinIR-M (classical SR, DIV2K, 48 px patches): 6 x 6 Swin blocks, 180 ch, window 8, img_size 48, key '
            'params; loads strictly into BasicSR SwinIR as it is' + ('' if SWINIR_M_SHA256[s] else '; no hash known'))
        for s in (2, 3, 4)
    ]
    files += [
        TeacherFile(
            f'002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth',
            None,
            SWINIR_SOURCE,
            note='SwinIR-S (lightweight SR): the SwinIR recipes\' student network (img_size 64), key params')
        for s in (2, 3, 4)
    ]
    return tuple(files)


def _esrgan() -> Tuple[TeacherFile, ...]:
    note = 'RRDBNet 23 blocks x 64 ch, growth 32, PSNR-oriented (L1, DF2K), key params; loads as it is'
    return (TeacherFile('ESRGAN_PSNR_SRx4_DF2K_official-150ff491.pth', '150ff491', ESRGAN_SOURCE,
                        _option_files('Compact', 4), note=note),
            TeacherFile('RRDBNet_PSNR_SRx4_DF2K_official-150ff491.pth', '150ff491', ESRGAN_SOURCE,
                        note=note + '; the name older BasicSR releases gave the same file'))


TEACHER_FILES: Tuple[TeacherFile, ...] = _zoo_edsr() + _official_edsr() + _rcan() + _swinir() + _esrgan()


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
