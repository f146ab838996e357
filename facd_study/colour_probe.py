"""How faithfully trained students render colour where the training photos say little (issue 32, item 4).

Two probes, forward passes only:

* **Flat colours.** A grid of flat LR patches, ``levels`` per channel (8 levels: 512 colours, from black to the
  saturated corners of the RGB cube). A network that renders a flat colour right returns the same flat colour; the
  probe reports the mean absolute error over the grid (0-255 scale, read at the patch centre, clipped to 0-255 as
  an image would be) and the mean green error on dark greens (R and B at most 8, G 24-96), the colours where feature
  distilled x2 students went wrong first.
* **Held-out photos.** Whole photos that no x2 row trains, selects or reports on (scikit-learn's ``china`` and
  ``flower``, matplotlib's ``grace_hopper``, scikit-image's grey ``camera``): PSNR-Y minus bicubic (crop = scale,
  the study's scoring path) and the mean offset per channel (output - GT, 0-255).
"""
import itertools
from typing import Dict, Sequence

import numpy as np
import torch
from torch import nn

from facd_basicsr.tools.bicubic import bicubic_lr, bicubic_upscale
from facd_basicsr.tools.scoring import image_scores, upscale
from facd_study.sample_data import load_photo, make_gt
from facd_study.scoring import colour_offsets

LEVELS = (0, 8, 24, 48, 96, 160, 224, 255)
HELD_OUT_PHOTOS = ('china', 'flower', 'grace_hopper', 'camera')
PATCH = 12  # LR side of each flat patch: the centre read is far from the zero-padded border at 2 and 4


def flat_colours(levels: Sequence[int] = LEVELS) -> np.ndarray:
    """Every (R, G, B) of the grid, float32 (N, 3) on the 0-255 scale."""
    return np.array(list(itertools.product(levels, repeat=3)), np.float32)


def dark_greens(colours: np.ndarray) -> np.ndarray:
    """Boolean (N, ): R and B at most 8, G from 24 to 96."""
    red, green, blue = colours.T
    return (red <= 8) & (blue <= 8) & (green >= 24) & (green <= 96)


def flat_colour_errors(net: nn.Module, colours: np.ndarray, batch: int = 128) -> np.ndarray:
    """Output - input colour at each flat patch's centre, (N, 3) RGB on the 0-255 scale (output clipped to 0-255)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(colours), batch):
            rgb = torch.from_numpy(colours[start:start + batch] / 255.)
            x = rgb.view(-1, 3, 1, 1).expand(-1, 3, PATCH, PATCH).contiguous()
            y = net(x)
            centre = y.shape[-1] // 2
            out.append(y[:, :, centre - 2:centre + 2, centre - 2:centre + 2].mean((2, 3)).clamp(0, 1).numpy() * 255)
    return np.concatenate(out) - colours


def flat_summary(net: nn.Module) -> Dict[str, float]:
    """``{'flat_mae': ..., 'flat_max': ..., 'dark_green_g': ...}`` of :func:`flat_colour_errors` on the grid."""
    colours = flat_colours()
    err = flat_colour_errors(net, colours)
    return {'flat_mae': float(np.abs(err).mean()), 'flat_max': float(np.abs(err).max()),
            'dark_green_g': float(err[dark_greens(colours), 1].mean())}


def held_out_pairs(scale: int, photos: Sequence[str] = HELD_OUT_PHOTOS) -> Dict[str, tuple]:
    """``{photo: (lr, gt, bicubic PSNR-Y)}``: the whole photo cropped to a multiple of ``scale``, its LR made with
    the MATLAB-style bicubic that built the study's sets, and the bicubic up-scaling's score."""
    pairs = {}
    for name in photos:
        gt = make_gt(load_photo(name), scale, None)
        lr = bicubic_lr(gt, scale)
        pairs[name] = (lr, gt, image_scores(bicubic_upscale(lr, scale), gt, scale)['psnr'])
    return pairs


def photo_summary(net: nn.Module, pairs: Dict[str, tuple], scale: int) -> Dict[str, Dict[str, float]]:
    """Per photo: ``{'vs_bicubic': PSNR-Y - bicubic's, 'r', 'g', 'b': mean output - GT}`` (0-255)."""
    outputs = {name: upscale(net, lr) for name, (lr, _, _) in pairs.items()}
    offsets = colour_offsets(outputs, {name: (lr, gt) for name, (lr, gt, _) in pairs.items()}, scale)
    return {name: dict(offsets[name], vs_bicubic=image_scores(outputs[name], gt, scale)['psnr'] - bicubic)
            for name, (_, gt, bicubic) in pairs.items()}
