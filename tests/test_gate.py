"""The adaptive gate: each mode selects (or weights) exactly the patches its criterion names; its statistics."""
import math

import pytest
import torch

from facd_basicsr.distill.gate import AdaptiveGate, gate_options, patch_luma_std, patch_psnr
from facd_basicsr.distill.gate_log import advantage_stats


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


def test_advantage_ramp_is_a_soft_weight_between_margin_and_margin_plus_width():
    gt = torch.zeros(4, 3, 4, 4)
    teacher = constant_error_batch([0.1] * 4)  # 20 dB
    student = constant_error_batch([0.05, 0.4, 0.2, 0.12])  # advantages -6.02, +12.04, +6.02, +1.58 dB
    gate = AdaptiveGate('advantage_ramp', margin=1., width=4.)(student, teacher, gt)
    expected = [0., 1., 1., (20 * math.log10(1.2) - 1.) / 4.]
    assert gate.tolist() == pytest.approx(expected, abs=1e-4)


def test_textured_keeps_patches_whose_luma_std_reaches_min_std():
    flat = torch.full((3, 4, 4), 0.5)
    stripes = flat.clone()
    stripes[:, :, ::2] = 0.5 + 8 / 255.  # luma alternates by 8 * (65.481 + 128.553 + 24.966) / 255 = 6.87 levels
    gt = torch.stack([flat, stripes])
    std = patch_luma_std(gt)
    assert std[0].item() == pytest.approx(0., abs=1e-4)
    assert std[1].item() == pytest.approx(8 * 219. / 255 * 0.5 * math.sqrt(16 / 15), abs=1e-3)  # +-a/2, n-1
    student = teacher = gt  # the networks play no part in this mode
    assert AdaptiveGate('textured', min_std=3.)(student, teacher, gt).tolist() == [0., 1.]
    assert AdaptiveGate('textured', min_std=4.)(student, teacher, gt).tolist() == [0., 0.]


def test_gate_options_fill_defaults_and_refuse_keys_the_mode_ignores():
    assert gate_options(None) == {'mode': 'teacher_better', 'margin': 0.}
    ramp = {'mode': 'advantage_ramp', 'margin': 0., 'width': 2.}
    assert gate_options({'mode': 'advantage_ramp', 'width': 2.}) == ramp
    with pytest.raises(ValueError, match=r"mode always does not use \['margin'\]"):
        gate_options({'mode': 'always', 'margin': 1.})
    with pytest.raises(ValueError, match=r"mode textured does not use \['fraction'\]"):
        gate_options({'mode': 'textured', 'fraction': 0.5})
    with pytest.raises(ValueError, match='width'):
        AdaptiveGate('advantage_ramp', width=0.)


def test_tracked_advantage_under_always_and_its_statistics():
    gt = torch.zeros(4, 3, 4, 4)
    teacher = constant_error_batch([0.1] * 4)
    student = constant_error_batch([0.05, 0.4, 0.2, 0.12])
    gate = AdaptiveGate('always', track_advantage=True)
    assert gate(student, teacher, gt).tolist() == [1.] * 4
    stats = advantage_stats(gate.advantage)
    assert stats['adv_min'] == pytest.approx(-20 * math.log10(2), abs=1e-4)
    assert stats['adv_max'] == pytest.approx(20 * math.log10(4), abs=1e-4)
    assert stats['adv_p50'] == pytest.approx((20 * math.log10(2) + 20 * math.log10(1.2)) / 2, abs=1e-4)
    assert AdaptiveGate('always')(student, teacher, gt) is not None and AdaptiveGate('always').advantage is None
