"""The bicubic round trip that makes the inputs of the degraded-negative pool."""
import pytest
import torch

from facd_basicsr.distill.degrade import bicubic_round_trip


def test_bicubic_round_trip_keeps_size_and_flat_areas_and_removes_the_finest_detail():
    flat = torch.full((2, 3, 12, 10), 0.3)
    torch.testing.assert_close(bicubic_round_trip(flat, 2), flat)
    checker = (torch.arange(12)[:, None] + torch.arange(10)[None, :]).remainder(2).float().expand(1, 3, 12, 10)
    degraded = bicubic_round_trip(checker.contiguous(), 2)
    assert degraded.shape == checker.shape
    assert (degraded - 0.5).abs().max() < 0.05  # the Nyquist pattern averages out; the input swings by +-0.5
    with pytest.raises(ValueError, match='scale'):
        bicubic_round_trip(flat, 1)
