"""Refuse a wrong teacher before training: it must beat bicubic upsampling on the first validation images.

A teacher that silently loaded the wrong weights (wrong file, scale, ``param_key_t``, ``img_range`` / ``rgb_mean``,
an unconverted official file) still produces images, and distilling from it wastes the whole run. Any trained SR
network beats MATLAB-style bicubic on real photos, so ``check_teacher`` compares the two (Y-channel PSNR, crop =
scale, BasicSR's own metric and image conversion) and raises :class:`TeacherCheckError` when the teacher does not.
``FACDModel`` calls it at the start of training unless ``distill.teacher_check: false``.
"""
import copy
from typing import Dict, Tuple

import torch
from basicsr.data import build_dataset
from basicsr.metrics import calculate_psnr
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.matlab_functions import imresize
from torch import nn

from facd_basicsr.host.window_pad import forward_padded, window_multiple

LIKELY_CAUSES = (
    'wrong file in path.pretrain_network_t, or an untrained network (verify the file with facd-checksum)',
    'wrong scale: the teacher file or network_t.upscale does not match the data scale',
    'wrong path.param_key_t (params vs params_ema), or strict_load_t: false hiding missing keys',
    'wrong network_t.img_range / rgb_mean / res_scale for these weights (official EDSR and RCAN: img_range 255., '
    'rgb_mean [0.4488, 0.4371, 0.4040]; EDSR 32 x 256: res_scale 0.1)',
    'an official EDSR-PyTorch / RCAN .pt file used without conversion (run facd-convert-teacher)',
)
SKIP_HINT = 'Set distill.teacher_check: false to skip this check.'


class TeacherCheckError(ValueError):
    """The teacher does not beat bicubic upsampling, or it could not be checked."""


def check_dataset_opt(opt: dict) -> Tuple[dict, str]:
    """Options of the dataset to check on: the first ``val*`` dataset, else the train dataset (no augmentation).

    Returns:
        tuple: (dataset options with ``phase: val`` and ``scale`` set, description for messages).
    """
    datasets = opt.get('datasets') or {}
    val_keys = [key for key in datasets if key.startswith('val')]
    if val_keys:
        key, what = val_keys[0], 'validation set'
    elif 'train' in datasets:
        key, what = 'train', 'train set (no validation set; first images, centre crop, no augmentation)'
    else:
        raise TeacherCheckError(f'Cannot check the teacher: opt["datasets"] has no val* or train dataset (keys: '
                                f'{sorted(datasets)}). Add a validation dataset. {SKIP_HINT}')
    dataset_opt = copy.deepcopy(datasets[key])
    dataset_opt['phase'] = 'val'  # BasicSR datasets crop and augment only in phase 'train'
    if 'scale' not in dataset_opt:
        if 'scale' not in opt:
            raise KeyError(f'Cannot check the teacher: neither opt["scale"] nor datasets.{key}.scale is set')
        dataset_opt['scale'] = opt['scale']
    dataset_opt.setdefault('name', key)
    return dataset_opt, f'{dataset_opt["name"]} {what}'


def centre_crop(lq: torch.Tensor, gt: torch.Tensor, scale: int, max_side: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre crops of an LR (C, h, w) and its GT (C, h * scale, w * scale), LR sides at most ``max_side`` px."""
    h, w = lq.shape[-2:]
    ch, cw = min(h, max_side), min(w, max_side)
    top, left = (h - ch) // 2, (w - cw) // 2
    lq = lq[..., top:top + ch, left:left + cw]
    gt = gt[..., top * scale:(top + ch) * scale, left * scale:(left + cw) * scale]
    return lq, gt


def _image_psnrs(net_t: nn.Module, item: dict, scale: int, max_side: int, multiple: int = 1) -> Tuple[float, float]:
    """(teacher, bicubic) Y-PSNR in dB of one dataset item, crop border = scale; the LR input is padded to
    ``multiple`` (a SwinIR teacher's window) and the output cropped back."""
    if 'lq' not in item or 'gt' not in item:
        raise TeacherCheckError(f'Cannot check the teacher: dataset items have keys {sorted(item)}, not lq and gt '
                                f'(a degradation-on-the-fly train set?). Add a paired validation dataset. {SKIP_HINT}')
    if tuple(item['gt'].shape[-2:]) != tuple(scale * n for n in item['lq'].shape[-2:]):
        raise TeacherCheckError(f'Cannot check the teacher: a GT image of {tuple(item["gt"].shape[-2:])} pixels is '
                                f'not {scale} x its LR image {tuple(item["lq"].shape[-2:])}. Is scale {scale} right '
                                f'for this dataset? {SKIP_HINT}')
    lq, gt = centre_crop(item['lq'], item['gt'], scale, max_side)
    param = next(net_t.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    sr = forward_padded(net_t, lq.unsqueeze(0).to(device=device, dtype=dtype), multiple, scale).float()
    gt_img = tensor2img(gt)
    sr_img, bic_img = tensor2img(sr), tensor2img(imresize(lq, scale))
    if sr_img.shape != gt_img.shape:
        raise TeacherCheckError(f'Teacher check failed: the teacher turns a {tuple(lq.shape[-2:])} LR image into '
                                f'{tuple(sr.shape[-2:])}, but its GT is {tuple(gt.shape[-2:])} (scale {scale}). '
                                'network_t.upscale or the teacher file has the wrong scale.')
    return (calculate_psnr(sr_img, gt_img, scale, test_y_channel=True),
            calculate_psnr(bic_img, gt_img, scale, test_y_channel=True))


def close_lmdb(dataset) -> None:
    """Close the LMDB environments a BasicSR dataset opened: LMDB refuses to open one twice in a process, and training
    builds the same validation set again (an exception traceback would otherwise keep this one open)."""
    client = getattr(getattr(dataset, 'file_client', None), 'client', None)
    for env in getattr(client, '_client', {}).values():
        env.close()
    if client is not None:
        dataset.file_client = None


def _failure_message(what: str, result: Dict[str, float], margin_db: float) -> str:
    causes = '\n'.join(f'  - {cause}' for cause in LIKELY_CAUSES)
    return (f'Teacher check failed on the {what}: on the first {result["num_images"]} image(s) the teacher reaches '
            f'{result["teacher_psnr"]:.3f} dB Y-PSNR and bicubic upsampling {result["bicubic_psnr"]:.3f} dB; a '
            f'trained teacher must beat bicubic by more than {margin_db:g} dB. Likely causes:\n{causes}\n{SKIP_HINT}')


def check_teacher(net_t: nn.Module, opt: dict, num_images: int = 2, margin_db: float = 0.0,
                  max_lq_side: int = 256) -> dict:
    """Check that the teacher beats MATLAB-style bicubic upsampling on the first validation images.

    Args:
        net_t (nn.Module): the teacher, already loaded; it runs in eval mode without autograd on the device of its
            parameters, and its train/eval mode is restored afterwards.
        opt (dict): BasicSR options (``datasets``, ``scale``). The first ``val*`` dataset is used; without one, the
            train dataset's first images with ``phase: val`` (no random crop, no flips).
        num_images (int): how many images to average over. Default: 2.
        margin_db (float): the teacher must beat bicubic by more than this (dB). Default: 0.
        max_lq_side (int): LR images are centre-cropped to at most this many pixels per side. Default: 256.

    Returns:
        dict: ``{'teacher_psnr': float, 'bicubic_psnr': float, 'num_images': int}``, mean Y-PSNR in dB.

    Raises:
        TeacherCheckError: the teacher does not beat bicubic + ``margin_db``, its output size is wrong, or no
            usable images exist.
    """
    if int(num_images) < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    dataset_opt, what = check_dataset_opt(opt)
    dataset = build_dataset(dataset_opt)
    count = min(int(num_images), len(dataset))
    if count == 0:
        raise TeacherCheckError(f'Cannot check the teacher: the {what} is empty. {SKIP_HINT}')
    was_training = net_t.training
    net_t.eval()
    try:
        multiple = window_multiple(opt.get('network_t') or {})
        pairs = [
            _image_psnrs(net_t, dataset[i], int(dataset_opt['scale']), max_lq_side, multiple) for i in range(count)
        ]
    finally:
        net_t.train(was_training)
        close_lmdb(dataset)
    result = {
        'teacher_psnr': float(sum(p[0] for p in pairs) / count),
        'bicubic_psnr': float(sum(p[1] for p in pairs) / count),
        'num_images': count
    }
    get_root_logger().info(f'Teacher check on the {what}, {count} image(s), Y-PSNR crop {dataset_opt["scale"]}: '
                           f'teacher {result["teacher_psnr"]:.3f} dB, bicubic {result["bicubic_psnr"]:.3f} dB.')
    if not result['teacher_psnr'] > result['bicubic_psnr'] + margin_db:
        raise TeacherCheckError(_failure_message(what, result, margin_db))
    return result
