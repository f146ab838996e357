"""CPU smoke runs of the deployed-student recipes, as a new user starts them (issue 30).

Each family's shipped FACD recipe goes through the real entry point (``facd_basicsr/train.py`` in a subprocess) with
its own networks and patch size (SwinIR-M -> SwinIR-light at x4, LR 48 px; RRDBNet -> SRVGGNetCompact at x4), a
randomly initialised teacher file at the recipe's path, ``distill.teacher_check: false``, ``num_gpu: auto`` as
shipped (a CPU machine gets a CPU run), and only the data and the batch made tiny: 2 iterations of batch 2 on real
photos. SwinIR x2 / x3 share the networks (tests/test_options.py trains the x2 recipes on tiny widths).
"""
import os
import os.path as osp
import re

import pytest
import torch
import yaml
from basicsr.archs import build_network

from facd_study.sample_data import build_paired_set

from conftest import REPO_ROOT, run_python

TRAIN = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
FAMILIES = {'SwinIR': 'options/train_FACD_SwinIR_x4.yml', 'Compact': 'options/train_FACD_Compact_x4.yml'}
SCALE = 4


def load(path):
    with open(osp.join(REPO_ROOT, path), encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """Run folder: x4 train pairs at the recipes' GT patch size (192 px) and a validation pair of LR 32 x 32."""
    root = tmp_path_factory.mktemp('deploy')
    data = root / 'datasets' / 'deploy'
    build_paired_set(str(data / 'train'), ('astronaut', 'coffee'), SCALE, size=48 * SCALE)
    build_paired_set(str(data / 'val'), ('chelsea', ), SCALE, size=32 * SCALE, lmdb=False)
    build_paired_set(str(data / 'val_odd'), ('chelsea', ), SCALE, size=20 * SCALE, lmdb=False)
    return root


def random_teacher(work, opt):
    path = work / opt['path']['pretrain_network_t']
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save({'params': build_network(dict(opt['network_t'])).state_dict()}, path)


def smoke_args(option_file, name, val='val', *extra):
    data = 'datasets/deploy'
    force = [f'name={name}', 'train:total_iter=2', 'distill:teacher_check=false',
             f'datasets:train:dataroot_gt={data}/train/gt.lmdb', f'datasets:train:dataroot_lq={data}/train/lq_x4.lmdb',
             'datasets:train:batch_size_per_gpu=2', 'datasets:train:num_worker_per_gpu=0',
             'datasets:train:dataset_enlarge_ratio=1', f'datasets:val:dataroot_gt={data}/{val}/gt',
             f'datasets:val:dataroot_lq={data}/{val}/lq_x4', 'logger:print_freq=1', 'logger:use_tb_logger=false',
             *extra]
    return [TRAIN, '-opt', osp.join(REPO_ROOT, option_file), '--force_yml', *force]


def iteration_seconds(log_text):
    """BasicSR's per-iteration wall time, ``time (data): T (D)``, of each logged iteration."""
    return [float(t) for t in re.findall(r'time \(data\): ([0-9.]+)', log_text)]


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_shipped_recipe_trains_two_iterations_on_cpu_at_real_shapes(family, work):
    opt = load(FAMILIES[family])
    assert opt['num_gpu'] == 'auto' and opt['datasets']['train']['gt_size'] == 48 * SCALE
    random_teacher(work, opt)
    name = f'smoke_{family}'
    # SwinIR validates on an LR image of 20 x 20, not a multiple of its window of 8 (Set5 x4 has 70 x 70): the model
    # pads it as BasicSR's SwinIRModel does (without the padding the final validation crashed in window_partition)
    val = 'val_odd' if family == 'SwinIR' else 'val'
    result = run_python(smoke_args(FAMILIES[family], name, val), work, env={'CUDA_VISIBLE_DEVICES': ''})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exp = work / 'experiments' / name
    log = next(p for p in os.listdir(exp) if p.startswith('train_') and p.endswith('.log'))
    text = (exp / log).read_text()
    assert 'iter:       2' in text or 'iter: 2' in text.replace('  ', ' '), text[-2000:]
    assert re.search(r"num_gpu: 0\b", text) or "'num_gpu': 0" in text or 'num_gpu: 0' in text, 'not a CPU run'
    assert re.search(r'Validation \w+\n\s+# psnr: [0-9.]+', text), text[-2000:]  # the final validation ran
    seconds = iteration_seconds(text)
    assert len(seconds) == 2
    print(f'\n{family}: {seconds} s per iteration (batch 2)')
    student = build_network(dict(opt['network_g']))
    saved = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    student.load_state_dict(saved, strict=True)  # a plain BasicSR network, loadable as the test files load it
    adapters = torch.load(exp / 'models' / 'net_adapter_latest.pth', weights_only=True)['params']
    teacher_channels = {'SwinIR': 180, 'Compact': 64}[family]
    assert sum(1 for k, v in adapters.items() if k.endswith('weight') and v.shape[0] == teacher_channels) == 3
