"""The adaptive gate selects exactly the patches where the teacher's PSNR beats the student's by the margin."""
import pytest
import torch

from facd_basicsr.distill.gate import AdaptiveGate, patch_psnr


def constant_error_batch(errors):
    """(N, 3, 4, 4) images whose every pixel is off the zero ground truth by errors[i]: PSNR = -20 log10(e)."""
    return torch.stack([torch.full((3, 4, 4), e) for e in errors])


def test_patch_psnr_by_hand():
    gt = torch.zeros(2, 3, 4, 4)
    psnr = patch_psnr(constant_error_batch([0.1, 0.01]), gt)
    assert torch.allclose(psnr, torch.tensor([20., 40.]), atol=1e-4)


@pytest.mark.parametrize('margin, expected', [(0., [0., 1., 1., 0.]), (1.5, [0., 1., 0., 0.])])
def test_teacher_better_with_margin(margin, expected):
    gt = torch.zeros(4, 3, 4, 4)
    teacher = constant_error_batch([0.1, 0.1, 0.1, 0.1])  # 20 dB everywhere
    student = constant_error_batch([0.05, 0.2, 0.11, 0.1])  # 26.0, 14.0, 19.17, 20.0 dB
    gate = AdaptiveGate('teacher_better', margin=margin)(student, teacher, gt)
    assert gate.tolist() == expected


def test_top_fraction_keeps_largest_teacher_advantage():
    gt = torch.zeros(4, 3, 4, 4)
    teacher = constant_error_batch([0.1] * 4)
    student = constant_error_batch([0.05, 0.4, 0.2, 0.12])  # advantages -6.0, +12.0, +6.0, +1.6 dB
    gate = AdaptiveGate('top_fraction', fraction=0.5)(student, teacher, gt)
    assert gate.tolist() == [0., 1., 1., 0.]


def test_always_and_bad_options():
    gt = torch.zeros(3, 3, 4, 4)
    assert AdaptiveGate('always')(gt + 0.5, gt + 0.9, gt).tolist() == [1., 1., 1.]
    with pytest.raises(ValueError, match='distill.gate.mode'):
        AdaptiveGate('sometimes')
    with pytest.raises(ValueError, match='fraction'):
        AdaptiveGate('top_fraction', fraction=0.)
