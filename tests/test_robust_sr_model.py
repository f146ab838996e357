"""RobustSRModel trains a stock SRModel option file with only ``model_type`` changed: the same checkpoints as
SRModel's, and an exact resume (subprocesses of facd_basicsr/train.py on the tiny x2 option file, CPU). FACD runs
saved by the previous layout: tests/test_faults_training.py."""
import os
import os.path as osp
import zipfile

import torch

from conftest import REPO_ROOT, run_python

TRAIN = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
SR_OPT = osp.join(REPO_ROOT, 'options', 'tiny', 'train_teacher_tiny_x2.yml')  # a stock SRModel EDSR file
FAST = ['logger:print_freq=1', 'logger:use_tb_logger=false', 'val=~', 'datasets:train:batch_size_per_gpu=4',
        'datasets:train:gt_size=32', 'logger:save_checkpoint_freq=2', 'datasets:train:dataset_enlarge_ratio=50']
ENV = {'OMP_NUM_THREADS': '1'}


def train(work, opt, name, total_iter, *force, auto_resume=False):
    args = [TRAIN, '-opt', opt, *(['--auto_resume'] if auto_resume else []), '--force_yml', *FAST, f'name={name}',
            f'train:total_iter={total_iter}', *force]
    result = run_python(args, work, ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return osp.join(work, 'experiments', name)


def records(path):
    """The zip records of a torch file, without the archive's folder name and the per-save serialization id."""
    with zipfile.ZipFile(path) as archive:
        return {name.split('/', 1)[1]: archive.read(name) for name in archive.namelist()
                if not name.endswith('.data/serialization_id')}


def net_g(folder, label):
    return torch.load(osp.join(folder, 'models', f'net_g_{label}.pth'), weights_only=True)['params']


def test_robust_sr_model_writes_srmodel_checkpoints_and_resumes_exactly(work):
    """SRModel 4 iterations straight; RobustSRModel 2, then --auto_resume to 4: the same records at 2, the same
    weights at 4 (a straight RobustSRModel run equals SRModel's, and its resume equals its straight run)."""
    stock = train(work, SR_OPT, 'stock', 4)
    robust = train(work, SR_OPT, 'robust', 2, 'model_type=RobustSRModel')
    name = 'net_g_2.pth'  # the same weights, written in the same format (keys, dtypes, metadata, tensor bytes)
    assert records(osp.join(stock, 'models', name)) == records(osp.join(robust, 'models', name))
    state = torch.load(osp.join(robust, 'training_states', '2.state'), weights_only=True)
    assert set(state) == {'epoch', 'iter', 'optimizers', 'schedulers', 'run_state'}  # BasicSR's keys + ours
    assert not osp.exists(osp.join(robust, '.run.lock'))  # released at the end of the run
    train(work, SR_OPT, 'robust', 4, 'model_type=RobustSRModel', auto_resume=True)
    resumed, straight = net_g(robust, 4), net_g(stock, 4)
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert sorted(os.listdir(osp.join(robust, 'models'))) == sorted(os.listdir(osp.join(stock, 'models')))
