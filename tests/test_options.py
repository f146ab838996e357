"""Every option file parses and builds its networks; every reference variant trains 2 iterations on tiny data."""
import glob
import importlib.util
import os
import os.path as osp
import sys

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.options import ordered_yaml

from conftest import REPO_ROOT

OPTIONS = osp.join(REPO_ROOT, 'options')
ALL_FILES = sorted(glob.glob(osp.join(OPTIONS, '**', '*.yml'), recursive=True))


def load_generator():
    spec = importlib.util.spec_from_file_location('make_options', osp.join(REPO_ROOT, 'scripts', 'make_options.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path):
    with open(path, encoding='utf-8') as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def test_committed_reference_files_match_the_generator():
    generated = load_generator().all_files()
    for rel, text in generated.items():
        with open(osp.join(OPTIONS, rel), encoding='utf-8') as f:
            assert f.read() == text, f'{rel} differs from scripts/make_options.py: rerun it'
    on_disk = {osp.relpath(p, OPTIONS) for p in ALL_FILES if not p.startswith(osp.join(OPTIONS, 'tiny'))}
    reference = {p for p in on_disk if p.startswith(('train_', 'baselines', 'test' + os.sep))}
    assert reference == set(generated)


def test_every_option_file_parses_and_builds_its_networks():
    built = {}
    for path in ALL_FILES:
        opt = load(path)
        assert 'name' in opt and 'model_type' in opt and 'network_g' in opt, path
        for key in ('network_g', 'network_t'):
            if key in opt:
                spec = repr(sorted(opt[key].items()))
                if spec not in built:
                    built[spec] = sum(p.numel() for p in build_network(dict(opt[key])).parameters())
    assert len(built) >= 6  # EDSR/RCAN teacher and student at three scales, plus tiny nets


def shrink(net_opt):
    """Narrow channels; EDSR keeps its depth and RCAN its groups so the tap paths stay valid. Fast on CPU."""
    small = dict(net_opt, num_feat=8)
    if small['type'] == 'RCAN':
        small.update(squeeze_factor=4, num_block=1)
    return small


def tiny_run_options(path, run_dir):
    opt = load(path)
    opt['num_gpu'] = 0
    opt['name'] = 'opt_' + osp.splitext(osp.basename(path))[0]
    opt['datasets']['train'].update(dataroot_gt='datasets/sample/train/gt.lmdb', gt_size=32, num_worker_per_gpu=0,
                                    dataroot_lq='datasets/sample/train/lq_x2.lmdb', batch_size_per_gpu=4)
    opt['datasets']['val'].update(dataroot_gt='datasets/sample/val/gt', dataroot_lq='datasets/sample/val/lq_x2')
    opt['train'].update(total_iter=2)
    opt['val']['val_freq'] = 2
    opt['logger'].update(save_checkpoint_freq=2, print_freq=1, use_tb_logger=False)
    for key in ('network_g', 'network_t'):
        if key in opt:
            opt[key] = shrink(opt[key])
    teacher_file = opt['path'].get('pretrain_network_t') or opt['path'].get('pretrain_network_g')
    if teacher_file:
        os.makedirs(osp.dirname(run_dir / teacher_file), exist_ok=True)
        torch.save({'params': build_network(opt.get('network_t', opt['network_g'])).state_dict()},
                   run_dir / teacher_file)
    if 'distill' in opt:
        opt['distill']['teacher_check'] = False
    out = run_dir / f'{opt["name"]}.yml'
    with open(out, 'w') as f:
        yaml.dump(dict(opt), f, Dumper=ordered_yaml()[1])
    return out, opt['name']


X2_TRAIN = sorted(osp.join(OPTIONS, rel) for rel in load_generator().all_files() if rel.endswith('_x2.yml')
                  and osp.basename(rel).startswith('train_'))


@pytest.mark.parametrize('path', X2_TRAIN, ids=lambda p: osp.basename(p))
def test_reference_variant_trains_two_iterations(path, run_dir, monkeypatch):
    from basicsr.train import train_pipeline
    option_file, name = tiny_run_options(path, run_dir)
    monkeypatch.chdir(run_dir)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(option_file)])
    train_pipeline(str(run_dir))
    models = run_dir / 'experiments' / name / 'models'
    assert osp.isfile(models / 'net_g_2.pth') and osp.isfile(models / 'net_g_latest.pth')
    facd = 'distill' in load(option_file)
    assert osp.isfile(models / 'net_adapter_2.pth') == facd
