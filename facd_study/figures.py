"""Pictures written by ``make demo`` and ``make mini-table``: a labelled crop comparison and a bar chart."""
import os
import os.path as osp
import textwrap
from typing import Sequence, Tuple

import cv2
import numpy as np

PANEL_GAP = 4  # px of white between two panels
LABEL_HEIGHT = 26  # px of the white label band above each panel


def pick_crop(gt: np.ndarray, size: int) -> Tuple[int, int]:
    """Top-left (y, x) of the ``size`` x ``size`` window with the most detail (sum of |Laplacian| of the grey GT).

    Windows are scanned with a stride of ``size // 2``; the first best one wins, so the choice is deterministic.
    """
    h, w = gt.shape[:2]
    if h < size or w < size:
        raise ValueError(f'crop size {size} is larger than the image ({h}x{w})')
    detail = np.abs(cv2.Laplacian(cv2.cvtColor(gt, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F))
    stride = max(1, size // 2)
    best, best_pos = -1., (0, 0)
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            energy = float(detail[top:top + size, left:left + size].sum())
            if energy > best:
                best, best_pos = energy, (top, left)
    return best_pos


def labelled_panel(img: np.ndarray, label: str, zoom: int) -> np.ndarray:
    """``img`` enlarged ``zoom`` times (nearest neighbour, pixels stay visible) under a white band with ``label``."""
    big = cv2.resize(img, (img.shape[1] * zoom, img.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
    band = np.full((LABEL_HEIGHT, big.shape[1], 3), 255, np.uint8)
    scale = 0.45
    while scale > 0.2 and cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > big.shape[1] - 4:
        scale -= 0.05  # shrink long labels until they fit
    cv2.putText(band, label, (2, LABEL_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, big], axis=0)


def comparison_image(panels: Sequence[Tuple[str, np.ndarray]], box: Tuple[int, int, int], zoom: int = 3) -> np.ndarray:
    """The same crop of several images side by side, each labelled.

    Args:
        panels (Sequence[tuple[str, ndarray]]): (label, uint8 BGR image of one common size (H, W, 3)) in order.
        box (tuple[int, int, int]): (top, left, size) of the square crop, in px of the images.
        zoom (int): enlargement of the crop. Default: 3.

    Returns:
        ndarray: uint8 BGR of shape (LABEL_HEIGHT + size * zoom, n * size * zoom + (n - 1) * PANEL_GAP, 3).
    """
    top, left, size = box
    shapes = {img.shape for _, img in panels}
    if len(shapes) != 1:
        raise ValueError(f'the images to compare differ in size: {sorted(shapes)}')
    parts = []
    for i, (label, img) in enumerate(panels):
        if i:
            parts.append(np.full((LABEL_HEIGHT + size * zoom, PANEL_GAP, 3), 255, np.uint8))
        parts.append(labelled_panel(img[top:top + size, left:left + size], label, zoom))
    return np.concatenate(parts, axis=1)


def save_png(img: np.ndarray, path: str) -> str:
    """Write a uint8 BGR image as PNG (folders created); returns ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, img):
        raise OSError(f'could not write {path}')
    return path


def bar_chart(labels: Sequence[str], means: Sequence[float], stds: Sequence[float], path: str, title: str,
              reference: float = None) -> str:
    """Horizontal bars of mean PSNR with ± std error bars (matplotlib, Agg); a dashed line at ``reference``."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2), dpi=100)
    positions = np.arange(len(labels))[::-1]
    ax.barh(positions, means, xerr=stds, color='#4c72b0', ecolor='black', capsize=3)
    low, high = min(m - s for m, s in zip(means, stds)), max(m + s for m, s in zip(means, stds))
    pad = max(0.02, 0.15 * (high - low))
    ax.set_xlim(low - pad, high + pad)  # PSNR differences are hundredths of a dB: do not start at 0
    if reference is not None:
        ax.axvline(reference, color='grey', linestyle='--', linewidth=1)
    ax.set_yticks(positions)
    ax.set_yticklabels(labels)
    ax.set_xlabel('PSNR-Y (dB), mean ± std over seeds')
    ax.set_title('\n'.join(textwrap.wrap(title, 60)), fontsize=10)  # long titles are cut off by the figure edge
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
