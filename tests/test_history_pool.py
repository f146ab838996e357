"""The ``history`` negative pool: an EMA of student + adapters, never optimised, same-patch negatives, exact resume."""
import os.path as osp

import pytest
import torch
from basicsr.utils.misc import check_resume
from test_facd_model import build, step

from facd_basicsr.distill.history import HistoryPool, history_options, noisy_copies
from facd_basicsr.losses.facd_contrastive_loss import FACDContrastiveLoss
from facd_basicsr.losses.facd_infonce_loss import FACDInfoNCELoss

from model_helpers import make_opt, photo_batches

HISTORY = {'type': 'FACDContrastiveLoss', 'loss_weight': 0.1, 'distance': 'l2', 'negatives': 'history'}


def test_history_ratio_equals_a_hand_computed_value():
    torch.manual_seed(0)
    anchor, teacher = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    pool = torch.randn(3, 2, 3, 4, 4)  # M = 3 negatives of each of the 2 patches
    for distance in ('l1', 'l2'):
        loss = FACDContrastiveLoss(distance=distance, negatives='history', eps=1e-6)
        got, terms = loss([anchor], [teacher], negative_feats=[pool])
        dist = (lambda u, v: (u - v).abs().mean()) if distance == 'l1' else (lambda u, v: (u - v).pow(2).mean())
        expected = []
        for i in range(2):
            d_pos = dist(anchor[i], teacher[i])
            d_neg = sum(dist(anchor[i], pool[m, i]) for m in range(3)) / 3
            expected.append(d_pos / (d_neg + 1e-6))
        torch.testing.assert_close(got, torch.stack(expected).mean(), rtol=1e-5, atol=1e-7)


def test_history_loss_refuses_num_negatives_and_infonce():
    with pytest.raises(ValueError, match='num_negatives does nothing with negatives: history'):
        FACDContrastiveLoss(negatives='history', num_negatives=2)
    with pytest.raises(ValueError, match="Unsupported negatives 'history'"):
        FACDInfoNCELoss(negatives='history')


@pytest.mark.parametrize('history, key', [({'decay': 1.0}, 'decay'), ({'num_degraded': -1}, 'num_degraded'),
                                          ({'noise_sigma': [30, 1]}, 'noise_sigma'), ({'decai': 0.9}, 'decai'),
                                          ({'include_clean': 'yes'}, 'include_clean')])
def test_bad_history_options_name_the_key(history, key):
    with pytest.raises((ValueError, KeyError), match=key):
        history_options(history)


def test_ema_is_updated_after_each_step_and_never_optimised(tmp_path):
    model = build(make_opt(tmp_path, HISTORY, history={'decay': 0.9}))
    pool = model.history
    optimised = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert not any(id(p) in optimised or p.requires_grad for p in pool.parameters())
    before = {k: v.clone() for k, v in pool.net.state_dict().items()}
    step(model, photo_batches(1)[0])
    student = model.get_bare_model(model.net_g).state_dict()
    for key, old in before.items():
        torch.testing.assert_close(pool.net.state_dict()[key], 0.9 * old + 0.1 * student[key])
    assert not torch.equal(pool.net.state_dict()['conv_first.weight'], before['conv_first.weight'])
    assert all(p.grad is None for p in pool.parameters())
    adapter = model.get_bare_model(model.net_adapter).state_dict()
    assert set(pool.adapter.state_dict()) == set(adapter)


def test_negatives_are_the_histories_features_of_the_same_patch(tmp_path):
    model = build(make_opt(tmp_path, HISTORY, history={'num_degraded': 2, 'noise_sigma': [5., 5.]}))
    lq = photo_batches(1)[0]['lq']
    torch.manual_seed(3)
    negatives = model.history.negatives(lq)
    assert [tuple(n.shape[:2]) for n in negatives] == [(3, 4)] * 3  # M = 2 noisy + 1 clean, B = 4
    changed = lq.clone()
    changed[1:] = torch.rand_like(changed[1:])  # only patch 0 stays
    torch.manual_seed(3)
    again = model.history.negatives(changed)
    for n, m in zip(negatives, again):
        torch.testing.assert_close(n[:, 0], m[:, 0])  # patch 0's negatives come from patch 0 alone
        assert not torch.allclose(n[:, 1], m[:, 1])
    with model.history.taps, torch.no_grad():  # the clean copy: the history's adapted maps of the patch itself
        model.history.net(lq)
    clean = model.history.adapter(model.history.taps.pop())
    for n, c in zip(negatives, clean):
        torch.testing.assert_close(n[2], c)
        assert not torch.allclose(n[0], c)  # the noisy copies differ


def test_noisy_copies_draw_sigma_in_range():
    torch.manual_seed(0)
    lq = torch.full((64, 1, 8, 8), 0.5)
    copies = noisy_copies(lq, 3, (10., 10.))
    assert copies.shape == (3, 64, 1, 8, 8)
    assert abs(float((copies - 0.5).std()) * 255 - 10) < 0.5


def test_chunked_history_forward_gives_the_same_negatives(tmp_path):
    lq = photo_batches(1)[0]['lq']
    outs = []
    for chunk in (0, 1):
        model = build(make_opt(tmp_path / str(chunk), HISTORY, history={'chunk': chunk}))
        torch.manual_seed(7)
        outs.append(model.history.negatives(lq))
    for a, b in zip(*outs):  # a batch of 1 and a batch of 5 may take other conv kernels: float32 noise, not more
        assert a.abs().max() > 1e-2
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _weights(model):
    nets = {'g': model.net_g, 'adapter': model.net_adapter, 'history': model.history}
    return {f'{n}.{k}': v.clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def test_resume_with_the_pool_equals_the_straight_run(tmp_path):
    batches = photo_batches(4)
    straight = build(make_opt(tmp_path / 'a', HISTORY, history={'decay': 0.5}))
    for i, batch in enumerate(batches):
        torch.manual_seed(100 + i)  # the noise draws of step i, the same in both runs
        step(straight, batch, i + 1)

    opt = make_opt(tmp_path / 'b', HISTORY, history={'decay': 0.5})
    first = build(opt)
    for i, batch in enumerate(batches[:2]):
        torch.manual_seed(100 + i)
        step(first, batch, i + 1)
    first.save(0, 2)
    assert osp.isfile(osp.join(opt['path']['models'], 'net_history_2.pth'))

    state_file = osp.join(opt['path']['training_states'], '2.state')
    resumed_opt = make_opt(tmp_path / 'b', HISTORY, history={'decay': 0.5}, path={'resume_state': state_file})
    state = torch.load(state_file, weights_only=False)
    check_resume(resumed_opt, state['iter'])
    resumed = build(resumed_opt)
    resumed.resume_training(state)
    for i, batch in enumerate(batches[2:]):
        torch.manual_seed(102 + i)
        step(resumed, batch, i + 3)
    expected, got = _weights(straight), _weights(resumed)
    assert expected.keys() == got.keys() and any(k.startswith('history.') for k in got)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_history_options_without_history_negatives_are_refused(tmp_path):
    with pytest.raises(ValueError, match='distill.history is set'):
        build(make_opt(tmp_path, dict(HISTORY, negatives='batch'), history={'decay': 0.9}))


def test_pool_is_built_from_a_copy_not_the_student(tmp_path):
    model = build(make_opt(tmp_path, HISTORY))
    assert isinstance(model.history, HistoryPool)
    student = model.get_bare_model(model.net_g)
    assert all(a is not b for a, b in zip(model.history.net.parameters(), student.parameters()))
