"""Bad configuration fails at model build with one clear message naming the key or file."""
import os.path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

from facd_basicsr.distill.teacher_check import TeacherCheckError

from model_helpers import make_opt

CONTRASTIVE = {'type': 'FACDContrastiveLoss', 'loss_weight': 0.1}


def build_error(opt, error=Exception):
    with pytest.raises(error) as info:
        build_model(opt)
    return str(info.value)


def test_missing_network_t(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE)
    del opt['network_t']
    assert 'network_t' in build_error(opt, KeyError)


def test_missing_teacher_file(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE, path={'pretrain_network_t': str(tmp_path / 'nope.pth')})
    message = build_error(opt, FileNotFoundError)
    assert 'path.pretrain_network_t' in message and 'nope.pth' in message


def test_wrong_param_key(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE, path={'param_key_t': 'params_ema'})
    message = build_error(opt, KeyError)
    assert 'params_ema' in message and 'param_key_t' in message


def test_teacher_file_of_another_architecture(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE)
    opt['network_t']['num_block'] = 3
    message = build_error(opt, ValueError)
    assert 'missing keys' in message and 'body.2' in message


def test_teacher_and_student_scales_differ(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE)
    opt['network_t']['upscale'] = 4
    teacher_file = osp.join(str(tmp_path), 'teacher_x4.pth')
    torch.save({'params': build_network(opt['network_t']).state_dict()}, teacher_file)
    opt['path']['pretrain_network_t'] = teacher_file
    message = build_error(opt, ValueError)
    assert 'scales differ' in message and 'x4' in message and 'x2' in message


def test_tap_lists_of_different_lengths(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE, student_taps=['body.0', 'conv_after_body'])
    assert 'distill.student_taps' in build_error(opt, ValueError)


def test_unknown_tap_lists_valid_names(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE, teacher_taps=['body.7', 'body.1', 'conv_after_bdy'])
    message = build_error(opt, ValueError)
    assert 'distill.teacher_taps' in message and "'body.7'" in message and 'conv_after_body' in message


def test_batch_of_one_with_contrastive_loss(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE, batch_size=1)
    assert 'batch' in build_error(opt, ValueError).lower()


def test_negatives_not_below_batch_size(tmp_path):
    opt = make_opt(tmp_path, dict(CONTRASTIVE, num_negatives=4), batch_size=4)
    assert 'num_negatives' in build_error(opt, ValueError)


def test_unknown_distill_key(tmp_path):
    opt = make_opt(tmp_path, CONTRASTIVE, gates={'mode': 'always'})
    assert "'gates'" in build_error(opt, KeyError)


def test_random_teacher_stops_training_at_start_up(tmp_path, sample_root):
    val = sample_root / 'datasets' / 'sample' / 'val'
    opt = make_opt(tmp_path, CONTRASTIVE, teacher_check=True)
    opt['datasets']['val'] = {'name': 'sample_val', 'type': 'PairedImageDataset', 'dataroot_gt': str(val / 'gt'),
                              'dataroot_lq': str(val / 'lq_x2'), 'io_backend': {'type': 'disk'}}
    message = build_error(opt, TeacherCheckError)
    assert 'bicubic' in message


def test_image_loss_as_feature_opt_is_refused_at_start_up(tmp_path):
    opt = make_opt(tmp_path, {'type': 'L1Loss', 'loss_weight': 0.1})
    message = build_error(opt, TypeError)
    assert message.startswith('train.feature_opt has type L1Loss, which is not a feature loss')
    assert 'facd_basicsr.losses.feature_loss_base.FeatureLoss' in message
    assert 'FACDContrastiveLoss, FACDInfoNCELoss, FAKDAffinityLoss, FeatureDistillLoss' in message


def test_key_the_form_does_not_read_is_refused_at_start_up(tmp_path):
    opt = make_opt(tmp_path, dict(CONTRASTIVE, type='FACDInfoNCELoss', distance='l2'))
    assert 'distance' in build_error(opt, TypeError)
