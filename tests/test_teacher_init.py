"""``distill.init_from_teacher``: the student starts from the right slices of the teacher, or fails at start-up."""
import pytest
import torch
from basicsr.archs import build_network
from test_facd_model import build

from facd_basicsr.distill.teacher_init import sliced_state, teacher_block

from model_helpers import STUDENT, TEACHER, make_opt

RCAN_T = {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_group': 4, 'num_block': 5,
          'squeeze_factor': 4, 'upscale': 2, 'res_scale': 1, 'img_range': 255., 'rgb_mean': [0.4488, 0.4371, 0.404]}
RCAN_S = dict(RCAN_T, num_group=2, num_block=2)


def test_evenly_spaced_blocks_keep_first_and_last():
    assert [teacher_block(i, 6, 20) for i in range(6)] == [0, 4, 8, 11, 15, 19]
    assert [teacher_block(i, 4, 16) for i in range(4)] == [0, 5, 10, 15]
    assert teacher_block(0, 1, 8) == 0


def test_edsr_student_takes_leading_slices_of_spaced_blocks_with_res_scale_ratio():
    teacher_opt = dict(TEACHER, num_feat=8, num_block=4, res_scale=0.1)
    student_opt = dict(STUDENT, num_feat=4, num_block=2, res_scale=1)
    torch.manual_seed(0)
    teacher = build_network(teacher_opt).state_dict()
    student = build_network(student_opt).state_dict()
    state = sliced_state(teacher, student, student_opt, teacher_opt)
    torch.testing.assert_close(state['body.1.conv1.weight'], teacher['body.3.conv1.weight'][:4, :4])
    torch.testing.assert_close(state['body.1.conv2.weight'], teacher['body.3.conv2.weight'][:4, :4] * 0.1)
    torch.testing.assert_close(state['body.0.conv2.bias'], teacher['body.0.conv2.bias'][:4] * 0.1)
    torch.testing.assert_close(state['upsample.0.weight'], teacher['upsample.0.weight'][:16, :4])
    torch.testing.assert_close(state['conv_last.weight'], teacher['conv_last.weight'][:, :4])
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in student.items()}


def test_rcan_student_takes_spaced_groups_and_blocks():
    torch.manual_seed(0)
    teacher = build_network(RCAN_T).state_dict()
    student = build_network(RCAN_S).state_dict()
    state = sliced_state(teacher, student, RCAN_S, RCAN_T)
    key = 'body.1.residual_group.1.rcab.3.attention.1.weight'
    torch.testing.assert_close(state[key], teacher['body.3.residual_group.4.rcab.3.attention.1.weight'])
    torch.testing.assert_close(state['body.1.conv.weight'], teacher['body.3.conv.weight'])
    torch.testing.assert_close(state['body.0.residual_group.0.rcab.0.bias'],
                               teacher['body.0.residual_group.0.rcab.0.bias'])


def test_model_initialises_the_student_from_the_teacher(tmp_path):
    model = build(make_opt(tmp_path, None, init_from_teacher=True))
    student = model.get_bare_model(model.net_g).state_dict()
    teacher = model.net_t.state_dict()
    torch.testing.assert_close(student['conv_first.weight'], teacher['conv_first.weight'][:4])
    torch.testing.assert_close(student['body.0.conv1.weight'], teacher['body.0.conv1.weight'][:4, :4])


def test_shape_mismatch_fails_at_start_up_naming_both_shapes(tmp_path):
    opt = make_opt(tmp_path, None, init_from_teacher=True)
    opt['network_g'] = dict(STUDENT, num_feat=16)  # wider than the teacher's 8 channels
    with pytest.raises(ValueError, match=r'student tensor conv_first.weight \(16, 3, 3, 3\) cannot be cut out of '
                       r'teacher tensor conv_first.weight \(8, 3, 3, 3\)'):
        build(opt)


def test_different_architectures_are_refused(tmp_path):
    with pytest.raises(ValueError, match='network_g EDSR and network_t RCAN'):
        sliced_state({}, {}, STUDENT, RCAN_T)


@pytest.mark.parametrize('value', ['true', 1])
def test_init_from_teacher_must_be_a_boolean(tmp_path, value):
    with pytest.raises(ValueError, match='distill.init_from_teacher must be true or false'):
        build(make_opt(tmp_path, None, init_from_teacher=value))


def test_init_from_teacher_and_a_pretrained_student_conflict(tmp_path):
    student_file = str(tmp_path / 'student.pth')
    torch.save({'params': build_network(STUDENT).state_dict()}, student_file)
    opt = make_opt(tmp_path, None, init_from_teacher=True, path={'pretrain_network_g': student_file})
    with pytest.raises(ValueError, match='keep one of them'):
        build(opt)


def test_a_teacher_initialised_run_resumes_bit_exact(work):
    """facd_basicsr/train.py, tiny FACD file with ``init_from_teacher``: 2 + 2 iterations (--auto_resume) = 4
    straight. On resume BasicSR points ``path.pretrain_network_g`` at the checkpoint; that is not a second start."""
    from test_faults_training import assert_same_weights, net_g, train
    init = ['distill:init_from_teacher=true', 'logger:save_checkpoint_freq=2', 'val=~']
    straight = train(work, 'tinit_straight', 4, *init)
    assert 'Student initialised from slices of the teacher' in straight.stdout + straight.stderr
    train(work, 'tinit_resumed', 2, *init)
    resumed = train(work, 'tinit_resumed', 4, *init, auto_resume=True)
    assert 'Student initialised from slices of the teacher' not in resumed.stdout + resumed.stderr
    assert_same_weights(net_g(work, 'tinit_resumed', 4), net_g(work, 'tinit_straight', 4))
