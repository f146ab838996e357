"""The x4 study scale: every row's options, built on tiny networks, train a step; the sliced teacher init."""
import copy
import os.path as osp

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

from facd_basicsr.distill.gate import gate_options
from facd_basicsr.distill.teacher_init import sliced_state, teacher_block
from facd_study.ablation import TINY, X4, Row
from facd_study.study_rows import X4_GROUPS, X4_PREFIX, x4_registry

ROWS = x4_registry()


def needs_the_training_side(opt: dict) -> bool:
    """Rows of issue 32 built on options the lead's training code reads (``distill.history``,
    ``distill.init_from_teacher``): their options are tested in test_study_rows_screen.py, their training there."""
    distill = opt.get('distill', {})
    return 'history' in distill or bool(distill.get('init_from_teacher'))


def test_every_group_names_rows_of_the_registry_and_rows_share_one_protocol():
    assert all(key in ROWS for keys in X4_GROUPS.values() for key in keys)
    opts = {key: row.options(1, X4_PREFIX) for key, row in ROWS.items()}
    for key, opt in opts.items():
        assert opt['name'] == f'x4_{key}_s1' and opt['manual_seed'] == 1 and opt['scale'] == 4
        assert opt['network_g'] == opts['scratch']['network_g']  # EDSR 4 x 16, x4
        assert opt['datasets'] == opts['scratch']['datasets']
        assert opt['train']['total_iter'] == 5000 and opt['train']['scheduler'] == opts['scratch']['train']['scheduler']
        assert opt['datasets']['train']['gt_size'] == 96 and opt['datasets']['train']['batch_size_per_gpu'] == 16
        if opt['model_type'] == 'FACDModel':
            assert opt['distill']['gate_log'] is True
            gate_options(opt['distill']['gate'])  # a valid gate for its mode
            assert opt['network_t']['num_feat'] == 48 and opt['network_t']['num_block'] == 16
    selecting = [opt['distill']['gate']['mode'] for opt in opts.values() if opt['model_type'] == 'FACDModel']
    assert {'advantage_ramp', 'textured', 'teacher_better', 'always'} <= set(selecting)
    assert opts['tinit']['path']['pretrain_network_g'].endswith('net_g_sliced_for_student.pth')


def test_rows_of_two_scales_refuse_to_share_a_table():
    from facd_study.ablation import common_scale
    with pytest.raises(ValueError, match='several study scales'):
        common_scale([Row('a', 'a', 'scratch', scale=TINY), Row('b', 'b', 'scratch', scale=X4)])


def tiny(opt, tmp_path, teacher_file):
    """The row's options on tiny networks (same depths, so the same tap paths) with training paths in tmp_path."""
    opt = copy.deepcopy(opt)
    opt['network_g'].update(num_feat=4)
    opt['network_t'].update(num_feat=6)
    root = str(tmp_path / opt['name'])
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(pretrain_network_t=teacher_file, experiments_root=root, models=osp.join(root, 'models'),
                       training_states=osp.join(root, 'training_states'), log=root,
                       visualization=osp.join(root, 'visualization'))
    opt['distill']['teacher_check'] = False
    return opt


def test_each_distilling_row_builds_and_trains_a_step_on_tiny_networks(tmp_path):
    teacher_opt = dict(ROWS['kd'].options(0, X4_PREFIX)['network_t'], num_feat=6)
    torch.manual_seed(0)
    teacher_file = str(tmp_path / 'teacher.pth')
    torch.save({'params': build_network(teacher_opt).state_dict()}, teacher_file)
    batch = {'lq': torch.rand(16, 3, 6, 6), 'gt': torch.rand(16, 3, 24, 24)}
    for key, row in ROWS.items():
        opt = row.options(0, X4_PREFIX)
        if opt['model_type'] != 'FACDModel' or needs_the_training_side(opt):
            continue
        model = build_model(tiny(opt, tmp_path, teacher_file))
        model.feed_data(batch)
        model.optimize_parameters(1)
        log = model.get_current_log()
        assert all(v == v for v in log.values()), key  # finite (no NaN)
        assert osp.isfile(osp.join(model.opt['path']['log'], 'gate_log.csv')), key


def test_teacher_blocks_are_evenly_spaced():
    assert [teacher_block(i, 4, 16) for i in range(4)] == [0, 5, 10, 15]
    assert [teacher_block(i, 1, 16) for i in range(1)] == [0]


def test_sliced_state_cuts_leading_channels_and_rescales_the_residual():
    teacher = build_network({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 6, 'num_block': 4,
                             'upscale': 4, 'res_scale': 0.1})
    student = build_network({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 2,
                             'upscale': 4, 'res_scale': 1})
    t = teacher.state_dict()
    edsr = {'type': 'EDSR', 'res_scale': 1}
    state = sliced_state(t, student.state_dict(), dict(edsr, num_block=2), dict(edsr, num_block=4, res_scale=0.1))
    student.load_state_dict(state, strict=True)
    assert torch.equal(state['conv_first.weight'], t['conv_first.weight'][:4])
    assert torch.equal(state['body.1.conv1.weight'], t['body.3.conv1.weight'][:4, :4])
    assert torch.allclose(state['body.1.conv2.bias'], 0.1 * t['body.3.conv2.bias'][:4])
    assert torch.equal(state['upsample.0.weight'], t['upsample.0.weight'][:16, :4])  # 4 sub-pixels x 4 features
    assert torch.equal(state['conv_last.weight'], t['conv_last.weight'][:, :4])
    with pytest.raises(ValueError, match='cannot be cut'):
        sliced_state(student.state_dict(), teacher.state_dict(), dict(edsr, num_block=4), dict(edsr, num_block=2))


def test_every_feature_loss_of_both_scales_builds():
    from basicsr.losses import build_loss

    from facd_study.study_rows import registry
    for table in (registry(), ROWS):
        for key, row in table.items():
            feature_opt = row.options(0, 'abl')['train'].get('feature_opt')
            if feature_opt and not needs_the_training_side(row.options(0, 'abl')):
                assert build_loss(dict(feature_opt)).loss_weight == feature_opt['loss_weight'], key
