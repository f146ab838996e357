"""Our entry points as subprocesses: train a teacher, distil with FACD, auto-resume on CPU, test the student."""
import glob
import os.path as osp

import torch
from basicsr.archs import build_network

from conftest import REPO_ROOT, run_python

TRAIN = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
TEST = osp.join(REPO_ROOT, 'facd_basicsr', 'test.py')
TINY = osp.join(REPO_ROOT, 'options', 'tiny')
TEACHER_NAME = 'tiny_teacher_x2_EDSR_f32b4'
FACD_NAME = 'FACD_tiny_x2_EDSR_f16b2_from_f32b4'
SHORT = ['logger:print_freq=1', 'logger:save_checkpoint_freq=2', 'val:val_freq=2', 'logger:use_tb_logger=false']


def train(cwd, config, *force, flags=()):
    result = run_python([TRAIN, '-opt', osp.join(TINY, config), *flags, '--force_yml', *SHORT, *force], cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_resume_and_test_on_cpu(run_dir):
    train(run_dir, 'train_teacher_tiny_x2.yml', 'train:total_iter=2')
    assert osp.isfile(run_dir / 'experiments' / TEACHER_NAME / 'models' / 'net_g_latest.pth')

    train(run_dir, 'train_FACD_tiny_x2.yml', 'train:total_iter=4', 'distill:teacher_check=false')
    exp = run_dir / 'experiments' / FACD_NAME
    states = sorted(osp.basename(p) for p in glob.glob(str(exp / 'training_states' / '*.state')))
    assert states == ['2.state', '4.state']
    log = open(glob.glob(str(exp / 'train_*.log'))[0]).read()
    for key in ('l_pix', 'l_kd', 'l_feat', 'gate_on', 'd_pos', 'd_neg', '# psnr'):
        assert key in log, key

    train(run_dir, 'train_FACD_tiny_x2.yml', 'train:total_iter=6', 'distill:teacher_check=false',
          flags=['--auto_resume'])
    logs = sorted(glob.glob(str(exp / 'train_*.log')), key=osp.getmtime)
    assert 'iter: 4.' in open(logs[-1]).read().split('Resuming training from epoch: ')[1][:20]
    assert osp.isfile(exp / 'models' / 'net_g_6.pth') and osp.isfile(exp / 'models' / 'net_adapter_6.pth')

    # The student is a plain EDSR that BasicSR loads strictly without our package.
    student = build_network({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2,
                             'upscale': 2})
    student.load_state_dict(torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params'])

    tested = run_python([TEST, '-opt', osp.join(TINY, 'test_FACD_tiny_x2.yml')], run_dir)
    assert tested.returncode == 0, tested.stderr[-3000:]
    pngs = glob.glob(str(run_dir / 'results' / FACD_NAME / 'visualization' / 'sample_val' / '*.png'))
    assert len(pngs) == 2
