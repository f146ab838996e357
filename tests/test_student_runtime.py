"""Student-side training switches (train.amp, grad_scaler, channels_last, compile, tf32, grad_clip_norm) on CPU.

What CPU cannot show: speed (autocast is slower on CPUs without bf16/fp16 units), TF32 (a CUDA feature: only the
flags are checked) and inductor-compiled code (its first compile of even the tiny student takes ~50 s on our 2-core
machine, so the compiled path runs with ``backend: aot_eager``: the same dynamo trace of the student, its persistent
tap hooks and AOT autograd, with eager kernels).
"""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.misc import check_resume

from facd_basicsr.host.student_runtime import StudentRuntime, clip_grad_norm
from facd_basicsr.tools.bicubic import bicubic_lr
from facd_study.sample_data import load_photo

from conftest import REPO_ROOT, run_python
from model_helpers import STUDENT, make_opt, photo_batches

FD = {'type': 'FeatureDistillLoss', 'loss_weight': 0.1}
CONTRASTIVE = {'type': 'FACDContrastiveLoss', 'loss_weight': 0.1}
CPU = torch.device('cpu')


def build(opt):
    torch.manual_seed(0)
    os.makedirs(opt['path']['models'], exist_ok=True)
    os.makedirs(opt['path']['training_states'], exist_ok=True)
    return build_model(opt)


def opt_with(tmp_path, feature=CONTRASTIVE, **train):
    opt = make_opt(tmp_path, feature)
    opt['train'].update(train)
    return opt


def step(model, batch, it=1):
    model.feed_data(batch)
    model.optimize_parameters(it)
    return model.get_current_log()


def net_g_state(model):
    return {k: v.clone() for k, v in model.net_g.state_dict().items()}


# ---------------------------------------------------------------------------------------------- start-up checks
@pytest.mark.parametrize('train, option', [
    ({'amp': 'fp32'}, 'train.amp'),
    ({'amp': True}, 'train.amp'),
    ({'grad_scaler': {'init_scale': 2.}}, 'train.grad_scaler'),  # without fp16
    ({'amp': 'fp16', 'grad_scaler': {'init_scal': 2.}}, 'train.grad_scaler'),
    ({'channels_last': 'yes'}, 'train.channels_last'),
    ({'compile': 'max-autotune'}, 'train.compile'),
    ({'compile': {'modes': 'default'}}, 'train.compile'),
    ({'tf32': 1}, 'train.tf32'),
    ({'grad_clip_norm': 0}, 'train.grad_clip_norm'),
    ({'grad_clip_norm': True}, 'train.grad_clip_norm'),
    ({'grad_clip_norm': '1.0'}, 'train.grad_clip_norm'),
    ({'compile_feature_loss': 'yes'}, 'train.compile_feature_loss'),
    ({'compile_feature_loss': {'backend': 'eager', 'fullgrap': True}}, 'train.compile_feature_loss'),
])
def test_bad_options_are_refused_at_start_up_naming_the_key(tmp_path, train, option):
    with pytest.raises(ValueError, match=option.replace('.', r'\.')):
        StudentRuntime(train, CPU)
    with pytest.raises(ValueError, match=option.replace('.', r'\.')):  # and by FACDModel, before any step
        build(opt_with(tmp_path, **train))


def test_everything_off_is_the_plain_float32_step_bit_for_bit(tmp_path):
    batches = photo_batches(2)
    plain = build(opt_with(tmp_path / 'a'))
    off = build(opt_with(tmp_path / 'b', amp=None, channels_last=False, compile=False, tf32=None,
                         grad_clip_norm=None))
    assert repr(off.student_runtime) == ('StudentRuntime(amp=None, channels_last=False, compile=None, tf32=None, '
                                         'grad_clip_norm=None)')
    for i, batch in enumerate(batches):
        assert step(plain, batch, i + 1) == step(off, batch, i + 1)
    assert all(torch.equal(v, net_g_state(off)[k]) for k, v in net_g_state(plain).items())


# ---------------------------------------------------------------------------------------------- amp
@pytest.mark.parametrize('amp, dtype', [('bf16', torch.bfloat16), ('fp16', torch.float16)])
def test_amp_runs_the_student_forward_in_half_and_everything_after_it_in_float32(tmp_path, amp, dtype):
    model = build(opt_with(tmp_path, amp=amp))
    seen = []
    handle = model.net_g.conv_first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    log = step(model, photo_batches(1)[0])
    handle.remove()
    assert seen == [dtype]  # the student convolution ran under autocast
    assert model.output.dtype == torch.float32 and model.output.requires_grad
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())  # autocast, not a half model
    assert all(np.isfinite(v) for k, v in log.items() if k.startswith('l_'))
    assert ('amp_scale' in log) == (amp == 'fp16')
    feats = model.student_taps  # taps are float32 copies
    with model._recording():
        model.student_runtime.forward(model.net_g, photo_batches(1)[0]['lq'])
    assert all(f.dtype == torch.float32 for f in feats.pop())


def test_amp_changes_the_arithmetic_but_not_much(tmp_path):
    batch = photo_batches(1)[0]
    fp32 = build(opt_with(tmp_path / 'a'))
    bf16 = build(opt_with(tmp_path / 'b', amp='bf16'))
    step(fp32, batch)
    step(bf16, batch)
    assert not torch.equal(fp32.output, bf16.output)
    assert (fp32.output - bf16.output).abs().max() < 0.05


def test_fp16_scaler_state_is_saved_restored_and_resume_is_bit_identical(tmp_path):
    """growth_interval 1 doubles the scale after every finite step: a resume that forgot the scaler would restart
    at init_scale, and with it the fp16 gradients' rounding and the skipped steps."""
    train = {'amp': 'fp16', 'grad_scaler': {'init_scale': 2.**10, 'growth_interval': 1}, 'grad_clip_norm': 0.5}
    batches = photo_batches(4)
    straight = build(opt_with(tmp_path / 'a', **train))
    scales = [step(straight, batch, i + 1)['amp_scale'] for i, batch in enumerate(batches)]
    assert scales[0] == 2.**11  # one finite step: 2**10 -> 2**11

    opt = opt_with(tmp_path / 'b', **train)
    first = build(opt)
    for i, batch in enumerate(batches[:2]):
        step(first, batch, i + 1)
    first.save(0, 2)
    state_file = osp.join(opt['path']['training_states'], '2.state')
    record = torch.load(state_file, weights_only=True)['run_state']
    assert record['student_runtime']['grad_scaler']['scale'] == scales[1]

    resumed_opt = opt_with(tmp_path / 'b', **train)
    resumed_opt['path']['resume_state'] = state_file
    state = torch.load(state_file, weights_only=False)
    check_resume(resumed_opt, state['iter'])
    resumed = build(resumed_opt)
    resumed.resume_training(state)
    assert resumed.student_runtime.scale == scales[1]
    got = [step(resumed, batch, i + 3)['amp_scale'] for i, batch in enumerate(batches[2:])]
    assert got == scales[2:]
    expected = net_g_state(straight)
    assert all(torch.equal(v, expected[k]) for k, v in net_g_state(resumed).items())


# ---------------------------------------------------------------------------------------------- gradient clipping
class Linear2(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1., 2.]))

    def forward(self):
        return 3 * self.w[0] + 4 * self.w[1]  # gradient (3, 4), norm 5


@pytest.mark.parametrize('amp', [None, 'fp16'])
@pytest.mark.parametrize('clip, expected', [(None, [-2., -2.]), (1.0, [0.4, 1.2]), (10.0, [-2., -2.])])
def test_grad_clipping_by_norm_by_hand(amp, clip, expected):
    """SGD with lr 1 after clipping the gradient (3, 4) of norm 5: to norm 1 it is (0.6, 0.8); a bound above 5
    leaves it alone. Under fp16 the loss is scaled by 2**16 and must be unscaled before the clipping."""
    net = Linear2()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    runtime = StudentRuntime({'amp': amp, 'grad_clip_norm': clip}, CPU)
    norm = runtime.backward_and_step(net(), optimizer)
    assert torch.allclose(net.w.detach(), torch.tensor(expected), atol=1e-6)
    assert (norm is None) == (clip is None)
    if norm is not None:
        assert norm.item() == pytest.approx(5.0)


def test_clip_grad_norm_skips_parameters_without_gradients():
    a, b = torch.nn.Parameter(torch.tensor([6., 8.])), torch.nn.Parameter(torch.ones(1))
    (a * a / 2).sum().backward()  # grad (6, 8), norm 10; b has none
    assert clip_grad_norm([a, b], 5.0).item() == pytest.approx(10.0)
    assert torch.allclose(a.grad, torch.tensor([3., 4.])) and b.grad is None


def test_facd_model_clips_and_logs_the_norm(tmp_path):
    batch = photo_batches(1)[0]
    free = build(opt_with(tmp_path / 'a'))
    clipped = build(opt_with(tmp_path / 'b', grad_clip_norm=1e-3))
    step(free, batch)
    log = step(clipped, batch)
    grads = [p.grad for p in clipped.optimizer_g.param_groups[0]['params']]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert log['grad_norm'] > 1e-3 and total.item() == pytest.approx(1e-3, rel=1e-4)
    assert 'grad_norm' not in step(free, batch)


# ---------------------------------------------------------------------------------------------- layout, compile, tf32
def test_channels_last_converts_student_and_adapters_and_trains_the_same(tmp_path):
    batches = photo_batches(2)
    plain = build(opt_with(tmp_path / 'a'))
    last = build(opt_with(tmp_path / 'b', channels_last=True))
    for net in (last.net_g, last.net_adapter):
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    for i, batch in enumerate(batches):
        step(plain, batch, i + 1)
        step(last, batch, i + 1)
    assert last.output.is_contiguous()
    for k, v in net_g_state(plain).items():
        assert torch.allclose(v, net_g_state(last)[k], atol=1e-5), k
    last.save(0, 2)  # a channels-last checkpoint is still a plain network for stock BasicSR
    plain_net = build_network(dict(STUDENT))
    plain_net.load_state_dict(torch.load(osp.join(last.opt['path']['models'], 'net_g_2.pth'))['params'])


def test_compiled_student_keeps_its_taps_and_trains_as_eager(tmp_path):
    batches = photo_batches(2)
    eager = build(opt_with(tmp_path / 'a'))
    compiled = build(opt_with(tmp_path / 'b', compile={'backend': 'aot_eager'}))
    assert compiled.student_runtime.compiled and compiled.student_taps.persistent  # hooks there before compiling
    assert not eager.student_taps.persistent
    for i, batch in enumerate(batches):
        log_e, log_c = step(eager, batch, i + 1), step(compiled, batch, i + 1)
        assert log_c['l_feat'] == pytest.approx(log_e['l_feat'], rel=1e-5)  # the taps recorded under dynamo
    for k, v in net_g_state(eager).items():
        assert torch.allclose(v, net_g_state(compiled)[k], atol=1e-6), k
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in compiled.net_adapter.parameters())


def test_compiled_feature_loss_gives_the_eager_loss(tmp_path):
    batches = photo_batches(2)
    eager = build(opt_with(tmp_path / 'a'))
    compiled = build(opt_with(tmp_path / 'b', compile_feature_loss={'backend': 'aot_eager'}))
    assert type(compiled.cri_feat) is type(eager.cri_feat) and 'forward' in vars(compiled.cri_feat)
    assert 'forward' not in vars(eager.cri_feat)
    for i, batch in enumerate(batches):
        log_e, log_c = step(eager, batch, i + 1), step(compiled, batch, i + 1)
        for key in ('l_feat', 'l_feat_tap0', 'd_pos', 'd_neg'):
            assert log_c[key] == pytest.approx(log_e[key], rel=1e-5), key


def test_tf32_sets_the_cuda_flags_and_none_leaves_them():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        StudentRuntime({'tf32': True}, CPU)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        StudentRuntime({'tf32': None}, CPU)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        StudentRuntime({'tf32': False}, CPU)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# ---------------------------------------------------------------------------------------------- the entry point
TRAIN = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
TINY_FACD = osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml')
TINY_TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4, 'upscale': 2,
                'res_scale': 1, 'img_range': 255., 'rgb_mean': [0.4488, 0.4371, 0.4040]}


def one_photo_option_file(root):
    """options/tiny/train_FACD_tiny_x2.yml on a one-photo folder set (GT 48 px = the patch, no flips): every batch
    is the same, whatever order the sampler draws, so a resumed run sees the batches of a straight run (data order
    at resume is not what this test is about). FD loss: the batch's samples are identical, so no in-batch negatives.
    """
    gt = np.ascontiguousarray(load_photo('astronaut')[100:148, 200:248])
    for sub, img in (('gt', gt), ('lq', bicubic_lr(gt, 2))):
        os.makedirs(root / 'one' / sub, exist_ok=True)
        cv2.imwrite(str(root / 'one' / sub / 'crop.png'), img)
    torch.manual_seed(0)
    torch.save({'params': build_network(TINY_TEACHER).state_dict()}, root / 'teacher.pth')
    with open(TINY_FACD) as f:
        opt = yaml.safe_load(f)
    for split in ('train', 'val'):
        opt['datasets'][split].update(dataroot_gt=str(root / 'one' / 'gt'), dataroot_lq=str(root / 'one' / 'lq'),
                                      io_backend={'type': 'disk'})
    opt['datasets']['train'].update(gt_size=48, use_hflip=False, use_rot=False, batch_size_per_gpu=2,
                                    dataset_enlarge_ratio=20)
    opt['path']['pretrain_network_t'] = str(root / 'teacher.pth')
    opt['distill']['teacher_check'] = False
    opt['train']['feature_opt'] = dict(FD)
    opt['train'].update(ema_decay=0.9, amp='bf16', grad_clip_norm=0.5, channels_last=True)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt['val']['val_freq'] = 1000
    path = root / 'one_photo.yml'
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return str(path)


ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # as torchrun sets it: thread counts change convolutions' summation order


def train(cwd, option_file, *force, flags=()):
    result = run_python([TRAIN, '-opt', option_file, *flags, '--force_yml', *force], cwd, env=ONE_THREAD)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_bf16_training_through_the_entry_point_resumes_bit_identically_and_runs_under_ddp(tmp_path):
    """bf16 + EMA + clipping + channels_last: 4 iterations straight == 2, --auto_resume, 2 more (every tensor of
    net_g and its EMA equal); losses finite; the checkpoint is a plain EDSR for stock BasicSR. And torchrun with 2
    CPU ranks (gloo, DDP) gives the same weights: every rank's batch is the same photo, so the averaged gradients
    are each rank's own, exactly (g + g and / 2 are exact in float)."""
    option_file = one_photo_option_file(tmp_path)
    train(tmp_path, option_file, 'name=straight', 'train:total_iter=4')
    train(tmp_path, option_file, 'name=resumed', 'train:total_iter=2')
    train(tmp_path, option_file, 'name=resumed', 'train:total_iter=4', flags=['--auto_resume'])
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2']
    ddp = subprocess.run([*torchrun, TRAIN, '-opt', option_file, '--launcher', 'pytorch', '--force_yml', 'name=ddp',
                          'train:total_iter=4'], cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES='', **ONE_THREAD))
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    models = {name: tmp_path / 'experiments' / name / 'models' for name in ('straight', 'resumed', 'ddp')}
    logs = sorted(glob.glob(str(tmp_path / 'experiments' / 'resumed' / 'train_*.log')), key=osp.getmtime)
    assert 'Resuming training from epoch' in open(logs[-1]).read()
    expected = torch.load(models['straight'] / 'net_g_4.pth', weights_only=True)
    for run in ('resumed', 'ddp'):
        got = torch.load(models[run] / 'net_g_4.pth', weights_only=True)
        assert set(expected) == set(got) == {'params', 'params_ema'}
        for key in expected:
            assert expected[key].keys() == got[key].keys()
            assert all(torch.equal(expected[key][k], got[key][k]) for k in expected[key]), (run, key)
    log = open(glob.glob(str(tmp_path / 'experiments' / 'straight' / 'train_*.log'))[0]).read()
    l_pix = [float(v) for v in re.findall(r'l_pix: (\S+)', log)]
    assert len(l_pix) == 4 and all(np.isfinite(v) for v in l_pix)
    assert 'grad_norm' in log
    student = build_network({k: v for k, v in yaml.safe_load(open(option_file))['network_g'].items()})
    student.load_state_dict(torch.load(models['straight'] / 'net_g_latest.pth', weights_only=True)['params'],
                            strict=True)


# ---------------------------------------------------------------------------------------------- tap copies (a lever)
def test_taps_copy_only_the_maps_their_network_writes_in_place():
    """EDSR adds the global skip in place onto conv_after_body's output; its body blocks' outputs are never written.
    After the first pass only conv_after_body is copied; the body maps handed over are the blocks' own outputs."""
    from facd_basicsr.distill.feature_taps import FeatureTaps
    net = build_network(dict(STUDENT, num_block=2))
    taps = FeatureTaps(net, ['body.0', 'body.1', 'conv_after_body'], 'distill.student_taps')
    lq = photo_batches(1)[0]['lq'].contiguous()  # (a channels-last input gives channels-last maps: converted)
    assert taps.needs_copy == [None, None, None]
    inputs = []
    handle = net.body[1].register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    for _ in range(2):
        with taps:
            net(lq)
        feats = taps.pop()
    handle.remove()
    assert taps.needs_copy == [False, False, True]
    assert feats[0] is inputs[-1]  # body.0's output itself, not a copy
    with torch.no_grad():
        before_skip = net.conv_after_body(net.body(net.conv_first((lq - net.mean) * net.img_range)))
    assert torch.allclose(feats[2], before_skip)  # the copy taken before `res += x`


class LateInPlace(torch.nn.Module):
    """Writes into its first layer's output in place from the second call on."""

    def __init__(self):
        super().__init__()
        self.conv, self.calls = torch.nn.Conv2d(3, 3, 1), 0

    def forward(self, x):
        y = self.conv(x)
        self.calls += 1
        if self.calls > 1:
            y += 1
        return y


def test_a_map_written_in_place_after_the_first_pass_is_refused_not_handed_over_stale():
    from facd_basicsr.distill.feature_taps import FeatureTaps
    net = LateInPlace()
    taps = FeatureTaps(net, ['conv'], 'distill.teacher_taps')
    with torch.no_grad(), taps:
        net(torch.rand(1, 3, 4, 4))
    taps.pop()
    assert taps.needs_copy == [False]
    with torch.no_grad(), taps:
        net(torch.rand(1, 3, 4, 4))
    with pytest.raises(RuntimeError, match='conv was modified in place'):
        taps.pop()


def test_persistent_and_inference_mode_taps_always_copy():
    from facd_basicsr.distill.feature_taps import FeatureTaps
    net = build_network(dict(STUDENT))
    persistent = FeatureTaps(net, ['body.0'], 'distill.teacher_taps', persistent=True)
    assert persistent.needs_copy == [True]
    persistent.detach()
    taps = FeatureTaps(net, ['body.0'], 'distill.teacher_taps')
    with torch.inference_mode(), taps:
        net(photo_batches(1)[0]['lq'])
    assert taps.pop()[0].is_inference() and taps.needs_copy == [None]  # nothing learnt from inference tensors
