"""How near same-patch noisy negatives sit to the anchor, against in-batch negatives: the size of the ratio-L2 term
with ``negatives: history`` (issue 32), measured by forward passes only (``scripts/study.py --negative-distance``).

Ratio-L2 at weight w pulls like FD-L2 at w / d_neg, so the weight of a history row follows from d_neg. For a
network f (the teacher: the adapted student features are pulled towards its space) and its tap features,

- ``d_batch = mean_(i != j) mean((f(x_i) - f(x_j))^2)``: the in-batch negatives' distance (``negatives: batch``);
- ``d_noise = mean_(i, k) mean((f(x_i) - f(x_i + n_ik))^2)``, n_ik Gaussian with sigma drawn uniformly from
  ``sigma_range`` (0-255 scale), as ``distill.history`` draws it: the noisy copies of the history pool, for a
  history model equal to the anchor's network. The clean copy's distance (the EMA's lag) is not measured here.
"""
import glob
import os.path as osp
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn


def random_lr_crops(folder: str, count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` random ``size`` px crops of the PNG images of ``folder``, RGB in [0, 1]: (count, 3, size, size)."""
    paths = sorted(glob.glob(osp.join(folder, '*.png')))
    if len(paths) < count:
        raise ValueError(f'{folder} holds {len(paths)} PNG images, {count} are needed')
    rng = np.random.default_rng(seed)
    crops = []
    for k in rng.choice(len(paths), count, replace=False):
        img = cv2.imread(paths[k], cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.
        top, left = (int(rng.integers(0, side - size + 1)) for side in img.shape[:2])
        crops.append(torch.from_numpy(img[top:top + size, left:left + size].copy()).permute(2, 0, 1))
    return torch.stack(crops)


def tap_features(net: nn.Module, taps: Sequence[str], x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The outputs of the modules ``taps`` of ``net`` for input ``x`` (forward hooks, removed afterwards)."""
    feats, handles = {}, []
    for name in taps:
        handles.append(
            net.get_submodule(name).register_forward_hook(
                lambda module, inputs, output, name=name: feats.__setitem__(name, output.detach())))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return feats


def negative_distances(net: nn.Module,
                       taps: Sequence[str],
                       x: torch.Tensor,
                       sigma_range: Sequence[float] = (1., 30.),
                       copies: int = 4,
                       seed: int = 0) -> Dict[str, Tuple[float, float]]:
    """Per tap, ``(d_noise, d_batch)`` (see the module notes) for the LR batch ``x`` (B >= 2, [0, 1] range)."""
    if x.shape[0] < 2:
        raise ValueError('negative_distances needs a batch of at least 2 patches')
    gen = torch.Generator().manual_seed(seed)
    clean = tap_features(net, taps, x)
    noise = {name: 0. for name in taps}
    low, high = sigma_range
    for _ in range(copies):
        sigma = torch.rand(x.shape[0], 1, 1, 1, generator=gen) * (high - low) + low
        noisy = tap_features(net, taps, x + torch.randn(x.shape, generator=gen) * sigma / 255.)
        for name in taps:
            noise[name] += (clean[name] - noisy[name]).pow(2).flatten(1).mean(1).mean().item() / copies
    result = {}
    for name in taps:
        flat = clean[name].flatten(1)
        pairwise = (flat[:, None] - flat[None]).pow(2).mean(2)  # zero diagonal
        batch = flat.shape[0]
        result[name] = (noise[name], pairwise.sum().item() / (batch * (batch - 1)))
    return result
