"""The one scoring path of this repository: a network's forward on a uint8 image, and PSNR / SSIM of the result.

Used by ``facd-eval``, ``facd-infer`` and the study harness (``facd_study.scoring``), so that ``make demo``, the
study tables and ``facd-eval`` compute the same numbers from the same images.

- Images go in and out as BasicSR's validation sees them: ``img2tensor`` of the uint8 BGR image divided by 255
  (RGB, float32, ``[0, 1]``), and ``tensor2img`` of the output (clamped to ``[0, 1]``, times 255, rounded half to
  even, uint8 BGR). A uint16 image (``facd-infer`` on a 16-bit PNG / TIFF) is divided by 65535 and comes back as
  uint16: ``tensor2img(out_type=np.float32)`` times 65535, rounded (BasicSR's ``out_type=np.uint16`` does not
  scale, so it would give 0s and 1s).
- PSNR and SSIM are BasicSR's ``calculate_psnr`` / ``calculate_ssim`` on the Y channel (ITU-R BT.601) with
  ``crop_border = scale``: the FAKD / FACD protocol.
"""
from typing import Callable, Dict, Union

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img

Forward = Callable[[torch.Tensor], torch.Tensor]
IMAGE_MAX = {np.dtype(np.uint8): 255., np.dtype(np.uint16): 65535.}


def img_to_tensor(img: np.ndarray, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """uint8 or uint16 BGR ``(H, W, 3)`` to float32 RGB ``(1, 3, H, W)`` in ``[0, 1]`` on ``device``, by img2tensor."""
    if img.dtype not in IMAGE_MAX:
        raise ValueError(f'images must be uint8 or uint16, got {img.dtype}')
    scaled = img.astype(np.float32) / IMAGE_MAX[img.dtype]
    return img2tensor(scaled, bgr2rgb=True, float32=True).unsqueeze(0).to(device)


def tensor_to_img(tensor: torch.Tensor, out_type: type = np.uint8) -> np.ndarray:
    """Float RGB ``(1, 3, H, W)`` to uint8 (or uint16) BGR ``(H, W, 3)``: clamped to ``[0, 1]`` and rounded.

    Args:
        tensor (Tensor): one image ``(1, 3, H, W)``, RGB, nominally in ``[0, 1]``.
        out_type (type): ``np.uint8`` (BasicSR's ``tensor2img``, x255) or ``np.uint16`` (x65535). Default: uint8.
    """
    if tensor.dim() != 4 or tensor.shape[0] != 1:
        raise ValueError(f'tensor_to_img expects one image (1, C, H, W), got shape {tuple(tensor.shape)}')
    # tensor2img clamps in place: give it a copy, so that the caller's tensor (maybe an inference tensor) stays as is
    if out_type == np.uint8:
        return tensor2img(tensor.detach().clone(), rgb2bgr=True, out_type=np.uint8, min_max=(0, 1))
    if out_type != np.uint16:
        raise ValueError(f'out_type {out_type} is not supported. Supported: np.uint8, np.uint16')
    img = tensor2img(tensor.detach().clone(), rgb2bgr=True, out_type=np.float32, min_max=(0, 1))
    return (img * np.float32(65535.)).round().astype(np.uint16)


def upscale(forward: Forward, lr: np.ndarray, device: Union[str, torch.device] = 'cpu') -> np.ndarray:
    """Run ``forward`` (a network, or a tiled / self-ensembled wrapper of it) on one BGR image; the same dtype out.

    Args:
        forward (callable): maps an RGB batch ``(1, 3, h, w)`` in ``[0, 1]`` to its SR batch ``(1, 3, h*s, w*s)``.
        lr (ndarray): uint8 (or uint16) BGR image ``(h, w, 3)``.
        device (str | torch.device): where the input tensor goes (the network's device). Default: 'cpu'.

    Returns:
        ndarray: BGR image ``(h*s, w*s, 3)`` of ``lr``'s dtype.
    """
    with torch.inference_mode():
        return tensor_to_img(forward(img_to_tensor(lr, device)), lr.dtype.type)


def image_scores(sr: np.ndarray, gt: np.ndarray, scale: int) -> Dict[str, float]:
    """``{'psnr': dB, 'ssim': ...}`` of a uint8 BGR output against its uint8 BGR GT (Y channel, crop = ``scale``)."""
    if sr.shape != gt.shape:
        raise ValueError(f'output {sr.shape} and ground truth {gt.shape} differ in size')
    return {
        'psnr': float(calculate_psnr(sr, gt, crop_border=scale, test_y_channel=True)),
        'ssim': float(calculate_ssim(sr, gt, crop_border=scale, test_y_channel=True)),
    }
