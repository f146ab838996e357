"""Issue 32, harness side: the x2 screen and x4 confirmation rows, the paired 95 % t-interval and the "beats" rule,
the worst photo and colour offset columns, and the final student weights kept next to their records."""
import dataclasses
import glob
import json
import math
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network

import facd_study.ablation as ablation
from facd_basicsr.host.checkpoint import fingerprint
from facd_basicsr.tools import evaluate
from facd_basicsr.tools.bicubic import bicubic_lr
from facd_study.ablation import X4, Row, present_teacher, restore_teacher, score_rows, score_run, stored_record
from facd_study.experiment import is_trained, latest_weights, load_options, restore_kept, write_options
from facd_study.kept_weights import keep_weights, kept_path
from facd_study.negative_distance import negative_distances, random_lr_crops
from facd_study.paired import (LOSES, NO, YES, colour_offset, paired_interval, t_quantile, t_two_sided, verdict,
                               worst_photo)
from facd_study.sample_data import load_photo
from facd_study.scoring import colour_offsets, read_pairs
from facd_study.study_rows import (GROUP_VERSUS, GROUPS, HISTORY, HISTORY_WEIGHTS, X4_GROUPS, X4_HISTORY_WEIGHTS,
                                   X4_INIT_FACD, X4_PREFIX, registry, x4_registry)
from facd_study.study_table import below_bicubic_cell, bicubic_photo_scores, decision_table

ROWS, X4_ROWS = registry(), x4_registry()


# ------------------------------------------------------------------------------------------- the t-interval
@pytest.mark.parametrize('df, value', [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantile_matches_the_printed_tables(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)


def test_t_distribution_limits_and_other_levels():
    assert t_two_sided(0., 5) == 0. and t_two_sided(1e9, 5) == pytest.approx(1.)
    assert t_quantile(0.95, 4) == pytest.approx(2.132, abs=5e-4)  # one-sided 5 % / two-sided 90 %
    assert t_quantile(0.975, 200) == pytest.approx(1.972, abs=5e-4)  # towards the normal 1.960
    with pytest.raises(ValueError, match='positive integer'):
        t_two_sided(1., 0)
    with pytest.raises(ValueError, match='p must lie'):
        t_quantile(0.4, 3)


def test_paired_interval_is_mean_plus_minus_t_times_the_standard_error():
    mean, low, high = paired_interval([0.1, 0.2, 0.3])
    half = 4.3027 * 0.1 / math.sqrt(3)  # sample std 0.1, n 3, t(0.975, 2)
    assert mean == pytest.approx(0.2) and low == pytest.approx(0.2 - half, abs=1e-4)
    assert high == pytest.approx(0.2 + half, abs=1e-4)
    assert math.isnan(paired_interval([0.5])[1])


# ------------------------------------------------------------------------------------- hand-made records
def record(seed, select, report, photos=None, offsets=None, gate=float('nan')):
    """A run record: mean PSNR per split; ``photos`` {stem: report PSNR}; ``offsets`` {stem: (r, g, b)}."""
    run = {
        'name': f'run_s{seed}',
        'options': {
            'manual_seed': seed
        },
        'gate_on': gate,
        'scores': {
            'select': {
                'psnr': select,
                'ssim': 0.8
            },
            'report': {
                'psnr': report,
                'ssim': 0.7
            }
        }
    }
    if photos is not None:
        run['per_image'] = {'select': {}, 'report': {stem: {'psnr': v, 'ssim': 0.7} for stem, v in photos.items()}}
    if offsets is not None:
        run['colour_offset'] = {'report': {s: dict(zip('rgb', v)) for s, v in offsets.items()}}
    return run


def test_beats_needs_the_select_interval_above_zero_and_the_report_mean_of_the_same_sign():
    assert verdict([0.10, 0.12, 0.11], [0.05, -0.01, 0.02]) == YES  # interval > 0, report mean +0.02
    assert verdict([0.10, 0.12, 0.11], [-0.05, 0.01, -0.02]) == NO  # report disagrees
    assert verdict([0.30, -0.05, 0.20], [0.3, 0.3, 0.3]) == NO  # mean +0.15, but the interval holds 0
    assert verdict([-0.10, -0.12, -0.11], [-0.02, -0.01, -0.03]) == LOSES
    assert verdict([0.2], [0.2]) == NO  # one seed: no interval, no claim


def test_decision_table_gives_intervals_the_verdict_worst_photo_and_colour_offset():
    rows = [Row('kd', 'KD', 'facd'), Row('facd', 'FACD', 'facd')]
    kd = [
        record(s, 30.0 + s, 26.0, {
            'left': 26.0,
            'right': 26.0
        }, {
            'left': (0, 0, 0),
            'right': (0, 0, 0)
        }) for s in range(3)
    ]
    facd = [
        record(s, 30.1 + s + 0.01 * s, 26.02, {
            'left': 26.2 - 0.1 * s,
            'right': 25.9 + 0.05 * s
        }, {
            'left': (1., -2., 0.5),
            'right': (3., 0., -0.5)
        }, 1.0) for s in range(3)
    ]
    lines = decision_table(rows, {'kd': kd, 'facd': facd}, ('kd', )).splitlines()
    assert lines[0].startswith('| student (EDSR 2x16, x2) | n | select PSNR-Y |')
    assert '| beats kd? | worst report photo vs kd | report colour offset R / G / B |' in lines[0]
    # select deltas 0.10 / 0.11 / 0.12: +0.110 ± 4.303 * 0.01 / sqrt(3); report +0.02 each seed
    # right photo: -0.10 / -0.05 / 0.00 -> mean -0.05 (left: +0.2 / +0.1 / 0.0 -> +0.1)
    assert lines[3].split(' | ')[6:11] == [
        '+0.110 [+0.085, +0.135]', '+0.020 [+0.020, +0.020]', 'yes', 'right -0.050 [-0.174, +0.074]',
        '+2.00 / -1.00 / +0.00'
    ]
    assert lines[2].split(' | ')[6:11] == ['—', '—', '—', '—', '+0.00 / +0.00 / +0.00']


def test_old_records_without_the_new_fields_show_a_dash_or_say_how_many_runs_had_them():
    old = [record(s, 30., 26., {'a': 26.}) for s in range(2)]
    assert colour_offset(old) is None
    mixed = old + [record(2, 30., 26., {'a': 26.}, {'a': (1., 2., 3.)})]
    assert colour_offset(mixed) == ({'r': 1., 'g': 2., 'b': 3.}, 1)
    no_photos = [record(s, 30., 26.) for s in range(2)]  # records before per_image: no worst photo
    lines = decision_table([Row('kd', 'KD', 'facd'), Row('x', 'X', 'facd')], {
        'kd': no_photos,
        'x': mixed
    }, ('kd', )).splitlines()
    assert lines[2].split(' | ')[9:11] == ['—', '—']
    assert lines[3].split(' | ')[9:11] == ['—', '+1.00 / +2.00 / +3.00 (1 of 3 runs)']


def test_worst_photo_is_the_lowest_mean_paired_difference_over_shared_seeds():
    ref = [record(s, 30., 26., {'a': 26., 'b': 27.}) for s in (0, 1)]
    runs = [
        record(0, 30., 26., {
            'a': 25.0,
            'b': 27.5
        }),
        record(1, 30., 26., {
            'a': 26.6,
            'b': 26.8
        }),
        record(5, 30., 26., {
            'a': 10.,
            'b': 10.
        })
    ]  # seed 5 has no partner
    stem, deltas = worst_photo(runs, ref)
    assert stem == 'a' and deltas == pytest.approx([-1.0, 0.6])  # a: -1.0 / +0.6 -> -0.2; b: +0.5 / -0.2 -> +0.15
    assert worst_photo(runs, [record(9, 30., 26., {'a': 1.})]) is None


def test_colour_offsets_are_output_minus_gt_per_channel_inside_the_cropped_border():
    gt = load_photo('chelsea')[:40, :48]
    out = gt.astype(np.int16)
    out[..., 2] += 3  # red (BGR images)
    out[..., 0] -= 2  # blue
    out[:4] = 255  # border rows, cut away by crop 4
    out = np.clip(out, 0, 255).astype(np.uint8)
    expected = (np.clip(gt[4:-4, 4:-4].astype(np.int16) + np.array([-2, 0, 3]), 0, 255) - gt[4:-4, 4:-4]).reshape(
        -1, 3).mean(0)
    got = colour_offsets({'p': out}, {'p': (None, gt)}, 4)['p']
    assert [got['b'], got['g'], got['r']] == pytest.approx(list(expected)) and got['g'] == 0.
    assert got['r'] > 2.5 and got['b'] < -1.5  # the photo's few clipped pixels move the means a little


# -------------------------------------------------------------------------------------------- rows, groups
def test_the_x2_screen_group_has_kd_fd_shipped_facd_and_three_history_weights():
    keys = GROUPS['screen']
    assert keys[:3] == ('kd', 'fd_l2_w3e-4', 'facd_l2_w3e-1_teacher_better') and len(keys) == 6
    assert all(key in ROWS for key in keys + GROUP_VERSUS['screen'])
    base = ROWS['kd'].options(7, 'abl')
    for key in keys:
        opt = ROWS[key].options(7, 'abl')
        assert opt['name'] == f'abl_{key}_s7' and opt['scale'] == 2 and opt['train']['total_iter'] == 1500
        assert opt['network_g'] == base['network_g'] and opt['datasets'] == base['datasets']
        assert not opt.get('distill', {}).get('init_from_teacher')  # no teacher init at x2
        assert 'init_from_teacher' not in opt['path']
    weights = []
    for key in keys[3:]:
        opt = ROWS[key].options(0, 'abl')
        feature = opt['train']['feature_opt']
        assert (feature['type'], feature['form'], feature['distance'],
                feature['negatives']) == ('FACDContrastiveLoss', 'ratio', 'l2', 'history')
        assert feature['num_negatives'] is None  # the pool's size comes from distill.history
        assert opt['distill']['history'] == {
            'decay': 0.999,
            'num_degraded': 4,
            'noise_sigma': [1., 30.],
            'include_clean': True
        } == HISTORY
        assert opt['distill']['gate'] == {'mode': 'teacher_better', 'margin': 0.}
        weights.append(feature['loss_weight'])
    assert tuple(weights) == HISTORY_WEIGHTS == (0.01, 0.03, 0.1)
    shipped = ROWS['facd_l2_w3e-1_teacher_better'].options(0, 'abl')
    assert 'history' not in shipped['distill'] and 'negatives' not in shipped['train']['feature_opt']


def test_the_x4_confirm_group_adds_teacher_init_rows_and_keeps_the_old_tinit_row():
    keys = X4_GROUPS['confirm']
    assert all(key in X4_ROWS for key in keys + GROUP_VERSUS['confirm'])
    opts = {key: X4_ROWS[key].options(4, X4_PREFIX) for key in keys + ('tinit_facd_l2_w3e0_teacher_better', )}
    assert all(opt['train']['total_iter'] == 5000 and opt['name'] == f'x4_{key}_s4' for key, opt in opts.items())
    init = [key for key in keys if key.startswith('tinit_')]
    assert init == ['tinit_kd', 'tinit_facd_l2_w3e0_teacher_better_centred', X4_INIT_FACD]
    init.remove(X4_INIT_FACD)  # leading-identity adapters need the init: no row without it (init_weight test)
    assert 'tinit_facd_l2_w3e0_teacher_better' in X4_ROWS  # registered (seed 0 trained), no longer in the group
    centred = opts['facd_l2_w3e0_teacher_better_centred']
    assert centred['train']['feature_opt'] == dict(
        opts['facd_l2_w3e0_teacher_better']['train']['feature_opt'], centre=True)
    assert centred['datasets'] == opts['facd_l2_w3e0_teacher_better']['datasets']  # an x4 row, not an x2 one
    for key in init + ['tinit_facd_l2_w3e0_teacher_better']:
        assert opts[key]['distill']['init_from_teacher'] is True and opts[key]['path']['pretrain_network_g'] is None
        assert 'init_from_teacher' not in opts[key]['path']  # BasicSR makes a folder of every other path value
        plain = X4_ROWS[key[len('tinit_'):]].options(4, X4_PREFIX)  # the same row without the init
        assert opts[key]['train'] == plain['train'] and opts[key]['path'] == plain['path']
        assert opts[key]['distill'] == dict(plain['distill'], init_from_teacher=True)
    assert 'init_from_teacher' not in opts['tinit']['path'] and 'distill' not in opts['tinit']
    assert opts['tinit']['path']['pretrain_network_g'].endswith('net_g_sliced_for_student.pth')
    history = [X4_ROWS[key].options(0, X4_PREFIX) for key in X4_ROWS if '_history_' in key]
    assert sorted({opt['train']['feature_opt']['loss_weight'] for opt in history}) == list(X4_HISTORY_WEIGHTS)
    assert all(opt['distill']['history'] == HISTORY and opt['distill']['gate_log'] for opt in history)


def without_name(opt):
    return {k: v for k, v in opt.items() if k != 'name'}


def test_the_init_weight_group_varies_the_weight_adapter_start_and_taps_of_centred_facd_on_top_of_teacher_init():
    keys = X4_GROUPS['init_weight']
    assert keys[0] == 'tinit_kd' and GROUP_VERSUS['init_weight'] == ('tinit_kd', )
    reference = X4_ROWS['tinit_facd_l2_w3e0_teacher_better_centred'].options(1, X4_PREFIX)
    weights = []
    for key in keys[1:4]:
        opt = X4_ROWS[key].options(1, X4_PREFIX)
        weights.append(opt['train']['feature_opt']['loss_weight'])
        assert opt['distill']['init_from_teacher'] is True and opt['train']['feature_opt']['centre'] is True
        opt['train']['feature_opt']['loss_weight'] = 3.
        assert without_name(opt) == without_name(reference)
    assert weights == [0.3, 1., 3.]
    light = X4_ROWS['tinit_facd_l2_w3e-1_teacher_better_centred'].options(1, X4_PREFIX)
    leading = {'type': 'FACDAdapter', 'kind': 'conv1x1', 'leading_identity': True}
    changes = [(True, False, 0.3), (True, True, 0.3), (False, True, 0.3), (True, True, 1.)]  # lead, last tap, w
    assert keys[4:] == ('tinit_facd_l2_w3e-1_teacher_better_centred_lead', X4_INIT_FACD,
                        'tinit_facd_l2_w3e-1_teacher_better_centred_lasttap',
                        'tinit_facd_l2_w1e0_teacher_better_centred_lead_lasttap')
    for key, (lead, last_tap, weight) in zip(keys[4:], changes):
        opt = X4_ROWS[key].options(1, X4_PREFIX)
        assert (opt['distill']['adapter'] == leading) is lead
        assert (opt['distill']['teacher_taps'] == opt['distill']['student_taps'] == ['conv_after_body']) is last_tap
        assert opt['train']['feature_opt']['loss_weight'] == weight
        opt['distill']['adapter'].pop('leading_identity', None)
        for side in ('teacher_taps', 'student_taps'):
            opt['distill'][side] = light['distill'][side]
        opt['train']['feature_opt']['loss_weight'] = 0.3
        assert without_name(opt) == without_name(light), key


def test_every_committed_x4_record_still_matches_its_row():
    """A key never changes meaning: the new rows and fields leave every record of docs/study_x4_runs valid, and
    those of the earlier teacher, kept in docs/study_x4_runs/teacher_302e14c58531/, too."""
    paths = sorted(glob.glob(osp.join(X4.records, 'x4_*.json')) + glob.glob(osp.join(X4.records, '*', 'x4_*.json')))
    assert len(paths) >= 45
    for path in paths:
        with open(path) as f:
            rec = json.load(f)
        name, seed = rec['name'], rec['options']['manual_seed']
        key = name[len(X4_PREFIX) + 1:name.rindex('_s')]
        assert stored_record(X4_ROWS[key].options(seed, X4_PREFIX), osp.dirname(path)) is not None, name


def test_every_committed_x4_weights_file_is_the_student_its_record_scored():
    """docs/study_x4_runs/<run>.pth (and those kept with an earlier teacher's records in a subfolder) loads strictly
    into stock BasicSR's network of the record's options, and its weights fingerprint is the one the record was
    scored with: the committed files re-score the tables. The teacher's file is checked the same way."""
    paths = sorted(glob.glob(osp.join(X4.records, '*.pth')) + glob.glob(osp.join(X4.records, '*', '*.pth')))
    assert len([p for p in paths if osp.basename(p).startswith('x4_')]) >= 10, 'no kept x4 weights committed'
    for path in paths:
        with open(path[:-len('.pth')] + '.json') as f:
            rec = json.load(f)
        net = build_network(dict(rec['options']['network_g']))
        net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True)['params'], strict=True)
        assert fingerprint(net) == rec['student'], osp.basename(path)


# ------------------------------------------------------------------------------- records and kept weights
@pytest.fixture
def scored_run(tmp_path, monkeypatch, request):
    """A tiny EDSR x4 'trained' run in tmp_path/experiments, photo crops as select / report splits, its record.
    Parametrised True: the run starts from a weight file (``path.pretrain_network_g``) and, as runs finished before
    ``run_inputs.json`` was kept, has no record of that file."""
    monkeypatch.chdir(tmp_path)
    pairs = {}
    for split, photo in (('select', 'chelsea'), ('report', 'coffee')):
        for sub in ('gt', 'lq_x4'):
            os.makedirs(tmp_path / 'data' / split / sub)
        for stem, (top, left) in (('a', (40, 60)), ('b', (120, 200))):
            gt = np.ascontiguousarray(load_photo(photo)[top:top + 48, left:left + 64])
            cv2.imwrite(str(tmp_path / 'data' / split / 'gt' / f'{stem}.png'), gt)
            cv2.imwrite(str(tmp_path / 'data' / split / 'lq_x4' / f'{stem}.png'), bicubic_lr(gt, 4))
        pairs[split] = read_pairs(str(tmp_path / 'data' / split), 4)
    opt = X4_ROWS['scratch'].options(0, X4_PREFIX)
    opt['network_g'].update(num_feat=4, num_block=1)
    torch.manual_seed(0)
    net = build_network(dict(opt['network_g']))
    if getattr(request, 'param', False):
        torch.save({'params': net.state_dict()}, str(tmp_path / 'start.pth'))
        opt['path']['pretrain_network_g'] = 'start.pth'
    os.makedirs(tmp_path / 'experiments' / opt['name'] / 'models')
    torch.save({'params': net.state_dict()},
               str(tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth'))
    with open(tmp_path / 'experiments' / opt['name'] / 'run_options.yml', 'w') as f:
        yaml.safe_dump(opt, f)
    return opt, pairs, score_run(opt, str(tmp_path / 'records'), pairs)


def test_score_run_records_colour_offsets_and_the_weights_fingerprint(scored_run, tmp_path):
    opt, pairs, rec = scored_run
    with open(tmp_path / 'records' / f'{opt["name"]}.json') as f:
        stored = json.load(f)
    assert stored['colour_offset'] == rec['colour_offset'] and len(stored['student']) == 64
    assert sorted(stored['colour_offset']) == ['report', 'select'] and sorted(
        stored['colour_offset']['report']) == ['a', 'b']
    assert sorted(stored['colour_offset']['report']['a']) == ['b', 'g', 'r']
    assert colour_offset([stored])[1] == 1  # the table reads it back


def test_kept_weights_load_in_plain_basicsr_and_facd_eval_rescores_the_record(scored_run, tmp_path, capsys):
    opt, pairs, rec = scored_run
    folder = str(tmp_path / 'records')
    path = keep_weights(opt, folder, pairs)
    assert path == kept_path(opt['name'], folder) == osp.join(folder, f'{opt["name"]}.pth')
    state = torch.load(path, map_location='cpu', weights_only=True)
    assert list(state) == ['params']
    build_network(dict(opt['network_g'])).load_state_dict(state['params'], strict=True)
    # facd-eval on the split's GT alone makes the same LR (MATLAB bicubic) and gives the recorded per-photo PSNR
    for split in ('select', 'report'):
        os.makedirs(tmp_path / 'eval' / split)
        os.symlink(tmp_path / 'data' / split / 'gt', tmp_path / 'eval' / split / 'HR')
    with open(tmp_path / 'arch.yml', 'w') as f:
        json.dump(opt['network_g'], f)  # JSON is YAML
    code = evaluate.main([
        '--arch-yaml',
        str(tmp_path / 'arch.yml'), '--ckpt', path, '--data-root',
        str(tmp_path / 'eval'), '--sets', 'select', 'report', '--out-dir',
        str(tmp_path / 'out'), '--device', 'cpu'
    ])
    assert code == 0
    with open(tmp_path / 'out' / 'per_image.csv') as f:
        rows = [line.strip().split(',') for line in f][1:]
    assert sorted((r[0], r[1]) for r in rows) == [(s, p) for s in ('report', 'select') for p in ('a', 'b')]
    for split, image, psnr, _ in rows:
        assert float(psnr) == pytest.approx(rec['per_image'][split][image]['psnr'], abs=1e-9)


@pytest.mark.parametrize('scored_run', [True], indirect=True)
def test_keep_weights_takes_a_run_from_before_the_inputs_record_by_its_fingerprint(scored_run, tmp_path):
    opt, pairs, rec = scored_run
    assert not is_trained(opt)  # as a study run it does not count (its starting file is not vouched for) ...
    (tmp_path / 'start.pth').write_bytes(b'changed since')
    path = keep_weights(opt, str(tmp_path / 'records'), pairs)  # ... but its weights are the recorded ones
    assert osp.isfile(path)


def test_restore_kept_puts_the_committed_weights_back_as_a_finished_run(scored_run, tmp_path):
    opt, pairs, rec = scored_run
    path = keep_weights(opt, str(tmp_path / 'records'), pairs)
    trained = torch.load(latest_weights(opt['name']), weights_only=True)['params']
    shutil.rmtree(tmp_path / 'experiments')  # a fresh machine: only the clone's committed files
    assert not is_trained(opt)
    assert restore_kept(opt, rec, path)
    assert is_trained(opt)  # the study counts it as trained: it is not trained again
    restored = torch.load(latest_weights(opt['name']), weights_only=True)['params']
    assert list(restored) == list(trained) and all(torch.equal(restored[k], trained[k]) for k in trained)


def test_restore_kept_writes_nothing_for_other_weights_or_a_run_with_a_starting_file(scored_run, tmp_path):
    opt, pairs, rec = scored_run
    path = keep_weights(opt, str(tmp_path / 'records'), pairs)
    shutil.rmtree(tmp_path / 'experiments')
    state = torch.load(path, weights_only=True)
    state['params']['conv_last.bias'][0] += 1e-3  # not the network the record scored
    torch.save(state, str(tmp_path / 'other.pth'))
    assert not restore_kept(opt, rec, str(tmp_path / 'other.pth'))
    assert not restore_kept(opt, None, path)  # no record of these options
    assert not osp.exists(tmp_path / 'experiments')
    student = dict(opt, path=dict(opt['path'], pretrain_network_g=path))  # starts from a file: not vouched for
    assert not restore_kept(student, dict(rec, options=student), path)
    assert not osp.exists(tmp_path / 'experiments')


@pytest.fixture
def committed_teacher(tmp_path, monkeypatch):
    """A fresh machine (CWD tmp_path: no experiments/, an empty run cache) with the x4 teacher's record and kept
    weights committed in tmp_path/records; returns (options, network, records folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('FACD_STUDY_CACHE', str(tmp_path / 'cache'))
    opt = load_options(X4.teacher_options)
    torch.manual_seed(3)
    net = build_network(dict(opt['network_g']))
    os.makedirs(tmp_path / 'records')
    torch.save({'params': net.state_dict()}, str(tmp_path / 'records' / f'{opt["name"]}.pth'))
    with open(tmp_path / 'records' / f'{opt["name"]}.json', 'w') as f:
        json.dump({'name': opt['name'], 'options': opt, 'student': fingerprint(net), 'gate_on': 0.0}, f)
    return opt, net, str(tmp_path / 'records')


def test_a_fresh_machine_gets_the_committed_teacher_instead_of_training_it(committed_teacher):
    """What ``train_rows`` and ``study.py --teacher`` call first."""
    opt, net, folder = committed_teacher
    assert present_teacher(X4) is None
    restore_teacher(X4, folder)
    assert is_trained(opt) and present_teacher(X4) == fingerprint(net)
    restore_teacher(X4, folder)  # the same teacher present: nothing to say


def test_another_teacher_never_replaces_the_committed_one(committed_teacher, tmp_path):
    """A teacher of the same options in the run cache (trained on this machine) or a committed file that is not the
    recorded network: one clear error, before anything trains or a committed record is overwritten."""
    opt, net, folder = committed_teacher
    other = build_network(dict(opt['network_g']))
    cached = tmp_path / 'cache' / opt['name']
    os.makedirs(cached / 'models')
    torch.save({'params': other.state_dict()}, str(cached / 'models' / 'net_g_latest.pth'))
    write_options(opt, str(cached / 'run_options.yml'))
    restore_teacher(X4, folder)  # the committed file comes first
    assert present_teacher(X4) == fingerprint(net)
    shutil.rmtree(tmp_path / 'experiments')
    state = torch.load(osp.join(folder, f'{opt["name"]}.pth'), weights_only=True)
    state['params']['conv_first.bias'][0] += 1e-3
    torch.save(state, osp.join(folder, f'{opt["name"]}.pth'))
    with pytest.raises(ValueError, match=f'committed x4 teacher \\({fingerprint(net)[:12]}, file [0-9a-f]{{12}}\\), '
                       f'but this machine has teacher {fingerprint(other)[:12]}'):
        restore_teacher(X4, folder)


def test_score_rows_of_a_frozen_folder_reads_only_its_records_and_refuses_two_teachers(tmp_path, monkeypatch):
    """``study.py --score-only --records DIR``: an earlier teacher's records tabulate on any machine, a run trained
    here is never scored into that folder, and records of two teachers are never paired."""
    earlier = osp.join(X4.records, 'teacher_302e14c58531')
    for seed in (0, 1):
        shutil.copy(osp.join(earlier, f'x4_kd_s{seed}.json'), tmp_path)
    monkeypatch.setattr(ablation, 'is_trained', lambda opt: True)  # seed 2 "trained" on this machine

    def no_scoring(*args):
        raise AssertionError('scored a run into a frozen folder')

    monkeypatch.setattr(ablation, 'score_run', no_scoring)
    records = score_rows([X4_ROWS['kd']], [0, 1, 2], X4_PREFIX, str(tmp_path / 'out'), str(tmp_path))
    assert [run['options']['manual_seed'] for run in records['kd']] == [0, 1]
    assert {run['teacher'][:12] for run in records['kd']} == {'302e14c58531'}
    shutil.copy(osp.join(X4.records, 'teacher_5c8fea63e4bf', 'x4_kd_s1.json'), tmp_path)  # another teacher
    with pytest.raises(ValueError, match='2 teachers'):
        score_rows([X4_ROWS['kd']], [0, 1], X4_PREFIX, str(tmp_path / 'out'), str(tmp_path))


def test_keep_weights_refuses_weights_that_are_not_the_recorded_run(scored_run, tmp_path):
    opt, pairs, rec = scored_run
    folder = str(tmp_path / 'records')
    weights = tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth'
    state = torch.load(str(weights), weights_only=True)
    state['params']['conv_last.bias'] += 0.05  # retrained, or another run's file
    torch.save(state, str(weights))
    with pytest.raises(ValueError, match='not the ones its record scored'):
        keep_weights(opt, folder, pairs)
    record_path = osp.join(folder, f'{opt["name"]}.json')
    with open(record_path) as f:
        old = json.load(f)
    del old['student']  # a record from before the fingerprint: checked by its per-photo PSNR instead
    with open(record_path, 'w') as f:
        json.dump(old, f)
    with pytest.raises(ValueError, match='not the recorded run'):
        keep_weights(opt, folder, pairs)
    assert not osp.exists(kept_path(opt['name'], folder))
    with pytest.raises(FileNotFoundError, match='no record of these options'):
        keep_weights(dict(opt, manual_seed=3), folder, pairs)


def test_below_bicubic_counts_run_photo_pairs_under_bicubic_on_both_splits(scored_run, tmp_path):
    opt, pairs, rec = scored_run
    bicubic = bicubic_photo_scores(dataclasses.replace(X4, data=str(tmp_path / 'data')))
    assert sorted(bicubic) == ['report', 'select'] and sorted(bicubic['report']) == ['a', 'b']
    assert all(15 < v < 45 for photos in bicubic.values() for v in photos.values())
    floor = {split: {stem: 30. for stem in photos} for split, photos in bicubic.items()}
    runs = [record(0, 30., 26., {'a': 29.5, 'b': 31.}), record(1, 30., 26., {'a': 30.5, 'b': 31.})]
    for run in runs:
        run['per_image']['select'] = {'a': {'psnr': 31.}, 'b': {'psnr': 29.}}
    assert below_bicubic_cell(runs, floor) == '3 of 8 (a, b)'  # report a (seed 0), select b (both seeds)
    assert below_bicubic_cell([record(0, 30., 26.)], floor) == '—'


# ------------------------------------------------------------------------- how near history negatives sit
def test_negative_distances_of_an_identity_tap_are_the_noise_power_and_the_pairwise_spread(tmp_path):
    net = torch.nn.Sequential()
    net.add_module('tap', torch.nn.Identity())
    x = torch.stack([torch.full((3, 32, 32), c) for c in (0.2, 0.5, 0.6, 0.9)])
    (noise, batch), = negative_distances(net, ['tap'], x, sigma_range=(12.75, 12.75), copies=4).values()
    assert noise == pytest.approx((12.75 / 255)**2, rel=0.03)  # sigma 0.05 on the 0-1 scale
    pairs = [(a - b)**2 for a in (0.2, 0.5, 0.6, 0.9) for b in (0.2, 0.5, 0.6, 0.9) if a != b]
    assert batch == pytest.approx(sum(pairs) / 12, rel=1e-5)
    assert not net.tap._forward_hooks  # hooks removed
    for k, photo in enumerate(('chelsea', 'coffee', 'astronaut')):
        cv2.imwrite(str(tmp_path / f'{k}.png'), load_photo(photo)[:40, :40])
    crops = random_lr_crops(str(tmp_path), 3, 24)
    assert crops.shape == (3, 3, 24, 24) and 0 <= crops.min() and crops.max() <= 1
    assert torch.equal(crops, random_lr_crops(str(tmp_path), 3, 24))  # seeded
    with pytest.raises(ValueError, match='4 are needed'):
        random_lr_crops(str(tmp_path), 4, 24)
