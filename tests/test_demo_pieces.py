"""The machinery of make demo / make mini-table: data builder, option overrides, run bookkeeping, scores, pictures."""
import argparse
import datetime
import importlib.util
import json
import math
import os
import os.path as osp
import shutil
import time

import cv2
import lmdb
import numpy as np
import pytest
import torch
from basicsr.data.paired_image_dataset import PairedImageDataset

from facd_basicsr.tools.bicubic import bicubic_lr
from facd_basicsr.tools.scoring import upscale
from facd_study.ablation import Row, results_table, run_gate_on
from facd_study.demo_data import build_train_tiles, cut_tiles
from facd_study.experiment import (DELETE, INPUTS_FILE, TrainJob, _next_ready, forget_other_states, is_trained,
                                   last_logged_iter, latest_weights, load_options, restore_run, restore_snapshot,
                                   run_inputs, run_jobs, snapshot_run, with_overrides, write_options)
from facd_study.figures import LABEL_HEIGHT, PANEL_GAP, bar_chart, comparison_image, pick_crop
from facd_study.sample_data import load_photo, make_gt
from facd_study.scoring import format_mean_std, markdown_table, mean_std
from facd_study.study_rows import registry

from conftest import REPO_ROOT, TINY_FACD_OPT

DEMO_FACD = osp.join(REPO_ROOT, 'options', 'demo', 'train_FACD_demo_x2.yml')


def test_train_tiles_are_aligned_pairs_in_lmdb(tmp_path):
    count = build_train_tiles(str(tmp_path), ['chelsea'], scale=2, tile=96)
    gt_photo = make_gt(load_photo('chelsea'), 2, None)  # 300 x 451 -> 300 x 450: 3 x 4 tiles at most
    assert 1 <= count <= 12
    with lmdb.open(str(tmp_path / 'gt.lmdb'), readonly=True, lock=False) as env, env.begin() as txn:
        keys = sorted(k.decode() for k, _ in txn.cursor())
    assert keys == [f'chelsea_{k:03d}' for k in range(count)]
    meta = open(tmp_path / 'lq_x2.lmdb' / 'meta_info.txt').read().split('\n')
    assert meta[0] == 'chelsea_000.png (48,48,3) 1'
    # the first kept tile is an exact cut of the whole GT photo and of its bicubic LR
    gt_tile = cv2.imread(str(tmp_path / 'gt' / 'chelsea_000.png'))
    lq_tile = cv2.imread(str(tmp_path / 'lq_x2' / 'chelsea_000.png'))
    lq_photo = bicubic_lr(gt_photo, 2)
    hits = [(t, x) for t in range(0, 205, 96) for x in range(0, 355, 96)
            if np.array_equal(gt_photo[t:t + 96, x:x + 96], gt_tile)]
    assert len(hits) == 1
    top, left = hits[0]
    np.testing.assert_array_equal(lq_tile, lq_photo[top // 2:top // 2 + 48, left // 2:left // 2 + 48])

    dataset = PairedImageDataset({
        'dataroot_gt': str(tmp_path / 'gt.lmdb'), 'dataroot_lq': str(tmp_path / 'lq_x2.lmdb'),
        'io_backend': {'type': 'lmdb'}, 'phase': 'train', 'scale': 2, 'gt_size': 48, 'use_hflip': True,
        'use_rot': True})
    item = dataset[0]
    assert len(dataset) == count and item['gt'].shape == (3, 48, 48) and item['lq'].shape == (3, 24, 24)


def test_flat_tiles_are_dropped_and_keys_stay_dense():
    gt = np.zeros((8, 12, 3), np.uint8)
    gt[:, 4:8] = np.random.default_rng(0).integers(0, 255, (8, 4, 3))  # only the middle 4 x 4 tiles have detail
    gts, lqs = cut_tiles('x', gt, gt[::2, ::2], scale=2, tile=4, min_std=8.)
    assert sorted(gts) == ['x_000', 'x_001']
    np.testing.assert_array_equal(gts['x_000'], gt[0:4, 4:8])
    np.testing.assert_array_equal(gts['x_001'], gt[4:8, 4:8])
    np.testing.assert_array_equal(lqs['x_001'], gt[::2, ::2][2:4, 2:4])


def test_overrides_copy_set_create_replace_and_delete():
    base = load_options(DEMO_FACD)
    assert base['train']['optim_g']['lr'] == 5e-4 and base['path']['resume_state'] is None
    new = with_overrides(base, {'train.feature_opt.loss_weight': 0.1, 'distill.gate': {'mode': 'always'},
                                'train.kd_opt': DELETE, 'a.b': 1})
    assert new['train']['feature_opt'] == dict(base['train']['feature_opt'], loss_weight=0.1)
    assert new['distill']['gate'] == {'mode': 'always'} and 'kd_opt' not in new['train'] and new['a'] == {'b': 1}
    assert base['train']['feature_opt']['loss_weight'] == 0.3 and 'kd_opt' in base['train']  # untouched
    with pytest.raises(KeyError, match='no such key'):
        with_overrides(base, {'train.no_such_opt': DELETE})
    with pytest.raises(KeyError, match='not a mapping'):
        with_overrides(base, {'name.x': 1})


def test_written_options_read_back_equal(tmp_path):
    opt = with_overrides(load_options(DEMO_FACD), {'val.val_freq': 1e9})
    assert load_options(write_options(opt, str(tmp_path / 'sub' / 'o.yml'))) == opt


def test_last_logged_iter_reads_basicsr_progress_lines(tmp_path):
    log = tmp_path / 'log.txt'
    assert last_logged_iter(str(log)) == 0
    log.write_text('INFO: Start training from epoch: 0, iter: 0\n'
                   'INFO: [demo_..][epoch:  0, iter:     950, lr:(1.0e-04,)] [eta: 0:01:00] l_pix: 1e-2\n'
                   'INFO: [demo_..][epoch:  1, iter:   1,500, lr:(1.0e-06,)] [eta: 0:00:00] l_pix: 1e-2\n')
    assert last_logged_iter(str(log)) == 1500


def test_run_gate_on_reads_the_newest_basicsr_log_of_the_run(tmp_path):
    folder = tmp_path / 'experiments' / 'run_a'
    assert math.isnan(run_gate_on('run_a', str(tmp_path)))  # no experiment folder
    folder.mkdir(parents=True)
    first = '[iter: 10] l_pix: 1e-2 gate_on: 2.5000e-01 l_kd: 1\n[iter: 20] l_pix: 1e-2 gate_on: 5.0000e-01 l_kd: 1\n'
    (folder / 'train_run_a_20261125_100000.log').write_text(first)
    assert run_gate_on('run_a', str(tmp_path)) == 0.5  # the last value in the log
    (folder / 'train_run_a_20261125_110000.log').write_text('[iter: 30] l_pix: 1e-2 gate_on: 1.0000e+00\n')
    assert run_gate_on('run_a', str(tmp_path)) == 1.0  # the newest log (a later or resumed run)
    (folder / 'train_run_a_20261125_120000.log').write_text('[iter: 30] l_pix: 1e-2\n')  # no gate: not FACDModel
    assert math.isnan(run_gate_on('run_a', str(tmp_path)))


def test_run_jobs_trains_then_reuses(run_dir):
    opt = with_overrides(load_options(osp.join(REPO_ROOT, 'options', 'tiny', 'train_teacher_tiny_x2.yml')), {
        'name': 'pieces_run', 'train.total_iter': 3, 'logger.print_freq': 1, 'logger.use_tb_logger': False,
        'val': DELETE})
    job = TrainJob(opt, str(run_dir / 'gen' / 'o.yml'), str(run_dir / 'logs' / 'o.log'))
    finished = []  # what on_finish saw: the weights were there when it was called
    seen = lambda j: finished.append((j.name, osp.isfile(latest_weights(j.name, str(run_dir)))))  # noqa: E731
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, on_finish=seen) == ['pieces_run']
    assert finished == [('pieces_run', True)]
    assert osp.isfile(latest_weights('pieces_run', str(run_dir))) and is_trained(opt, str(run_dir))
    assert last_logged_iter(job.log_path) == 3
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, on_finish=seen) == []  # same options: reused
    assert len(finished) == 1  # a reused run is not finished again
    assert not is_trained(with_overrides(opt, {'train.total_iter': 4}), str(run_dir))


def test_mean_std_and_table_on_known_numbers():
    mean, std = mean_std([1., 2., 3., 4.])
    assert mean == 2.5 and math.isclose(std, math.sqrt(5 / 3))
    assert mean_std([7.]) == (7., 0.)
    assert format_mean_std([27.8, 27.9, 28.0], 3) == '27.900 ± 0.100'
    assert markdown_table(['row', 'PSNR'], [['a', '1.0']]) == '| row | PSNR |\n|:---|---:|\n| a | 1.0 |\n'


def test_upscale_keeps_colour_order_and_size():
    lr = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = upscale(torch.nn.Upsample(scale_factor=2, mode='nearest'), lr)
    np.testing.assert_array_equal(out, lr.repeat(2, 0).repeat(2, 1))


def test_comparison_image_layout_and_pixels():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(5)]
    panels = [(f'method {i}', img) for i, img in enumerate(images)]
    out = comparison_image(panels, (3, 5, 16), zoom=3)
    assert out.shape == (LABEL_HEIGHT + 48, 5 * 48 + 4 * PANEL_GAP, 3)
    second = out[LABEL_HEIGHT:, 48 + PANEL_GAP:2 * 48 + PANEL_GAP]
    np.testing.assert_array_equal(second, images[1][3:19, 5:21].repeat(3, 0).repeat(3, 1))
    assert (out[:LABEL_HEIGHT] < 128).any()  # a label was drawn
    with pytest.raises(ValueError, match='differ in size'):
        comparison_image([('a', images[0]), ('b', images[0][:20])], (0, 0, 8))


def test_pick_crop_finds_the_detailed_window():
    img = np.full((64, 64, 3), 128, np.uint8)
    img[32:48, 16:32] = np.random.default_rng(3).integers(0, 256, (16, 16, 3))
    assert pick_crop(img, 16) == (32, 16)


def test_bar_chart_writes_a_png(tmp_path):
    path = bar_chart(['scratch', 'KD', 'FACD'], [27.80, 27.86, 27.88], [0.01, 0.02, 0.0], str(tmp_path / 'b.png'),
                     'test', reference=27.80)
    img = cv2.imread(path)
    assert img is not None and img.shape[1] == 700


def _record(seed, select_psnr, report_psnr, gate=float('nan')):
    scores = {'select': {'psnr': select_psnr, 'ssim': 0.9}, 'report': {'psnr': report_psnr, 'ssim': 0.8}}
    return {'options': {'manual_seed': seed}, 'scores': scores, 'gate_on': gate}


def test_results_table_pairs_seeds_against_scratch():
    rows = [Row('scratch', 'scratch', 'scratch'), Row('kd', 'KD', 'facd')]
    records = {'scratch': [_record(0, 27.0, 30.0), _record(1, 27.2, 30.2)],
               'kd': [_record(1, 27.4, 30.1, 1.0), _record(0, 27.1, 30.1, 0.5)]}
    lines = results_table(rows, records).splitlines()
    assert lines[2] == ('| scratch | 2 | 27.100 ± 0.141 | 0.9000 ± 0.0000 | — | 30.100 ± 0.141 | 0.8000 ± 0.0000 | — '
                        '| — |')
    # deltas pair seed with seed: select +0.1 and +0.2, report +0.1 and -0.1
    assert lines[3] == ('| KD | 2 | 27.250 ± 0.212 | 0.9000 ± 0.0000 | 0.150 ± 0.071 | 30.100 ± 0.000 | '
                        '0.8000 ± 0.0000 | 0.000 ± 0.141 | 75 % |')


def test_mini_table_facd_row_is_the_option_file_default():
    spec = importlib.util.spec_from_file_location('mini_table', osp.join(REPO_ROOT, 'scripts', 'mini_table.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = registry()
    assert all(key in rows for key in module.MINI_TABLE_ROWS)
    assert module.MINI_TABLE_ROWS[-1] == 'facd_l2_w3e-1_teacher_better'
    generated = rows[module.MINI_TABLE_ROWS[-1]].options(3, 'x')
    assert (generated['name'], generated['manual_seed']) == ('x_facd_l2_w3e-1_teacher_better_s3', 3)
    assert with_overrides(generated, {'name': DELETE, 'manual_seed': DELETE}) == with_overrides(
        load_options(DEMO_FACD), {'name': DELETE, 'manual_seed': DELETE})


def test_jobs_wait_for_their_after_run():
    def job(name, after=''):
        return TrainJob({'name': name, 'train': {'total_iter': 1}}, 'o.yml', 'o.log', after=after)

    pending = [job('teacher'), job('facd', after='teacher'), job('scratch'), job('kd', after='teacher')]
    running = {0: _next_ready(pending, {})}
    running[1] = _next_ready(pending, running)
    assert [j.name for j in running.values()] == ['teacher', 'scratch']
    assert _next_ready(pending, running) is None  # both remaining runs need the running teacher
    del running[0]
    assert _next_ready(pending, running).name == 'facd'
    with pytest.raises(ValueError, match='wait for each other'):
        _next_ready([job('a', after='b'), job('b', after='a')], {})


def test_run_jobs_starts_nothing_after_start_before_and_names_what_it_left(run_dir, capsys):
    opt = with_overrides(load_options(osp.join(REPO_ROOT, 'options', 'tiny', 'train_teacher_tiny_x2.yml')), {
        'name': 'pieces_late', 'train.total_iter': 3, 'logger.use_tb_logger': False, 'val': DELETE})
    job = TrainJob(opt, str(run_dir / 'gen' / 'late.yml'), str(run_dir / 'logs' / 'late.log'))
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, start_before=time.time() - 1) == []
    assert job.process is None and not osp.exists(run_dir / 'experiments' / 'pieces_late')
    assert 'Not started (--start-before): 1 run(s), pieces_late' in capsys.readouterr().out


def test_a_cached_run_is_restored_instead_of_trained(run_dir, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp('cache'))
    opt = with_overrides(load_options(osp.join(REPO_ROOT, 'options', 'tiny', 'train_teacher_tiny_x2.yml')), {
        'name': 'cached_run', 'train.total_iter': 2, 'logger.print_freq': 1, 'logger.use_tb_logger': False,
        'val': DELETE})
    job = TrainJob(opt, str(run_dir / 'gen' / 'c.yml'), str(run_dir / 'logs' / 'c.log'))
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, cache=cache) == ['cached_run']
    weights = open(latest_weights('cached_run', str(run_dir)), 'rb').read()
    shutil.rmtree(run_dir / 'experiments')  # a new work tree
    assert not restore_run(with_overrides(opt, {'train.total_iter': 3}), str(run_dir), cache)  # other options
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, cache=cache) == []  # restored, not trained
    assert open(latest_weights('cached_run', str(run_dir)), 'rb').read() == weights
    assert is_trained(opt, str(run_dir))


def test_a_run_in_progress_continues_from_its_cached_checkpoint_in_a_new_work_tree(run_dir, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp('cache'))
    opt = with_overrides(load_options(osp.join(REPO_ROOT, 'options', 'tiny', 'train_teacher_tiny_x2.yml')), {
        'name': 'snap_run', 'train.total_iter': 4, 'logger.print_freq': 1, 'logger.use_tb_logger': False,
        'logger.save_checkpoint_freq': 2, 'val': DELETE})
    short = with_overrides(opt, {'train.total_iter': 2})  # the first chunk: stops at the iteration-2 checkpoint
    chunk = TrainJob(short, str(run_dir / 'gen' / 's.yml'), str(run_dir / 'logs' / 's.log'))
    run_jobs([chunk], root=str(run_dir), poll_s=0.2)
    job = TrainJob(opt, str(run_dir / 'gen' / 'o.yml'), str(run_dir / 'logs' / 'o.log'))
    snapshot_run(job, str(run_dir), cache)  # as the driver does while a run is going
    shutil.rmtree(run_dir / 'experiments')  # a new work tree
    assert restore_snapshot(job, str(run_dir), cache)
    assert not restore_snapshot(job, str(run_dir), cache)  # a state is there now: nothing to restore
    run_jobs([job], root=str(run_dir), poll_s=0.2)
    with open(job.log_path) as f:
        log = f.read()
    assert 'Resuming training from epoch' in log and 'iter: 2' in log.replace(',', '')
    assert is_trained(opt, str(run_dir))


def save_random_teacher(opt, root, seed):
    """A teacher file at the option file's ``path.pretrain_network_t`` under ``root``: random weights of ``seed``."""
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    path = osp.join(str(root), opt['path']['pretrain_network_t'])
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save({'params': build_network(dict(opt['network_t'])).state_dict()}, path)


def test_a_teacher_retrained_under_the_same_path_trains_its_students_again(run_dir, tmp_path_factory):
    """Same options, other teacher bytes: neither the finished run, nor its cached copy, nor a checkpoint of a run
    in progress stands in for the run of the new teacher; the cache then holds the new run."""
    cache = str(tmp_path_factory.mktemp('cache'))
    opt = with_overrides(load_options(TINY_FACD_OPT), {
        'name': 'kd_run', 'train.total_iter': 2, 'logger.print_freq': 1, 'logger.use_tb_logger': False,
        'logger.save_checkpoint_freq': 2, 'distill.teacher_check': False, 'val': DELETE})
    save_random_teacher(opt, run_dir, 0)
    job = TrainJob(opt, str(run_dir / 'gen' / 'k.yml'), str(run_dir / 'logs' / 'k.log'))
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, cache=cache) == ['kd_run']
    first = open(latest_weights('kd_run', str(run_dir)), 'rb').read()
    assert is_trained(opt, str(run_dir)) and osp.isfile(osp.join(cache, 'kd_run', INPUTS_FILE))
    snapshot_run(job, str(run_dir), cache)  # the iteration-2 checkpoint, as if the run were still going

    save_random_teacher(opt, run_dir, 1)  # retrained, same path
    assert not is_trained(opt, str(run_dir))
    shutil.rmtree(run_dir / 'experiments' / 'kd_run')  # a new work tree, but the teacher file is kept
    assert not restore_run(opt, str(run_dir), cache) and not restore_snapshot(job, str(run_dir), cache)
    assert run_jobs([job], root=str(run_dir), poll_s=0.2, cache=cache) == ['kd_run']  # trained, not restored
    with open(job.log_path) as f:
        assert 'Resuming training' not in f.read()
    assert open(latest_weights('kd_run', str(run_dir)), 'rb').read() != first
    with open(osp.join(cache, 'kd_run', INPUTS_FILE)) as f:
        assert json.load(f) == run_inputs(opt, str(run_dir))  # the cache now holds the new teacher's run


def test_states_of_a_start_with_another_teacher_are_forgotten_before_resuming(run_dir):
    """An interrupted run whose teacher was retrained since: --auto_resume would stop at FACDModel's 'teacher file
    changed' error, so the driver drops those states and starts the run again."""
    opt = with_overrides(load_options(TINY_FACD_OPT), {'name': 'cut_run', 'train.total_iter': 4})
    save_random_teacher(opt, run_dir, 0)
    job = TrainJob(opt, str(run_dir / 'gen' / 'c.yml'), str(run_dir / 'logs' / 'c.log'))
    write_options(opt, job.opt_path)
    with open(job.opt_path + '.inputs.json', 'w') as f:
        json.dump(run_inputs(opt, str(run_dir)), f)  # what the last start wrote
    states = run_dir / 'experiments' / 'cut_run' / 'training_states'
    states.mkdir(parents=True)
    (states / '2.state').write_bytes(b'state')
    job.inputs = run_inputs(opt, str(run_dir))
    forget_other_states(job, str(run_dir))
    assert (states / '2.state').is_file()  # same options, same teacher: resume
    save_random_teacher(opt, run_dir, 1)
    job.inputs = run_inputs(opt, str(run_dir))
    forget_other_states(job, str(run_dir))
    assert not states.exists()
    states.mkdir(parents=True)  # states of a start that left no record (its results/ folder is gone)
    (states / '2.state').write_bytes(b'state')
    os.remove(job.opt_path)
    forget_other_states(job, str(run_dir))
    assert not states.exists()  # starts from a teacher: cannot be vouched for


def test_a_cache_entry_without_inputs_is_completed_and_a_missing_or_home_path_is_handled(tmp_path, monkeypatch):
    from facd_study.experiment import cache_run, file_digest, same_inputs, write_inputs
    root, cache = tmp_path / 'tree', tmp_path / 'cache'
    for folder in (root / 'experiments' / 'run', cache / 'run'):
        (folder / 'models').mkdir(parents=True)
        (folder / 'models' / 'net_g_latest.pth').write_bytes(b'weights')
        (folder / 'run_options.yml').write_text('name: run\n')
    write_inputs({'pretrain_network_t': 'a' * 64}, str(root / 'experiments' / 'run'))
    cache_run('run', str(root), str(cache))  # same weights and options, but the cache lacks the inputs record
    assert json.loads((cache / 'run' / INPUTS_FILE).read_text()) == {'pretrain_network_t': 'a' * 64}
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'teacher.pth').write_bytes(b'teacher')
    inputs = run_inputs({'path': {'pretrain_network_t': '~/teacher.pth', 'pretrain_network_g': None}}, str(root))
    assert inputs == {'pretrain_network_t': file_digest(str(tmp_path / 'teacher.pth'))} and all(inputs.values())
    missing = run_inputs({'path': {'pretrain_network_t': 'no/such.pth'}}, str(root))
    assert not same_inputs(missing, missing)  # a missing weight file vouches for nothing
    assert same_inputs(None, {}) and not same_inputs(None, inputs)  # an old run counts only without weight files


def test_study_start_before_takes_the_nearest_occurrence_of_the_time():
    """A time a few minutes past means "start nothing now", never "no limit until tomorrow"."""
    spec = importlib.util.spec_from_file_location('study', osp.join(REPO_ROOT, 'scripts', 'study.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    now = datetime.datetime(2026, 12, 7, 23, 41)
    at = lambda text: datetime.datetime.fromtimestamp(module.clock_time(text, now))  # noqa: E731
    assert at('23:40') == datetime.datetime(2026, 12, 7, 23, 40)  # just past: nothing starts
    assert at('23:50') == datetime.datetime(2026, 12, 7, 23, 50)
    assert at('01:30') == datetime.datetime(2026, 12, 8, 1, 30)  # after midnight
    assert at('12:00') == datetime.datetime(2026, 12, 7, 12, 0)
    after_midnight = datetime.datetime.fromtimestamp(module.clock_time('23:50', datetime.datetime(2026, 12, 8, 0, 20)))
    assert after_midnight == datetime.datetime(2026, 12, 7, 23, 50)  # yesterday's 23:50: past
    with pytest.raises(argparse.ArgumentTypeError, match='24:00'):
        module.clock_time('24:00', now)
