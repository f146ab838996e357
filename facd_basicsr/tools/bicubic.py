"""MATLAB-style bicubic resizing of uint8 images, as BasicSR's data-preparation scripts make LR images.

Both functions go through ``basicsr.utils.matlab_functions.imresize`` in float64 and round back to uint8.
"""
import numpy as np
from basicsr.utils.matlab_functions import imresize


def bicubic_lr(gt: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic downscale of a uint8 BGR image ``(H, W, 3)`` by ``scale``; uint8 back."""
    lr = imresize(gt.astype(np.float64) / 255., 1. / scale)
    return np.clip(np.round(lr * 255.), 0, 255).astype(np.uint8)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic upscale of a uint8 BGR image ``(h, w, 3)`` by ``scale``; uint8 back."""
    up = imresize(lr.astype(np.float64) / 255., scale)
    return np.clip(np.round(up * 255.), 0, 255).astype(np.uint8)
