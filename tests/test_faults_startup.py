"""Faults caught at start-up or at the step, in-process: option checks, non-finite steps and weights, bad images.

Also ``facd-install --uninstall`` after the user edited an installed file, and a target that is not a checkout.
"""
import hashlib
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import basicsr
import lmdb
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model

from facd_basicsr.host.data_errors import DataRecordError
from facd_basicsr.host.nonfinite import NonFiniteLossError, NonFiniteWeightsError
from facd_basicsr.host.run_guards import install_run_guards
from facd_basicsr.tools import install_into_basicsr as installer

from model_helpers import basicsr_log_messages, make_opt, photo_batches


@pytest.fixture
def checkout(tmp_path):
    """A BasicSR checkout laid out from the installed basicsr sources (as tests/test_install_into_basicsr.py)."""
    root = tmp_path / 'BasicSR'
    shutil.copytree(osp.dirname(basicsr.__file__), root / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    (root / 'basicsr' / 'version.py').write_text("__version__ = '1.4.2'\n")
    return root


def files_of(root):
    """{relative path: sha256} of every file under ``root``."""
    return {osp.relpath(osp.join(d, f), root): hashlib.sha256(open(osp.join(d, f), 'rb').read()).hexdigest()
            for d, _, names in os.walk(root) for f in names}


def test_gt_size_not_a_multiple_of_the_scale_fails_at_start_up(tmp_path):
    opt = make_opt(tmp_path)
    opt['datasets']['train']['gt_size'] = 33
    with pytest.raises(ValueError, match=r'datasets.train.gt_size must be a positive multiple of the scale 2 \(the '
                       r'LR patch is gt_size / scale pixels\), got 33 \(e.g. 32\)'):
        build_model(opt)
    opt['datasets']['train']['gt_size'] = 32
    build_model(opt)


@pytest.mark.parametrize('key, weight, message', [
    ('kd_opt', -0.5, 'train.kd_opt.loss_weight must be a number >= 0, got -0.5'),
    ('pixel_opt', -1, 'train.pixel_opt.loss_weight must be a number >= 0, got -1'),
    ('kd_opt', '1e-4', "got '1e-4' (write !!float 1e-4: a bare 1e-4 is a string in YAML)"),
])
def test_negative_or_string_loss_weights_fail_at_start_up(tmp_path, key, weight, message):
    opt = make_opt(tmp_path)
    opt['train'][key]['loss_weight'] = weight
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)').replace('.', r'\.')):
        build_model(opt)


def test_unknown_nonfinite_mode_fails_at_start_up(tmp_path):
    opt = make_opt(tmp_path)
    opt['train']['nonfinite'] = 'ignore'
    with pytest.raises(ValueError, match="train.nonfinite must be one of stop, skip, got 'ignore'"):
        build_model(opt)


def test_skip_mode_skips_the_non_finite_step_and_leaves_the_weights(tmp_path):
    opt = make_opt(tmp_path)
    opt['train']['optim_g']['lr'] = 1e30  # step 1 is finite and sends the weights to ~1e30; step 2 is NaN
    opt['train']['nonfinite'] = 'skip'
    model = build_model(opt)
    with basicsr_log_messages() as messages:
        for i, batch in enumerate(photo_batches(3)):
            batch['lq_path'] = [f'photo{i}_{j}' for j in range(4)]
            model.feed_data(batch)
            before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
            model.optimize_parameters(i + 1)
            changed = any(not torch.equal(before[k], v) for k, v in model.net_g.state_dict().items())
            assert changed == (i == 0), i
    skipped = [m for m in messages if 'step skipped (train.nonfinite: skip)' in m]
    assert len(skipped) == 2 and skipped[0].startswith('iteration 2: non-finite loss (l_pix = nan')
    assert "lq_path ['photo1_0', 'photo1_1', 'photo1_2', 'photo1_3']" in skipped[0]


def test_skip_mode_stops_a_run_after_the_limit_of_skipped_steps_in_a_row(tmp_path):
    """lr 1e30: step 1 finite, steps 2-4 non-finite; with train.nonfinite_skip_limit 3 step 4 stops the run."""
    opt = make_opt(tmp_path)
    opt['train'].update(optim_g=dict(opt['train']['optim_g'], lr=1e30), nonfinite='skip', nonfinite_skip_limit=3)
    model = build_model(opt)
    batches = photo_batches(4)
    for i, batch in enumerate(batches[:3]):
        model.feed_data(batch)
        model.optimize_parameters(i + 1)
    model.feed_data(batches[3])
    with pytest.raises(NonFiniteLossError, match=re.escape(
            'iteration 4: 3 steps in a row had a non-finite loss and were skipped (train.nonfinite_skip_limit: 3): '
            'the run has diverged. train.nonfinite: skip skipped 3 step(s) in this run.')):
        model.optimize_parameters(4)


def test_no_checkpoint_of_a_student_whose_output_is_not_finite(tmp_path):
    """lr 1e30: after step 1 the weights are finite (~1e30) but the output is not: the checkpoint is refused."""
    opt = make_opt(tmp_path)
    opt['train']['optim_g']['lr'] = 1e30
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    model = build_model(opt)
    batch = photo_batches(1)[0]
    batch['lq_path'] = ['a', 'b', 'c', 'd']
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert all(torch.isfinite(v).all() for v in model.net_g.state_dict().values())
    with pytest.raises(NonFiniteWeightsError, match=re.escape(
            "iteration 1: not saving a checkpoint whose student gives a non-finite output on the current batch "
            "lq_path ['a', 'b', 'c', 'd']")):
        model.save(0, 1)
    assert os.listdir(opt['path']['models']) == [] and os.listdir(opt['path']['training_states']) == []


def test_no_checkpoint_is_written_when_the_weights_are_not_finite(tmp_path):
    opt = make_opt(tmp_path)
    opt['train']['optim_g']['lr'] = float('inf')  # a finite loss whose update makes the weights inf / NaN
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    model = build_model(opt)
    model.feed_data(photo_batches(1)[0])
    model.optimize_parameters(1)
    with pytest.raises(NonFiniteWeightsError, match=r'iteration 1: not saving a checkpoint whose weights are not '
                       r"finite \(\d+ tensors, e.g. \['net_g.conv_first.weight'"):
        model.save(0, 1)
    assert os.listdir(opt['path']['models']) == [] and os.listdir(opt['path']['training_states']) == []


def test_unreadable_image_names_dataset_and_file(run_dir, tmp_path):
    install_run_guards()  # what the start of a run of our models does (test_host_scope: other programs get none)
    data = tmp_path / 'data'
    for name in ('gt', 'lq_x2'):
        shutil.copytree(run_dir / 'datasets' / 'sample' / 'train' / name, data / name)
    broken = data / 'lq_x2' / 'coffee.png'
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated copy
    dataset = build_dataset({
        'name': 'my_folders', 'type': 'PairedImageDataset', 'phase': 'train', 'scale': 2, 'gt_size': 32,
        'dataroot_gt': str(data / 'gt'), 'dataroot_lq': str(data / 'lq_x2'), 'io_backend': {'type': 'disk'},
        'use_hflip': True, 'use_rot': True})
    index = next(i for i, p in enumerate(dataset.paths) if p['lq_path'] == str(broken))
    with pytest.raises(DataRecordError) as info:
        dataset[index]
    assert str(info.value) == (
        f"dataset 'my_folders' (PairedImageDataset), item {index} (lq_path '{broken}', gt_path "
        f"'{data / 'gt' / 'coffee.png'}'; while reading the file {broken}): ValueError: 200 bytes that do not decode "
        'as an image (corrupt or truncated)')
    assert dataset[index - 1]['lq'].shape == (3, 16, 16)  # the other records still load


def test_key_missing_from_an_lmdb_names_dataset_key_and_lmdb(run_dir, tmp_path):
    install_run_guards()
    for name in ('gt.lmdb', 'lq_x2.lmdb'):
        shutil.copytree(run_dir / 'datasets' / 'sample' / 'train' / name, tmp_path / name)
    with lmdb.open(str(tmp_path / 'gt.lmdb'), map_size=1 << 30) as env, env.begin(write=True) as txn:
        assert txn.delete(b'rocket')  # listed in meta_info.txt, gone from the database
    dataset = build_dataset({
        'name': 'my_lmdb', 'type': 'PairedImageDataset', 'phase': 'train', 'scale': 2, 'gt_size': 32,
        'dataroot_gt': str(tmp_path / 'gt.lmdb'), 'dataroot_lq': str(tmp_path / 'lq_x2.lmdb'),
        'io_backend': {'type': 'lmdb'}, 'use_hflip': True, 'use_rot': True})
    index = next(i for i, p in enumerate(dataset.paths) if p['gt_path'] == 'rocket')
    with pytest.raises(DataRecordError, match=re.escape(
            f"dataset 'my_lmdb' (PairedImageDataset), item {index} (lq_path 'rocket', gt_path 'rocket'; while reading "
            f"the gt key 'rocket' of the LMDB {tmp_path / 'gt.lmdb'}): KeyError")):
        dataset[index]


def test_uninstall_keeps_a_user_edit_and_says_so(checkout):
    assert installer.main([str(checkout)]) == 0
    installed = files_of(checkout)
    shim = checkout / installer.SHIM
    edited = shim.read_bytes() + b'# my change\n'
    shim.write_bytes(edited)
    proc = subprocess.run([sys.executable, '-m', 'facd_basicsr.tools.install_into_basicsr', str(checkout),
                           '--uninstall'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f'{installer.SHIM} was modified since' in proc.stderr and 'nothing was touched' in proc.stderr, proc.stderr
    assert shim.read_bytes() == edited
    after = files_of(checkout)
    assert after.pop(installer.SHIM) == hashlib.sha256(edited).hexdigest()
    installed.pop(installer.SHIM)
    assert after == installed  # nothing else removed either


def test_installing_into_a_folder_that_is_not_a_checkout_fails_and_writes_nothing(tmp_path, capsys):
    (tmp_path / 'basicsr').mkdir()  # looks a little like one
    (tmp_path / 'README.md').write_text('my project\n')
    before = sorted(osp.relpath(osp.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs)
    assert installer.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f'facd-install: error: {tmp_path} is not a BasicSR checkout: basicsr/models/__init__.py is missing.' in err
    assert sorted(osp.relpath(osp.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs) == before
