"""Feature-distillation losses: hand-computed values, naive references, gradients, memory, option checks."""
import glob
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import yaml
from basicsr.losses import build_loss
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import LOSS_REGISTRY

from facd_basicsr.losses.facd_contrastive_loss import FACDContrastiveLoss
from facd_basicsr.losses.facd_infonce_loss import FACDInfoNCELoss
from facd_basicsr.losses.fakd_affinity_loss import FAKDAffinityLoss, pooled_grid
from facd_basicsr.losses.feature_distill_loss import FeatureDistillLoss
from facd_basicsr.losses.feature_loss_base import FeatureLoss, check_feature_loss, registered_feature_losses
from facd_basicsr.losses.feature_loss_util import (ShiftedChannelDot, ShiftedL1Mean, shifted_mean, shifted_spread,
                                                   shifts_are_all_others)

from conftest import REPO_ROOT

R2 = math.sqrt(0.5)  # 1 / sqrt(2)


def vec(rows):
    """(B, C) nested list -> (B, C, 1, 1) float64 tensor."""
    return torch.tensor(rows, dtype=torch.float64)[:, :, None, None]


# B = 3, C = 2, H = W = 1. Teacher sample 1 is the zero vector (cosine of a zero vector is 0 thanks to eps).
A = [[1., 0.], [0., 1.], [2., 2.]]
T = [[1., 1.], [0., 0.], [2., 0.]]
GATE = torch.tensor([1., 0., 1.], dtype=torch.float64)


def ratio(d_pos, d_neg, eps=1e-6):
    return d_pos / (d_neg + eps)


# Per-sample L_i by hand. l1: d_pos = (.5, .5, 1); K=2 mean negatives: i0 (|1-0|+0)/2=.5,(|1-2|+0)/2=.5 -> .5;
# i1 vs t2 (2+1)/2, vs t0 (1+0)/2 -> 1; i2 vs t0 (1+1)/2, vs t1 (2+2)/2 -> 1.5.
L1_K2 = [ratio(.5, .5), ratio(.5, 1.), ratio(1., 1.5)]
# K=1 uses only t_{i+1}: i0 .5, i1 1.5, i2 1.
L1_K1 = [ratio(.5, .5), ratio(.5, 1.5), ratio(1., 1.)]
# l2: d_pos = (.5, .5, 2); negatives i0 (.5, .5) -> .5; i1 (2.5, .5) -> 1.5; i2 (1, 4) -> 2.5.
L2_K2 = [ratio(.5, .5), ratio(.5, 1.5), ratio(2., 2.5)]
# cosine: d_pos = (1 - R2, 1, 1 - R2); negatives i0 (1, 0) -> .5; i1 (1, 1 - R2); i2 (0, 1) -> .5.
COS_K2 = [ratio(1 - R2, .5), ratio(1., (2 - R2) / 2), ratio(1 - R2, .5)]
# normalize + l1: a^ = [1,0],[0,1],[R2,R2]; t^ = [R2,R2],[0,0],[1,0]; d_pos = (.5, .5, .5);
# negatives i0 (.5, 0) -> .25; i1 (1, .5) -> .75; i2 (0, R2) -> R2 / 2.
NORM_L1_K2 = [ratio(.5, .25), ratio(.5, .75), ratio(.5, R2 / 2)]
# negatives: student -> the pool is A itself. l1, K=2: i0 vs a1 (1+1)/2, vs a2 (1+2)/2 -> 1.25; i1 vs a2 (2+1)/2,
# vs a0 (1+1)/2 -> 1.25; i2 vs a0 (1+2)/2, vs a1 (2+1)/2 -> 1.5.
STUDENT_L1_K2 = [ratio(.5, 1.25), ratio(.5, 1.25), ratio(1., 1.5)]
# negatives: degraded, pool N, K=1 = the same patch's degraded map: i0 (1+0)/2 = .5; i1 (2+0)/2 = 1; i2 (2+2)/2 = 2.
N = [[0., 0.], [2., 1.], [0., 0.]]
DEGRADED_L1_K1 = [ratio(.5, .5), ratio(.5, 1.), ratio(1., 2.)]
# K=2 adds n_{i+1}: i0 + n1 (1+1)/2 -> (.5+1)/2; i1 + n2 (0+1)/2 -> (1+.5)/2; i2 + n0 (2+2)/2 -> (2+2)/2.
DEGRADED_L1_K2 = [ratio(.5, .75), ratio(.5, .75), ratio(1., 2.)]


@pytest.mark.parametrize('kwargs, per_sample', [
    (dict(distance='l1'), L1_K2),
    (dict(distance='l1', num_negatives=1), L1_K1),
    (dict(distance='l2'), L2_K2),
    (dict(distance='cosine'), COS_K2),
    (dict(distance='l1', normalize=True), NORM_L1_K2),
    (dict(distance='l1', negatives='student'), STUDENT_L1_K2),
    (dict(distance='l1', negatives='degraded'), DEGRADED_L1_K1),
    (dict(distance='l1', negatives='degraded', num_negatives=2), DEGRADED_L1_K2),
])
def test_ratio_form_by_hand(kwargs, per_sample):
    extra = {'negative_feats': [vec(N)]} if kwargs.get('negatives') == 'degraded' else {}
    loss, terms = FACDContrastiveLoss(**kwargs)([vec(A)], [vec(T)], GATE, **extra)
    expected = (per_sample[0] + per_sample[2]) / 3  # gate zeroes sample 1, still divided by B = 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert terms['tap0'].item() == pytest.approx(expected, rel=1e-5)
    loss_all, _ = FACDContrastiveLoss(**kwargs)([vec(A)], [vec(T)], **extra)
    assert loss_all.item() == pytest.approx(sum(per_sample) / 3, rel=1e-5)


def test_infonce_by_hand():
    tau = 0.5
    # cosines (a_i, t_k): i0 -> (R2, 0, 1); i1 -> (0, 0, R2); i2 -> (1, 0, R2). Positive k = i.
    cos = [[R2, 0., 1.], [0., 0., R2], [1., 0., R2]]
    ce = [math.log(sum(math.exp(c / tau) for c in row)) - row[i] / tau for i, row in enumerate(cos)]
    loss, terms = FACDInfoNCELoss(temperature=tau)([vec(A)], [vec(T)], GATE)
    assert loss.item() == pytest.approx((ce[0] + ce[2]) / 3, rel=1e-5)
    assert terms['d_pos'].item() == pytest.approx((3 - 2 * R2) / 3, rel=1e-5)
    d_neg = [(1 + 0) / 2, (1 + 1 - R2) / 2, (0 + 1) / 2]
    assert terms['d_neg'].item() == pytest.approx(sum(d_neg) / 3, rel=1e-5)


def test_tap_weights_loss_weight_and_terms():
    # Tap 1 doubles every feature: l1 distances double, ratios stay the same.
    loss_fn = FACDContrastiveLoss(loss_weight=2.0, tap_weights=[1.0, 0.5])
    student = [vec(A).requires_grad_(), 2 * vec(A)]
    loss, terms = loss_fn(student, [vec(T), 2 * vec(T)], GATE)
    tap = (L1_K2[0] + L1_K2[2]) / 3
    assert loss.item() == pytest.approx(2.0 * (tap + 0.5 * tap), rel=1e-5)
    assert set(terms) == {'tap0', 'tap1', 'd_pos', 'd_neg'}
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())
    assert terms['tap1'].item() == pytest.approx(tap, rel=1e-5)
    assert terms['d_pos'].item() == pytest.approx(((.5 + .5 + 1) / 3 + (1 + 1 + 2) / 3) / 2)  # ungated
    assert terms['d_neg'].item() == pytest.approx(((.5 + 1 + 1.5) / 3 + (1 + 2 + 3) / 3) / 2)


def test_feature_distill_by_hand():
    loss, terms = FeatureDistillLoss(criterion='l1')([vec(A)], [vec(T)], GATE)
    assert loss.item() == pytest.approx((.5 + 1.) / 3)
    assert terms['d_pos'].item() == pytest.approx(2 / 3)  # ungated mean of (.5, .5, 1)
    loss, terms = FeatureDistillLoss(criterion='l2', loss_weight=0.5, tap_weights=[2.0])([vec(A)], [vec(T)])
    assert loss.item() == pytest.approx(0.5 * 2.0 * (.5 + .5 + 2.) / 3)
    assert set(terms) == {'tap0', 'd_pos'} and not terms['tap0'].requires_grad


def test_fakd_by_hand_with_channel_mismatch():
    # Student C=2, teacher C=3, H=1, W=2. Sample 0: student positions [1,0],[0,1] -> A^S = I; teacher [1,0,0],[1,1,0]
    # -> A^T = [[1, R2], [R2, 1]] -> mean |diff| = R2 / 2. Sample 1: student [2,0],[1,1] -> A^S = A^T -> 0.
    student = torch.tensor([[[[1., 0.]], [[0., 1.]]], [[[2., 1.]], [[0., 1.]]]], dtype=torch.float64)
    teacher = torch.tensor([[[1., 1.]], [[0., 1.]], [[0., 0.]]], dtype=torch.float64).expand(2, 3, 1, 2)
    gate = torch.tensor([0.5, 1.0], dtype=torch.float64)
    loss, terms = FAKDAffinityLoss(loss_weight=3.0)([student], [teacher], gate)
    assert loss.item() == pytest.approx(3.0 * 0.5 * (R2 / 2) / 2, rel=1e-5)
    assert set(terms) == {'tap0'} and terms['tap0'].item() == pytest.approx(0.5 * (R2 / 2) / 2, rel=1e-5)
    assert FAKDAffinityLoss.uses_adapter is False
    assert FACDContrastiveLoss.uses_adapter and FeatureDistillLoss.uses_adapter


@pytest.mark.parametrize('shape, grid', [((48, 48), (32, 32)), ((48, 64), (27, 37)), ((1, 5000), (1, 1024)),
                                         ((100, 3), (100, 3)), ((33, 33), (32, 32))])
def test_pooled_grid(shape, grid):
    assert pooled_grid(*shape, 1024) == grid
    assert pooled_grid(*shape, None) == shape


def test_fakd_pools_large_maps():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 6), torch.randn(2, 5, 4, 6)
    pooled, _ = FAKDAffinityLoss(max_positions=6)([student], [teacher])  # grid (2, 3)
    pool = torch.nn.AdaptiveAvgPool2d((2, 3))
    reference, _ = FAKDAffinityLoss(max_positions=None)([pool(student)], [pool(teacher)])
    full, _ = FAKDAffinityLoss(max_positions=None)([student], [teacher])
    torch.testing.assert_close(pooled, reference)
    assert abs(pooled.item() - full.item()) > 1e-3


def naive_contrastive(a, t, form, distance, k, eps=1e-6, tau=0.1, pool=None, first_shift=1):
    """Explicit loop over samples and negatives (the reference the fast kernels must match); negatives come from
    ``pool`` (default ``t``) at shifts first_shift .. first_shift + k - 1."""
    batch = a.shape[0]
    pool = t if pool is None else pool

    def unit(x):
        return x / (x.norm(dim=0, keepdim=True) + eps)

    def dist(u, v):
        if distance == 'l1':
            return (u - v).abs().mean()
        if distance == 'l2':
            return (u - v).pow(2).mean()
        return 1 - (unit(u) * unit(v)).sum(0).mean()

    out = []
    for i in range(batch):
        others = [pool[(i + s) % batch] for s in range(first_shift, first_shift + k)]
        if form == 'ratio':
            out.append(dist(a[i], t[i]) / (sum(dist(a[i], o) for o in others) / k + eps))
        else:
            logits = torch.stack([(unit(a[i]) * unit(o)).sum(0) for o in [t[i]] + others]) / tau
            out.append((logits.logsumexp(0) - logits[0]).mean())
    return torch.stack(out)


def form_keys(form, distance):
    """``distance`` is a ratio-form key (the infonce cases name 'l1' only for the naive reference)."""
    return {} if form == 'infonce' else {'distance': distance}


def contrastive(form='ratio', **kwargs):
    """The loss of ``form``: FACDContrastiveLoss (ratio) or FACDInfoNCELoss."""
    return FACDInfoNCELoss(**kwargs) if form == 'infonce' else FACDContrastiveLoss(**kwargs)


@pytest.mark.parametrize('form, distance', [('ratio', 'l1'), ('ratio', 'l2'), ('ratio', 'cosine'), ('infonce', 'l1')])
@pytest.mark.parametrize('num_negatives', [None, 1, 3])
def test_matches_naive_reference_value_and_gradient(form, distance, num_negatives):
    torch.manual_seed(1)
    a = torch.randn(5, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 3, 2, 3, dtype=torch.float64)
    gate = torch.tensor([1., 0., 1., .5, 1.], dtype=torch.float64)
    loss, _ = contrastive(form, num_negatives=num_negatives, **form_keys(form, distance))([a], [t], gate)
    k = 4 if num_negatives is None else num_negatives
    reference = (naive_contrastive(a, t, form, distance, k) * gate).sum() / 5
    (grad, ), (grad_ref, ) = torch.autograd.grad(loss, a), torch.autograd.grad(reference, a)
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-12)


def test_l2_decomposition_is_stable_in_float32():
    """Features with a large common offset: ||a||^2 - 2<a, m> + ... would cancel; the centred form does not."""
    torch.manual_seed(5)
    a64 = 10 + 0.1 * torch.randn(6, 8, 5, 5, dtype=torch.float64)
    t64 = 10 + 0.1 * torch.randn(6, 8, 5, 5, dtype=torch.float64)
    reference = naive_contrastive(a64, t64, 'ratio', 'l2', 5).mean()
    loss, _ = FACDContrastiveLoss(distance='l2')([a64.float()], [t64.float()])
    assert loss.item() == pytest.approx(reference.item(), rel=2e-5)


@pytest.mark.parametrize('batch', [2, 3, 6])
@pytest.mark.parametrize('shifts_of', [lambda b: range(1, b), lambda b: range(b - 1, 0, -1), lambda b: (1, )])
def test_pool_mean_and_spread_match_an_explicit_loop(batch, shifts_of):
    """All-others shifts (either order) take the closed form, K < B - 1 the per-shift loop; both equal the loop."""
    torch.manual_seed(7)
    pool = 5 + torch.randn(batch, 3, 2, 2, dtype=torch.float64)
    shifts = tuple(shifts_of(batch))
    others = [torch.stack([pool[(i + s) % batch] for s in shifts]) for i in range(batch)]
    mean_ref = torch.stack([o.mean(0) for o in others])
    spread_ref = torch.stack([(o - o.mean(0)).pow(2).flatten(1).sum(1).mean() for o in others])
    mean = shifted_mean(pool, shifts)
    torch.testing.assert_close(mean, mean_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shifted_spread(pool, mean, shifts), spread_ref, rtol=1e-10, atol=1e-10)
    assert shifts_are_all_others(batch, shifts) == (len(shifts) == batch - 1)


@pytest.mark.parametrize('negatives', ['student', 'degraded'])
@pytest.mark.parametrize('form, distance', [('ratio', 'l1'), ('ratio', 'l2'), ('ratio', 'cosine'), ('infonce', 'l1')])
@pytest.mark.parametrize('num_negatives', [None, 2])
def test_other_negative_pools_match_the_naive_reference(negatives, form, distance, num_negatives):
    """Student pool: detached, so the reference detaches it too; degraded pool: shifts start at 0 (same patch)."""
    torch.manual_seed(6)
    a = torch.randn(5, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 3, 2, 3, dtype=torch.float64)
    d = torch.randn(5, 3, 2, 3, dtype=torch.float64, requires_grad=True)  # must not receive a gradient
    gate = torch.tensor([1., 0., 1., .5, 1.], dtype=torch.float64)
    loss_fn = contrastive(form, num_negatives=num_negatives, negatives=negatives, **form_keys(form, distance))
    if negatives == 'student':
        loss, _ = loss_fn([a], [t], gate)
        pool, first, k = a.detach(), 1, 4 if num_negatives is None else num_negatives
    else:
        loss, _ = loss_fn([a], [t], gate, negative_feats=[d])
        pool, first, k = d.detach(), 0, 1 if num_negatives is None else num_negatives
    reference = (naive_contrastive(a, t, form, distance, k, pool=pool, first_shift=first) * gate).sum() / 5
    (grad, ), (grad_ref, ) = torch.autograd.grad(loss, a, retain_graph=True), torch.autograd.grad(reference, a)
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-12)
    loss.backward()
    assert d.grad is None


@pytest.mark.parametrize('function', [ShiftedL1Mean, ShiftedChannelDot])
@pytest.mark.parametrize('shifts', [(1, ), (1, 2, 3), (0, 1)])
def test_custom_functions_gradcheck(function, shifts):
    torch.manual_seed(2)
    a = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    p = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    pools = (p, ) if function is ShiftedL1Mean else (t, p)
    assert torch.autograd.gradcheck(lambda x: function.apply(x, *pools, shifts), (a, ))


@pytest.mark.parametrize('loss_fn', [
    FACDContrastiveLoss(distance='l1'),
    FACDContrastiveLoss(distance='l2', normalize=True),
    FACDContrastiveLoss(distance='cosine'),
    FACDInfoNCELoss(),
    FeatureDistillLoss(),
    FAKDAffinityLoss(max_positions=4),
])
def test_no_gradient_reaches_the_teacher(loss_fn):
    torch.manual_seed(3)
    student = [torch.randn(3, 4, 3, 3, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(3, 4, 3, 3, requires_grad=True) for _ in range(2)]
    loss, _ = loss_fn(student, teacher)
    loss.backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)


def saved_bytes(fn):
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs."""
    storages = {}

    def pack(x):
        storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize('kwargs, budget', [
    (dict(distance='l1'), 4),
    (dict(distance='l2'), 4),
    (dict(distance='cosine'), 4),
    (dict(form='infonce'), 4),
    (dict(distance='l1', normalize=True), 5),
    (dict(distance='l1', negatives='student'), 4),
    (dict(distance='cosine', negatives='student'), 4),
])
def test_saved_memory_does_not_grow_with_negatives(kwargs, budget):
    torch.manual_seed(4)
    a = torch.randn(8, 16, 12, 12, requires_grad=True)
    t = torch.randn(8, 16, 12, 12)
    one_map = a.numel() * a.element_size()

    def naive():  # autograd through a loop over the 7 shifts keeps 7 difference maps
        return sum((a - t.roll(-s, 0)).abs().mean() for s in range(1, 8))

    assert saved_bytes(naive) > 6 * one_map  # the measurement sees the blow-up it guards against
    assert saved_bytes(lambda: contrastive(**kwargs)([a], [t])) < budget * one_map


def test_batch_size_checks():
    with pytest.raises(ValueError, match='batch_size'):
        FACDContrastiveLoss().validate_batch_size(1)
    with pytest.raises(ValueError, match='num_negatives'):
        FACDContrastiveLoss(num_negatives=4).validate_batch_size(4)
    FACDContrastiveLoss(num_negatives=3).validate_batch_size(4)
    with pytest.raises(ValueError, match='batch_size'):
        FACDContrastiveLoss()([torch.randn(1, 2, 2, 2)], [torch.randn(1, 2, 2, 2)])
    with pytest.raises(ValueError, match='num_negatives'):
        FACDContrastiveLoss(num_negatives=3)([torch.randn(3, 2, 2, 2)], [torch.randn(3, 2, 2, 2)])
    FACDContrastiveLoss(negatives='degraded').validate_batch_size(1)
    FACDContrastiveLoss(negatives='degraded', num_negatives=4).validate_batch_size(4)
    with pytest.raises(ValueError, match='num_negatives'):
        FACDContrastiveLoss(negatives='degraded', num_negatives=5).validate_batch_size(4)
    for loss_fn in (FeatureDistillLoss(), FAKDAffinityLoss()):
        loss_fn.validate_batch_size(1)
        loss_fn([torch.randn(1, 2, 2, 2)], [torch.randn(1, 2, 2, 2)])


@pytest.mark.parametrize('cls, kwargs, option', [
    (FACDContrastiveLoss, dict(distance='l3'), 'distance'),
    (FACDContrastiveLoss, dict(form='nce'), 'form'),
    (FACDContrastiveLoss, dict(num_negatives=0), 'num_negatives'),
    (FACDInfoNCELoss, dict(temperature=0.0), 'temperature'),
    (FACDInfoNCELoss, dict(negatives='history'), 'negatives'),
    (FACDContrastiveLoss, dict(eps='1e-6'), 'eps'),
    (FACDContrastiveLoss, dict(normalize='yes'), 'normalize'),
    (FACDContrastiveLoss, dict(negatives='bicubic'), 'negatives'),
    (FACDContrastiveLoss, dict(loss_weight=-1.0), 'loss_weight'),
    (FeatureDistillLoss, dict(criterion='l3'), 'criterion'),
    (FeatureDistillLoss, dict(tap_weights=[]), 'tap_weights'),
    (FAKDAffinityLoss, dict(max_positions=0), 'max_positions'),
])
def test_bad_options_raise_naming_the_option(cls, kwargs, option):
    with pytest.raises(ValueError, match=option):
        cls(**kwargs)


@pytest.mark.parametrize('cls', [FACDContrastiveLoss, FACDInfoNCELoss, FeatureDistillLoss, FAKDAffinityLoss])
def test_bad_inputs_raise(cls):
    feats = [torch.randn(3, 2, 2, 2) for _ in range(3)]
    with pytest.raises(ValueError, match='tap_weights'):
        cls(tap_weights=[1.0, 1.0])(feats, feats)
    with pytest.raises(ValueError, match='weight'):
        cls()(feats, feats, torch.ones(3, 1))
    with pytest.raises(ValueError, match='equal length'):
        cls()(feats, feats[:2])
    with pytest.raises(ValueError, match='tap 0'):
        cls()([torch.randn(3, 2, 2, 3)], [torch.randn(3, 2, 2, 2)])


def test_degraded_negatives_are_required_exactly_when_asked_for():
    feats = [torch.randn(3, 2, 2, 2) for _ in range(2)]
    with pytest.raises(ValueError, match='negative_feats'):
        FACDContrastiveLoss(negatives='degraded')(feats, feats)
    with pytest.raises(ValueError, match='negatives: degraded'):
        FACDContrastiveLoss()(feats, feats, negative_feats=feats)
    with pytest.raises(ValueError, match='tap by tap'):
        FACDContrastiveLoss(negatives='degraded')(feats, feats, negative_feats=[feats[0], torch.randn(3, 2, 2, 3)])


def test_built_from_options_like_basicsr():
    loss_fn = build_loss({'type': 'FACDInfoNCELoss', 'loss_weight': 0.01, 'temperature': 0.2, 'num_negatives': 2})
    assert isinstance(loss_fn, FACDInfoNCELoss) and loss_fn.num_negatives == 2 and loss_fn.temperature == 0.2
    assert isinstance(build_loss({'type': 'FAKDAffinityLoss', 'max_positions': None}), FAKDAffinityLoss)
    with pytest.raises(TypeError):
        build_loss({'type': 'FeatureDistillLoss', 'citerion': 'l2'})  # misspelled key fails at build time


@pytest.mark.parametrize('loss_type, kwargs, key', [
    ('FACDInfoNCELoss', dict(distance='l1'), 'distance'),
    ('FACDInfoNCELoss', dict(normalize=True), 'normalize'),
    ('FACDContrastiveLoss', dict(temperature=0.1), 'temperature'),
])
def test_keys_of_the_other_form_fail_at_build_time(loss_type, kwargs, key):
    """Each loss's keyword arguments are exactly its options: a key of the other form is a TypeError naming it."""
    with pytest.raises(TypeError, match=key):
        build_loss(dict(kwargs, type=loss_type))


def test_infonce_through_the_ratio_loss_points_to_its_own_class():
    with pytest.raises(ValueError, match='type: FACDInfoNCELoss'):
        build_loss({'type': 'FACDContrastiveLoss', 'form': 'infonce'})
    assert build_loss({'type': 'FACDContrastiveLoss', 'form': 'ratio'}).distance == 'l1'  # older option files
    with pytest.raises(ValueError, match='normalize does nothing with distance: cosine'):
        FACDContrastiveLoss(distance='cosine', normalize=True)


def test_defaults_of_each_form():
    ratio, infonce = FACDContrastiveLoss(), FACDInfoNCELoss()
    assert (ratio.distance, ratio.normalize, ratio.negatives) == ('l1', False, 'batch')
    assert (infonce.temperature, infonce.negatives) == (0.1, 'batch')
    assert 'temperature' not in repr(ratio) and 'distance' not in repr(infonce)
    for negatives in ('batch', 'student', 'degraded'):  # negatives, num_negatives and eps are read by both forms
        FACDInfoNCELoss(negatives=negatives, num_negatives=1, eps=1e-5)


def test_every_loss_speaks_the_feature_loss_protocol():
    for loss_fn in (FACDContrastiveLoss(), FACDInfoNCELoss(), FeatureDistillLoss(), FAKDAffinityLoss()):
        assert isinstance(loss_fn, FeatureLoss) and check_feature_loss(loss_fn) is loss_fn
    assert registered_feature_losses() == ['FACDContrastiveLoss', 'FACDInfoNCELoss', 'FAKDAffinityLoss',
                                           'FeatureDistillLoss']  # files
    assert [
        FACDContrastiveLoss().needs_degraded_features,
        FeatureDistillLoss().needs_degraded_features,
        FAKDAffinityLoss().needs_degraded_features
    ] == [False, False, False]
    assert FACDContrastiveLoss(negatives='degraded').needs_degraded_features is True
    assert 'FeatureLoss' not in LOSS_REGISTRY  # the base is not a loss one can build
    feats = [torch.randn(3, 2, 2, 2)]
    for loss_fn in (FeatureDistillLoss(), FAKDAffinityLoss()):
        with pytest.raises(ValueError, match='takes no negative_feats'):
            loss_fn(feats, feats, negative_feats=feats)


def test_a_plain_basicsr_loss_is_refused_naming_the_option():
    with pytest.raises(TypeError) as info:
        check_feature_loss(build_loss({'type': 'L1Loss'}))
    message = str(info.value)
    assert message.startswith('train.feature_opt has type L1Loss, which is not a feature loss')
    assert 'FeatureLoss' in message
    assert 'FACDContrastiveLoss, FACDInfoNCELoss, FAKDAffinityLoss, FeatureDistillLoss.' in message


def test_the_base_class_defaults():

    class MeanGap(FeatureLoss):
        """A user loss: only forward written; the protocol's defaults do the rest."""

        def forward(self, student_feats, teacher_feats, weight=None, negative_feats=None):
            self.reject_negative_feats(negative_feats)
            gap = sum((s - t).abs().mean() for s, t in zip(student_feats, teacher_feats))
            return gap, {'tap0': gap.detach()}

    loss_fn = MeanGap()
    assert loss_fn.uses_adapter is True and loss_fn.needs_degraded_features is False
    assert loss_fn.validate_batch_size(1) is None
    loss, terms = loss_fn([torch.ones(2, 1, 1, 1)], [torch.zeros(2, 1, 1, 1)])
    assert loss.item() == 1.0 and terms['tap0'].item() == 1.0
    with pytest.raises(NotImplementedError, match='FeatureLoss must implement forward'):
        FeatureLoss()([torch.ones(1)], [torch.ones(1)])


def test_every_shipped_option_file_builds_its_feature_loss():
    """options/**/*.yml: each train.feature_opt builds (no refused key) and passes the model's protocol check."""
    built = {}
    for path in sorted(glob.glob(osp.join(REPO_ROOT, 'options', '**', '*.yml'), recursive=True)):
        with open(path, encoding='utf-8') as f:
            feature_opt = (yaml.load(f, Loader=ordered_yaml()[0]).get('train') or {}).get('feature_opt')
        if feature_opt:
            built[osp.relpath(path, REPO_ROOT)] = type(check_feature_loss(build_loss(dict(feature_opt)))).__name__
    assert set(built.values()) == {'FACDContrastiveLoss', 'FeatureDistillLoss', 'FAKDAffinityLoss'}
    assert built['options/train_FACD_RCAN_x4.yml'] == 'FACDContrastiveLoss' and len(built) >= 20


def test_the_documented_user_loss_registers_and_trains_in_facd_model(tmp_path):
    """docs/losses.md's example, run in a fresh interpreter (it registers into the global LOSS_REGISTRY)."""
    with open(osp.join(REPO_ROOT, 'docs', 'losses.md'), encoding='utf-8') as f:
        example = f.read().split('```python\n', 1)[1].split('```', 1)[0]
    script = tmp_path / 'user_loss.py'
    script.write_text('import facd_basicsr\n' + example + '''
import torch
from basicsr.losses import build_loss
from basicsr.models import build_model
from model_helpers import make_opt, photo_batches
loss, terms = build_loss({'type': 'MyFeatureLoss', 'loss_weight': 2.0})(
    [torch.ones(2, 3, 2, 2)], [torch.zeros(2, 3, 2, 2)], torch.tensor([1., 0.]))
model = build_model(make_opt(%r, {'type': 'MyFeatureLoss', 'loss_weight': 0.1}))
model.feed_data(photo_batches(1)[0])
model.optimize_parameters(1)
print(loss.item(), terms['tap0'].item(), model.net_adapter is not None, sorted(model.log_dict))
''' % str(tmp_path / 'run'))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, osp.join(REPO_ROOT, 'tests')]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # gate (1, 0), |1 - 0| = 1 per sample: tap0 = (1 + 0) / 2, loss = 2.0 * 0.5
    assert done.stdout.split()[:3] == ['1.0', '0.5', 'True']
    assert "'l_feat_tap0'" in done.stdout and "'l_feat_tap2'" in done.stdout


# ---------------------------------------------------------------------------------------------- centre (issue 32)
def test_centred_fd_matches_hand_values_and_ignores_a_flat_offset():
    student = torch.tensor([1., 3.]).view(1, 1, 2, 1).requires_grad_()
    teacher = torch.zeros(1, 1, 2, 1)
    plain, _ = FeatureDistillLoss(criterion='l2')([student], [teacher])
    centred, terms = FeatureDistillLoss(criterion='l2', centre=True)([student], [teacher])
    assert float(plain.detach()) == pytest.approx(5.)  # ((1 - 0)^2 + (3 - 0)^2) / 2
    assert float(centred) == pytest.approx(1.)  # centred [-1, 1] against [0, 0]
    centred.backward()
    assert student.grad.flatten().tolist() == pytest.approx([-1., 1.])  # d/ds of mean((s - mean s)^2): no flat pull
    shifted, _ = FeatureDistillLoss(criterion='l2', centre=True)([student.detach() + 7.], [teacher])
    assert float(shifted) == pytest.approx(1.)


def test_centred_facd_ratio_ignores_per_channel_offsets_of_every_map():
    torch.manual_seed(0)
    anchor, teacher = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    offsets = torch.randn(4, 3, 1, 1) * 10
    loss = FACDContrastiveLoss(distance='l2', centre=True)
    base, _ = loss([anchor], [teacher])
    moved, _ = loss([anchor + offsets], [teacher - 2 * offsets])
    assert float(moved) == pytest.approx(float(base), rel=1e-5)
    uncentred, _ = FACDContrastiveLoss(distance='l2')([anchor + offsets], [teacher - 2 * offsets])
    assert abs(float(uncentred) - float(base)) > 1e-2
    history = FACDContrastiveLoss(distance='l2', centre=True, negatives='history')
    negatives = torch.randn(5, 4, 3, 5, 5)
    a, _ = history([anchor], [teacher], negative_feats=[negatives])
    b, _ = history([anchor], [teacher], negative_feats=[negatives + torch.randn(5, 4, 3, 1, 1)])
    assert float(a) == pytest.approx(float(b), rel=1e-5)


@pytest.mark.parametrize('cls', [FeatureDistillLoss, FACDContrastiveLoss])
def test_centre_must_be_a_boolean(cls):
    with pytest.raises(ValueError, match=r"centre must be true or false, got 'false'"):
        cls(centre='false')


def test_normalize_must_be_a_boolean_whatever_the_distance():
    for distance in ('l1', 'l2', 'cosine'):
        with pytest.raises(ValueError, match=r"normalize must be true or false, got 'false'"):
            FACDContrastiveLoss(distance=distance, normalize='false')
