"""FACDModel: frozen teacher, gradients, gate, adapters in optimizer/checkpoint, resume equality, taps."""
import os
import os.path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.misc import check_resume

from facd_basicsr.host.checkpoint import fingerprint

from model_helpers import STUDENT, make_opt, photo_batches, save_teacher

CONTRASTIVE = {'type': 'FACDContrastiveLoss', 'loss_weight': 0.1}
FD = {'type': 'FeatureDistillLoss', 'loss_weight': 0.1}


def build(opt):
    torch.manual_seed(0)
    os.makedirs(opt['path']['models'], exist_ok=True)
    os.makedirs(opt['path']['training_states'], exist_ok=True)
    return build_model(opt)


def step(model, batch, it=1):
    model.feed_data(batch)
    model.optimize_parameters(it)
    return model.get_current_log()


def test_teacher_frozen_and_gradients_reach_student_and_adapters(tmp_path):
    model = build(make_opt(tmp_path, CONTRASTIVE))
    teacher_before = {k: v.clone() for k, v in model.net_t.state_dict().items()}
    for i, batch in enumerate(photo_batches(3)):
        step(model, batch, i + 1)
    assert all(not p.requires_grad and p.grad is None for p in model.net_t.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.net_t.state_dict().items())
    assert not model.net_t.training
    for net in (model.net_g, model.net_adapter):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads)
        assert all(g.abs().sum() > 0 for g in grads)


def test_adapters_are_optimised_and_inferred_from_a_dry_run(tmp_path):
    model = build(make_opt(tmp_path, CONTRASTIVE))
    in_out = [(a.body.in_channels, a.body.out_channels) for a in model.net_adapter.adapters]
    assert in_out == [(4, 8), (4, 8), (4, 8)]
    optimised = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert {id(p) for p in model.net_adapter.parameters()} <= optimised
    assert {id(p) for p in model.net_g.parameters()} <= optimised
    before = [p.clone() for p in model.net_adapter.parameters()]
    step(model, photo_batches(1)[0])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.net_adapter.parameters()))


def test_adapters_without_bias_are_linear_from_the_option_file(tmp_path):
    opt = make_opt(tmp_path, FD)
    opt['distill']['adapter'] = {'type': 'FACDAdapter', 'kind': 'conv1x1', 'bias': False}
    model = build(opt)
    assert all(a.body.bias is None for a in model.net_adapter.adapters)
    feats = [torch.randn(2, 4, 6, 6) for _ in model.net_adapter.adapters]
    mapped = model.net_adapter(feats)
    doubled = model.net_adapter([2 * f for f in feats])
    assert all(torch.allclose(2 * m, d, atol=1e-6) for m, d in zip(mapped, doubled))  # linear: no offset to absorb
    step(model, photo_batches(1)[0])
    with pytest.raises(ValueError, match="FACDAdapter bias must be true or false, got 'no'"):
        build_network({'type': 'FACDAdapter', 'in_channels': 4, 'out_channels': 8, 'bias': 'no'})


@pytest.mark.parametrize('kind', ['conv1x1', 'conv3x3'])
@pytest.mark.parametrize('channels', [(4, 8), (8, 4)])
def test_leading_identity_adapter_starts_as_the_channel_embedding(kind, channels):
    in_channels, out_channels = channels
    adapter = build_network({'type': 'FACDAdapter', 'in_channels': in_channels, 'out_channels': out_channels,
                             'kind': kind, 'leading_identity': True})
    feat = torch.randn(2, in_channels, 5, 5)
    expected = torch.zeros(2, out_channels, 5, 5)
    shared = min(channels)
    expected[:, :shared] = feat[:, :shared]
    assert torch.equal(adapter(feat), expected)
    default = build_network({'type': 'FACDAdapter', 'in_channels': in_channels, 'out_channels': out_channels})
    assert not torch.allclose(default(feat)[:, :shared], feat[:, :shared], atol=1e-2)  # random when channels differ


def test_leading_identity_adapters_come_from_the_option_file_and_are_trained(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE)
    opt['distill']['adapter'] = {'type': 'FACDAdapter', 'kind': 'conv1x1', 'leading_identity': True}
    model = build(opt)
    for adapter in model.net_adapter.adapters:  # 4 student channels into 8 teacher channels
        assert torch.equal(adapter.body.weight[:, :, 0, 0], torch.eye(8, 4))
        assert torch.equal(adapter.body.bias, torch.zeros(8))
    step(model, photo_batches(1)[0])
    assert any(not torch.equal(a.body.weight[:, :, 0, 0], torch.eye(8, 4)) for a in model.net_adapter.adapters)


@pytest.mark.parametrize('adapter, message', [
    ({'leading_identity': 'yes'}, "FACDAdapter leading_identity must be true or false, got 'yes'"),
    ({'leading_identity': True, 'kind': 'conv_relu_conv'}, 'leading_identity needs kind conv1x1 or conv3x3'),
])
def test_bad_leading_identity_is_refused(adapter, message):
    with pytest.raises(ValueError, match=message):
        build_network(dict({'type': 'FACDAdapter', 'in_channels': 4, 'out_channels': 8}, **adapter))


def test_total_loss_decreases(tmp_path):
    model = build(make_opt(tmp_path, FD))
    batch = photo_batches(1, batch_size=4)[0]
    logs = [step(model, batch, i + 1) for i in range(40)]
    total = [log['l_pix'] + log['l_kd'] + log['l_feat'] for log in logs]
    assert sum(total[-5:]) / 5 < 0.8 * sum(total[:5]) / 5


def test_log_has_every_term(tmp_path):
    log = step(build(make_opt(tmp_path, CONTRASTIVE, gate={'mode': 'teacher_better'})), photo_batches(1)[0])
    expected = {'l_pix', 'l_kd', 'l_feat', 'l_feat_tap0', 'l_feat_tap1', 'l_feat_tap2', 'gate_on', 'd_pos', 'd_neg'}
    assert expected <= set(log)
    assert 0. <= log['gate_on'] <= 1.


def test_gated_kd_is_the_mean_over_all_patches_of_gated_terms(tmp_path):
    model = build(make_opt(tmp_path, None, gate={'mode': 'teacher_better'}))
    model.output = torch.rand(3, 3, 8, 8)
    sr_t = torch.rand(3, 3, 8, 8)
    gate = torch.tensor([1., 0., 1.])
    per_patch = (model.output - sr_t).abs().flatten(1).mean(1)
    expected = 0.5 * (per_patch * gate).sum() / 3
    assert torch.allclose(model._kd_loss(sr_t, gate), expected)


def test_conv_after_body_tap_is_taken_before_the_inplace_global_skip(tmp_path):
    model = build(make_opt(tmp_path, FD))
    lq = photo_batches(1)[0]['lq']
    with model._recording(), torch.no_grad():
        model.net_t(lq)
    tapped = model.teacher_taps.pop()[2]
    net = model.net_t
    with torch.no_grad():
        x = net.conv_first((lq - net.mean) * net.img_range)
        expected = net.conv_after_body(net.body(x))
    assert torch.allclose(tapped, expected)
    assert not torch.allclose(tapped, expected + x)


def test_hooks_store_nothing_outside_training_steps(tmp_path):
    model = build(make_opt(tmp_path, FD))
    model.feed_data(photo_batches(1)[0])
    model.test()
    with pytest.raises(RuntimeError, match='did not run'):
        model.student_taps.pop()


def test_checkpoint_holds_a_plain_student_and_the_adapters(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE)
    model = build(opt)
    step(model, photo_batches(1)[0])
    model.save(0, 1)
    net_g_file = torch.load(osp.join(opt['path']['models'], 'net_g_1.pth'), weights_only=True)
    plain = build_network(STUDENT)
    plain.load_state_dict(net_g_file['params'], strict=True)
    adapters = torch.load(osp.join(opt['path']['models'], 'net_adapter_1.pth'), weights_only=True)
    assert set(adapters) == {'params'} and set(adapters['params']) == set(model.net_adapter.state_dict())
    state = torch.load(osp.join(opt['path']['training_states'], '1.state'), weights_only=True)
    assert state['run_state']['teacher']['sha256'] == fingerprint(model.net_t)  # where BasicSR keeps its state
    assert not any(name.startswith('net_t') for name in os.listdir(opt['path']['models']))


def _weights(model):
    nets = {'g': model.net_g, 'adapter': model.net_adapter}
    return {f'{n}.{k}': v.clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def test_resume_equals_straight_run_and_keeps_the_teacher(tmp_path):
    """4 steps straight == 2 steps, save, resume (with BasicSR's check_resume rewrites), 2 steps."""
    teacher_file = osp.join(str(tmp_path), 'teacher.pth')
    ema_teacher = save_teacher(teacher_file, seed=0, param_key='params_ema', extra_keys=('params', ))
    batches = photo_batches(4)

    teacher_path = {'pretrain_network_t': teacher_file, 'param_key_t': 'params_ema'}
    straight = build(make_opt(tmp_path / 'a', CONTRASTIVE, path=teacher_path))
    for i, batch in enumerate(batches):
        step(straight, batch, i + 1)

    opt = make_opt(tmp_path / 'b', CONTRASTIVE, path=teacher_path)
    first = build(opt)
    for i, batch in enumerate(batches[:2]):
        step(first, batch, i + 1)
    first.save(0, 2)

    state_file = osp.join(opt['path']['training_states'], '2.state')
    resumed_opt = make_opt(tmp_path / 'b', CONTRASTIVE, path=dict(teacher_path, resume_state=state_file))
    state = torch.load(state_file, weights_only=False)
    check_resume(resumed_opt, state['iter'])  # what BasicSR does before building the model
    assert resumed_opt['path']['param_key_t'] == 'params'
    assert resumed_opt['path']['pretrain_network_t'].endswith('net_t_2.pth')
    resumed = build(resumed_opt)
    resumed.resume_training(state)
    assert all(torch.equal(v, ema_teacher[k]) for k, v in resumed.net_t.state_dict().items())
    for i, batch in enumerate(batches[2:]):
        step(resumed, batch, i + 3)

    expected, got = _weights(straight), _weights(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-6), key


def test_teacher_under_bf16_autocast_gives_float32_targets_and_features(tmp_path):
    model = build(
        make_opt(tmp_path, CONTRASTIVE, teacher_amp='bf16', teacher_channels_last=True,
                 teacher_fp32_modules=['conv_last']))
    batch = photo_batches(1)[0]
    with model._recording():
        sr_t = model.run_teacher(batch['lq'])
    feats = model.teacher_taps.pop()
    assert sr_t.dtype == torch.float32 and all(f.dtype == torch.float32 and f.is_contiguous() for f in feats)
    log = step(model, batch)
    assert all(torch.isfinite(torch.tensor(v)) for v in log.values())


def test_degraded_negatives_are_teacher_features_of_the_bicubic_round_trip(tmp_path):
    from facd_basicsr.distill.degrade import bicubic_round_trip
    model = build(make_opt(tmp_path, dict(CONTRASTIVE, negatives='degraded')))
    seen = {}
    loss_fn = model.cri_feat

    def recording_loss(student, teacher, weight=None, negative_feats=None):
        seen['teacher'], seen['negatives'] = teacher, negative_feats
        return loss_fn(student, teacher, weight=weight, negative_feats=negative_feats)

    model.cri_feat = recording_loss
    model.cri_feat.needs_degraded_features = True
    batch = photo_batches(1)[0]
    teacher_before = fingerprint(model.net_t)
    step(model, batch)
    with model._recording(), torch.no_grad():
        model.net_t(bicubic_round_trip(batch['lq'], 2))
        expected = model.teacher_taps.pop()
        model.net_t(batch['lq'])
        clean = model.teacher_taps.pop()
    for got, want, positive, sharp in zip(seen['negatives'], expected, seen['teacher'], clean):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(positive, sharp)  # the second teacher pass did not overwrite the positives
        assert not torch.allclose(got, sharp)
    assert fingerprint(model.net_t) == teacher_before
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net_adapter.parameters())


def test_feature_ramp_scales_the_feature_term_only_until_it_ends(tmp_path):
    batch = photo_batches(1)[0]
    ramped = build(make_opt(tmp_path / 'a', CONTRASTIVE, feature_ramp_iters=4))
    plain = build(make_opt(tmp_path / 'b', CONTRASTIVE))
    first_ramped, first_plain = step(ramped, batch, 1), step(plain, batch, 1)
    assert first_ramped['feat_ramp'] == pytest.approx(0.25)
    assert first_ramped['l_feat'] == pytest.approx(0.25 * first_plain['l_feat'], rel=1e-5)
    assert first_ramped['l_feat_tap0'] == pytest.approx(first_plain['l_feat_tap0'], rel=1e-5)  # taps unscaled
    late = step(ramped, batch, 4)
    assert 'feat_ramp' not in late
    assert late['l_feat'] == pytest.approx(sum(late[f'l_feat_tap{j}'] for j in range(3)) * 0.1, rel=1e-5)


@pytest.mark.parametrize('value', [-1, 2.5, True, '100'])
def test_bad_feature_ramp_is_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ValueError, match='feature_ramp_iters'):
        build(make_opt(tmp_path, CONTRASTIVE, feature_ramp_iters=value))


def hooked_modules(net):
    return [name for name, module in net.named_modules() if module._forward_hooks]


def test_taps_hook_the_networks_only_during_the_training_forward(tmp_path):
    model = build(make_opt(tmp_path, CONTRASTIVE))
    assert hooked_modules(model.net_g) == [] and hooked_modules(model.net_t) == []
    with model._recording():
        assert hooked_modules(model.net_g) == ['conv_first', 'body.0', 'conv_after_body']
        assert hooked_modules(model.net_t) == ['body.0', 'body.1', 'conv_after_body']
    step(model, photo_batches(1)[0])
    assert hooked_modules(model.net_g) == [] and hooked_modules(model.net_t) == []
    with torch.no_grad():
        model.net_g(photo_batches(1)[0]['lq'])  # a validation-like forward records nothing
    with pytest.raises(RuntimeError, match='did not run in the last forward pass'):
        model.student_taps.pop()


def test_persistent_taps_stay_registered_and_record_only_inside_with(tmp_path):
    from facd_basicsr.distill.feature_taps import FeatureTaps
    net = build_network(dict(STUDENT))
    taps = FeatureTaps(net, ['body.0'], 'distill.teacher_taps', persistent=True)
    lq = photo_batches(1)[0]['lq']
    with torch.no_grad():
        net(lq)
        with pytest.raises(RuntimeError, match='body.0 did not run'):
            taps.pop()
        with taps:
            net(lq)
    assert hooked_modules(net) == ['body.0'] and taps.pop()[0].shape[0] == lq.shape[0]
    taps.detach()
    assert hooked_modules(net) == []


class TinyPerceptualLoss(torch.nn.Module):
    """A perceptual criterion in BasicSR's shape: ``(l_percep, l_style)``; here the L2 distance and no style term."""

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred, target):
        return self.loss_weight * ((pred - target)**2).mean(), None


def test_perceptual_opt_is_used_as_srmodel_uses_it(tmp_path):
    from basicsr.utils.registry import LOSS_REGISTRY
    if 'TinyPerceptualLoss' not in LOSS_REGISTRY:
        LOSS_REGISTRY.register(TinyPerceptualLoss)
    opt = make_opt(tmp_path, FD)
    opt['train']['perceptual_opt'] = {'type': 'TinyPerceptualLoss', 'loss_weight': 2.0}
    model = build(opt)
    batch = photo_batches(1)[0]
    log = step(model, batch)
    with torch.no_grad():
        before = build(make_opt(tmp_path, FD)).net_g(batch['lq'])  # same seed: the student before the step
    assert log['l_percep'] == pytest.approx(2.0 * ((before - batch['gt'])**2).mean().item(), rel=1e-5)
    assert 'l_style' not in log


def test_gate_log_writes_the_share_kept_and_the_advantage_of_every_iteration(tmp_path):
    from facd_basicsr.distill.gate_log import read_gate_log
    model = build(make_opt(tmp_path, FD, gate={'mode': 'top_fraction', 'fraction': 0.5}, gate_log=True))
    logs = [step(model, batch, i + 1) for i, batch in enumerate(photo_batches(2))]
    rows = read_gate_log(osp.join(model.opt['path']['log'], 'gate_log.csv'))
    assert [row['iter'] for row in rows] == [1, 2]
    for row, log in zip(rows, logs):
        assert row['gate_on'] == pytest.approx(0.5) and log['gate_on'] == pytest.approx(0.5)
        assert row['adv_min'] <= row['adv_p10'] <= row['adv_p50'] <= row['adv_p90'] <= row['adv_max']
        assert row['adv_p50'] == pytest.approx(log['gate_adv_p50'], abs=1e-3)
