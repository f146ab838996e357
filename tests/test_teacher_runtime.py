"""TeacherRunner: float32 path identical to a plain forward, bf16 close but different, channels_last equal, hooks
still fire, bad options named. CPU only (bf16 autocast runs on CPU, slowly); ``compile=True`` is not run here (its
first call compiles for minutes on a CPU)."""
import copy

import numpy as np
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR

from facd_basicsr.distill.feature_taps import FeatureTaps
from facd_basicsr.distill.gate import patch_psnr
from facd_basicsr.distill.teacher_runtime import TeacherRunner, check_teacher_options, features_to_float32
from facd_basicsr.host.checkpoint import fingerprint
from facd_basicsr.tools.bicubic import bicubic_lr
from facd_study.sample_data import load_photo

TAPS = ['body.0', 'conv_after_body']


def make_teacher(seed: int = 0) -> EDSR:
    torch.manual_seed(seed)
    return EDSR(3, 3, num_feat=16, num_block=2, upscale=2).eval().requires_grad_(False)


@pytest.fixture(scope='module')
def lq():
    """Two 24x24 LR crops of real photos, (2, 3, 24, 24) float in [0, 1]."""
    crops = [bicubic_lr(load_photo(name)[100:148, 100:148], 2) for name in ('astronaut', 'coffee')]
    rgb = np.stack(crops)[..., ::-1].astype(np.float32) / 255.
    return torch.from_numpy(rgb.copy()).permute(0, 3, 1, 2).contiguous()


def plain_forward(net, lq):
    with torch.no_grad():
        return net(lq)


def test_float32_path_is_bit_identical_to_a_plain_forward(lq):
    net = make_teacher()
    expected = plain_forward(net, lq)
    returned = []
    net.register_forward_hook(lambda module, inputs, output: returned.append(output))
    out = TeacherRunner(net)(lq)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)
    assert out.data_ptr() == returned[0].data_ptr()  # no extra copy of the output on the float32 path


def test_output_has_no_graph_but_serves_as_a_loss_target(lq):
    net = make_teacher().requires_grad_(True)  # even a teacher whose weights require grad gives a plain tensor
    target = TeacherRunner(net)(lq)
    assert not target.requires_grad and target.grad_fn is None
    pred = plain_forward(net, lq).clone().requires_grad_(True)
    torch.nn.functional.l1_loss(pred, target + 0.1).backward()  # an inference tensor could not be saved here
    assert torch.allclose(pred.grad, torch.full_like(pred, -1. / pred.numel()))
    assert all(p.grad is None for p in net.parameters())


def test_bf16_is_float32_out_close_but_not_equal(lq):
    net = make_teacher()
    expected = plain_forward(net, lq)
    out = TeacherRunner(net, amp='bf16')(lq)
    assert out.dtype == torch.float32 and out.is_contiguous()
    diff = (out - expected).abs()
    assert diff.max() > 0  # the drift is real and measurable
    # bf16 keeps 8 mantissa bits: relative error per op ~ 2^-9; through a few convs it stays well under 2 %
    assert diff.max() < 0.02 * expected.abs().max()
    drift = patch_psnr(out, expected.clamp(0, 1))
    assert torch.all(drift > 30) and torch.all(torch.isfinite(drift))


def test_fp16_autocast_runs_and_returns_float32(lq):
    net = make_teacher()
    out = TeacherRunner(net, amp='fp16')(lq)
    assert out.dtype == torch.float32
    assert torch.allclose(out, plain_forward(make_teacher(), lq), atol=0.02)


def test_channels_last_same_output_and_weights_converted_in_place(lq):
    net = make_teacher()
    expected = plain_forward(net, lq)
    weights_id = fingerprint(net)
    runner = TeacherRunner(net, channels_last=True)
    assert net.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.conv_first.weight.is_contiguous()
    assert fingerprint(net) == weights_id  # values unchanged: the teacher identity check still holds
    out = runner(lq)
    assert out.is_contiguous() and out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)


def test_hooks_fire_and_bf16_taps_convert_to_float32(lq):
    net = make_teacher()
    taps = FeatureTaps(net, TAPS, 'distill.teacher_taps')
    with taps:
        plain_forward(net, lq)
    expected = taps.pop()
    raw = []
    net.body[0].register_forward_hook(lambda module, inputs, output: raw.append(output))
    with taps:
        TeacherRunner(net, amp='bf16', channels_last=True)(lq)
    assert raw[0].dtype == torch.bfloat16  # hooks fire and see what the layer returned under autocast
    converted = features_to_float32([raw[0]])[0]
    assert converted.dtype == torch.float32 and converted.is_contiguous()
    for f, ref in zip(taps.pop(), expected):  # FeatureTaps store float32 contiguous copies themselves
        assert f.dtype == torch.float32 and f.is_contiguous() and f.shape == ref.shape
        assert torch.allclose(f, ref, atol=0.05 * ref.abs().max().item())
    assert torch.equal(converted, features_to_float32([raw[0].float()])[0])
    same = features_to_float32(expected)
    assert all(a is b for a, b in zip(same, expected))  # float32 contiguous maps are passed through, not copied


def test_fp32_modules_keep_the_last_conv_in_float32_and_cut_the_drift(lq):
    net = make_teacher()
    with torch.no_grad():  # outputs near 0.8 as a trained net's: conv_last then returns ~90 on the 0-255 scale
        net.conv_last.bias.fill_(90.)
    expected = plain_forward(net, lq)
    plain_bf16 = TeacherRunner(copy.deepcopy(net), amp='bf16')(lq)
    kept = copy.deepcopy(net)
    dtypes = []
    for module in (kept.conv_last, kept.conv_after_body):
        module.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    out = TeacherRunner(kept, amp='bf16', fp32_modules=['conv_last'])(lq)
    assert dtypes == [torch.bfloat16, torch.float32]  # conv_after_body runs first
    # the image leaves conv_last in float32 instead of bf16 (steps of 0.5 at 64-128 on the 0-255 scale)
    err_kept, err_plain = (out - expected).pow(2).mean(), (plain_bf16 - expected).pow(2).mean()
    assert 0 < err_kept < err_plain / 10
    clone = copy.deepcopy(kept)  # the wrapped forward is bound to each module, so copies run their own weights
    assert clone.conv_last.forward.__self__ is clone.conv_last
    with torch.no_grad():
        clone.conv_last.bias.add_(255.)  # +1 on the output: the copy's own (changed) weights are the ones used
    assert torch.allclose(TeacherRunner(clone, amp='bf16')(lq), out + 1, atol=1e-4)


def test_fp32_modules_leave_the_float32_path_untouched(lq):
    net = make_teacher()
    expected = plain_forward(net, lq)
    out = TeacherRunner(net, fp32_modules=['conv_last'])(lq)
    assert 'forward' not in vars(net.conv_last)  # not wrapped without amp
    assert torch.equal(out, expected)


@pytest.mark.parametrize('fp32_modules', [['conv_lst'], 'conv_last', ['body.7']])
def test_bad_fp32_modules_raise_naming_the_option(fp32_modules):
    with pytest.raises(ValueError, match='distill.teacher_fp32_modules'):
        TeacherRunner(make_teacher(), amp='bf16', fp32_modules=fp32_modules)


@pytest.mark.parametrize('kwargs, option', [
    ({
        'amp': 'fp32'
    }, 'distill.teacher_amp'),
    ({
        'amp': True
    }, 'distill.teacher_amp'),
    ({
        'amp': 'bfloat16'
    }, 'distill.teacher_amp'),
    ({
        'channels_last': 'yes'
    }, 'distill.teacher_channels_last'),
    ({
        'compile': 1
    }, 'distill.teacher_compile'),
])
def test_bad_options_raise_naming_the_option(kwargs, option):
    with pytest.raises(ValueError, match=option):
        TeacherRunner(make_teacher(), **kwargs)
    full = dict({'amp': None, 'channels_last': False, 'compile': False}, **kwargs)
    with pytest.raises(ValueError, match=option):
        check_teacher_options(**full)
