"""Every option file parses and builds its networks; every reference variant trains 2 iterations on tiny data."""
import glob
import importlib.util
import logging
import os
import os.path as osp
import sys

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.options import ordered_yaml

from conftest import REPO_ROOT
from model_helpers import basicsr_log_messages

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
    types = {opt['type'] for opt in (load(p).get(k) for p in ALL_FILES for k in ('network_g', 'network_t')) if opt}
    assert {'EDSR', 'RCAN', 'SwinIR', 'RRDBNet', 'SRVGGNetCompact'} <= types


def test_recipes_pick_the_device_they_land_on_and_test_files_need_only_the_free_sets():
    """Issue 29: ``num_gpu: auto`` everywhere; test files read Set5/Set14/B100/Urban100, Manga109 has its own."""
    generated = load_generator().all_files()
    for rel in generated:
        opt = load(osp.join(OPTIONS, rel))
        assert opt['num_gpu'] == 'auto', rel
        roots = [ds['dataroot_gt'] for ds in opt['datasets'].values()]
        if rel.startswith(osp.join('test', 'manga109') + os.sep):
            assert roots == ['datasets/Manga109/GTmod12'] and opt['name'].endswith('_Manga109'), rel
        elif rel.startswith('test' + os.sep):
            assert [r.split('/')[1] for r in roots] == ['Set5', 'Set14', 'BSDS100', 'Urban100'], rel
            assert osp.join('test', 'manga109', osp.basename(rel)) in generated
        else:
            assert not any('Manga109' in r for r in roots), rel


def shrink(net_opt):
    """Narrow channels; every network keeps the depth its tap paths need (EDSR blocks, RCAN groups, SwinIR groups,
    RRDBNet blocks, SRVGGNetCompact convolutions). Fast on CPU."""
    if net_opt['type'] == 'SwinIR':  # six heads of 2 channels; one Swin block per group
        return dict(net_opt, embed_dim=12, depths=[1] * len(net_opt['depths']))
    small = dict(net_opt, num_feat=8)
    if small['type'] == 'RCAN':
        small.update(squeeze_factor=4, num_block=1)
    if small['type'] == 'RRDBNet':
        small.update(num_grow_ch=4)
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


# every x2 variant of the paper's families; of the others (same losses), FACD and the stock-model scratch run
def _tiny_run_covers(rel):
    name = osp.basename(rel)
    return rel.endswith('_x2.yml') and name.startswith('train_') and (
        '_EDSR_' in name or '_RCAN_' in name or name.startswith(('train_FACD_', 'train_Scratch_')))


X2_TRAIN = sorted(osp.join(OPTIONS, rel) for rel in load_generator().all_files() if _tiny_run_covers(rel))


@pytest.mark.parametrize('path', X2_TRAIN, ids=lambda p: osp.basename(p))
def test_reference_variant_trains_two_iterations(path, run_dir, monkeypatch):
    from basicsr.train import train_pipeline
    option_file, name = tiny_run_options(path, run_dir)
    monkeypatch.chdir(run_dir)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(option_file)])
    # BasicSR sets its logger up once per process (the file and level of the first run): listen to it instead
    with basicsr_log_messages(logging.INFO) as messages:
        train_pipeline(str(run_dir))
    models = run_dir / 'experiments' / name / 'models'
    assert osp.isfile(models / 'net_g_2.pth') and osp.isfile(models / 'net_g_latest.pth')
    opt = load(option_file)
    with_adapters = 'distill' in opt and (opt['train'].get('feature_opt') or {}).get('type') in (
        'FACDContrastiveLoss', 'FACDInfoNCELoss', 'FeatureDistillLoss')  # FAKD compares raw maps: no adapter
    assert osp.isfile(models / 'net_adapter_2.pth') == with_adapters
    starts_from_teacher = 'distill' in opt and opt['distill'].get('init_from_teacher') is True
    assert any('Student initialised from slices of the teacher' in m for m in messages) == starts_from_teacher


def test_the_init_from_teacher_line_appears_exactly_where_the_teacher_can_be_sliced():
    """Recipes that show ``init_from_teacher`` pass the slicer's pairing check; the others fail it (one clear error).
    Where it can be sliced, FACD and its ablations start from the teacher with the measured best feature setup (last
    tap, leading-identity adapter, centred maps); the other distilling recipes keep the paper's scratch start."""
    generator = load_generator()
    from facd_basicsr.distill.teacher_init import SUPPORTED, check_pair
    assert set(generator.SLICEABLE) == set(SUPPORTED)
    shown, hidden, from_teacher = 0, 0, 0
    for rel in generator.all_files():
        opt = load(osp.join(OPTIONS, rel))
        if opt.get('model_type') != 'FACDModel':
            continue
        facd = (opt['train'].get('feature_opt') or {}).get('type') == 'FACDContrastiveLoss'
        if 'init_from_teacher' in opt['distill']:
            check_pair(opt['network_g'], opt['network_t'])
            shown += 1
            assert opt['distill']['init_from_teacher'] is facd, rel
            if facd:
                from_teacher += 1
                assert opt['distill']['teacher_taps'] == opt['distill']['student_taps'] == ['conv_after_body'], rel
                assert opt['distill']['adapter']['leading_identity'] is True, rel
                assert opt['train']['feature_opt']['centre'] is True, rel
        else:
            with pytest.raises(ValueError, match='init_from_teacher'):
                check_pair(opt['network_g'], opt['network_t'])
            hidden += 1
            assert 'leading_identity' not in opt['distill']['adapter'], rel
            assert not facd or opt['train']['feature_opt']['centre'] is False, rel
    assert shown >= 20 and hidden >= 8 and from_teacher == 2 * 3 * 3  # EDSR, RCAN x FACD variants x scales
