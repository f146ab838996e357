"""Degraded inputs for FACD's ``negatives: degraded`` pool: what bicubic interpolation keeps of an LR patch."""
import torch
import torch.nn.functional as F


def bicubic_round_trip(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """Downscale a batch by ``scale`` with antialiased bicubic, upscale back to its size, clamp to [0, 1].

    Shapes: (B, C, H, W) -> (B, C, H, W); the low size is ``max(1, round(H / scale))`` by ``max(1, round(W / scale))``.
    The result keeps the patch's coarse content and loses the detail an x``scale`` SR network must restore, so
    teacher features of it are a negative that looks like the bicubic answer.
    """
    if scale < 2:
        raise ValueError(f'the bicubic round trip needs a scale >= 2, got {scale}')
    height, width = lq.shape[-2:]
    low = (max(1, round(height / scale)), max(1, round(width / scale)))
    small = F.interpolate(lq, size=low, mode='bicubic', align_corners=False, antialias=True)
    return F.interpolate(small, size=(height, width), mode='bicubic', align_corners=False).clamp_(0, 1)
