"""The colour probe of issue 32 (facd_study/colour_probe.py) on networks whose colour errors are known exactly."""
import numpy as np
import pytest
import torch
from torch import nn

import facd_basicsr  # noqa: F401
from facd_study.colour_probe import (dark_greens, flat_colour_errors, flat_colours, flat_summary, held_out_pairs,
                                     photo_summary)


class Nearest(nn.Module):
    """x2 nearest-neighbour up-scaling plus a constant ``shift`` (RGB, 0-1 scale)."""

    def __init__(self, shift=(0., 0., 0.)):
        super().__init__()
        self.register_buffer('shift', torch.tensor(shift).view(1, 3, 1, 1))

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2, mode='nearest') + self.shift


def test_flat_colours_of_an_exact_network_have_no_error():
    colours = flat_colours()
    assert colours.shape == (512, 3) and colours.min() == 0 and colours.max() == 255
    assert np.abs(flat_colour_errors(Nearest(), colours)).max() < 1e-3
    assert dark_greens(colours).sum() == 2 * 2 * 3  # R, B in {0, 8}; G in {24, 48, 96}


def test_a_green_offset_shows_on_dark_greens_and_clips_at_white():
    summary = flat_summary(Nearest((0., 10 / 255., 0.)))
    assert summary['dark_green_g'] == pytest.approx(10., abs=1e-3)
    # G 255 cannot go higher: 64 of the 512 colours clip, the others move by 10 in one channel of three
    assert summary['flat_mae'] == pytest.approx(10. * (512 - 64) / 512 / 3, abs=1e-3)


def test_held_out_photo_offsets_and_bicubic_difference():
    pairs = held_out_pairs(2, ('flower', ))
    lr, gt, bicubic = pairs['flower']
    assert gt.shape[0] == 2 * lr.shape[0] and 30 < bicubic < 40
    plain = photo_summary(Nearest(), pairs, 2)['flower']
    shifted = photo_summary(Nearest((0., 4 / 255., 0.)), pairs, 2)['flower']
    assert plain['vs_bicubic'] < 0  # nearest-neighbour is worse than bicubic
    assert shifted['g'] - plain['g'] == pytest.approx(4., abs=0.3)  # a few pixels clip at 255
    assert shifted['r'] == pytest.approx(plain['r']) and shifted['vs_bicubic'] < plain['vs_bicubic']
