"""Study runs kept as committed records: a later session on a fresh machine skips and still tabulates them; the
gate's logged distribution summarised into each record; the data set rebuilt when its photos change."""
import dataclasses
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch

import facd_study.ablation as ablation
from facd_basicsr.distill.gate_log import GateLog
from facd_study.ablation import X4, gate_summary, score_rows, stored_record, teacher_note, train_rows
from facd_study.demo_data import build_demo_sets
from facd_study.sample_data import GREY_PHOTOS, SKLEARN_PHOTOS, load_photo
from facd_study.study_rows import X4_PREFIX, x4_registry


def test_grey_and_scikit_learn_photos_load_as_bgr():
    camera = load_photo('camera')
    assert camera.shape == (512, 512, 3) and camera.dtype == np.uint8
    assert np.array_equal(camera[..., 0], camera[..., 2]) and camera.std() > 30  # three equal channels, a photo
    china = load_photo('china')
    assert china.shape == (427, 640, 3) and not np.array_equal(china[..., 0], china[..., 2])
    from sklearn.datasets import load_sample_image
    assert np.array_equal(china[..., ::-1], load_sample_image('china.jpg'))  # BGR of the RGB file
    assert set(GREY_PHOTOS + SKLEARN_PHOTOS) <= set(X4.train_photos)
    with pytest.raises(ValueError, match='camera'):
        load_photo('no_such_photo')


def test_a_data_set_built_from_other_photos_is_built_again(tmp_path):
    root = str(tmp_path / 'data')
    build_demo_sets(root, 4, 128, ('coins', ), 1024)
    first = sorted(os.listdir(osp.join(root, 'train', 'gt')))
    assert first and all(name.startswith('coins_') for name in first)
    build_demo_sets(root, 4, 128, ('coins', ), 1024)  # same manifest: reused
    assert sorted(os.listdir(osp.join(root, 'train', 'gt'))) == first
    build_demo_sets(root, 4, 128, ('camera', ), 1024)
    second = sorted(os.listdir(osp.join(root, 'train', 'gt')))
    assert 0 < len(second) <= 16 and all(name.startswith('camera_') for name in second)  # 512 px: 4 x 4 tiles at most
    with open(osp.join(root, 'manifest.json')) as f:
        assert json.load(f)['train_photos'] == ['camera']


def test_gate_summary_averages_share_and_advantage_quantiles_per_part_of_the_run(tmp_path):
    folder = tmp_path / 'experiments' / 'run'
    log = GateLog(str(folder / 'gate_log.csv'))
    for it in range(1, 5):
        advantage = torch.tensor([0., 1., 2., 3., float(it)])  # quantiles 0.4 / 2 / it-dependent
        log.write(it, torch.tensor([1., 1., 0., 0.]) if it <= 2 else torch.ones(4), advantage)
    log.write(4, torch.zeros(4), torch.tensor([5., 5., 5., 5., 5.]))  # a resumed run wrote iteration 4 again
    summary = gate_summary('run', str(tmp_path), bins=2)
    assert summary['iters'] == 4 and [(b['first'], b['last']) for b in summary['bins']] == [(1, 2), (3, 4)]
    first, second = summary['bins']
    assert first['gate_on'] == 0.5 and second['gate_on'] == 0.5  # (1 + 0) / 2: the last row of iteration 4 counts
    assert first['adv_p10'] == pytest.approx(0.4, abs=1e-4)  # sorted [0, 1, 1, 2, 3] and [0, 1, 2, 2, 3]: p10 0.4
    assert first['adv_p50'] == pytest.approx(1.5, abs=1e-4)  # medians 1 and 2
    assert second['adv_p50'] == pytest.approx((2 + 5) / 2, abs=1e-4)  # [0, 1, 2, 3, 3] -> 2; [5] * 5 -> 5
    assert gate_summary('other', str(tmp_path)) is None


def test_teacher_note_names_one_teacher_or_warns_about_several():
    one = {'kd': [{'teacher': 'a' * 64}, {'teacher': 'a' * 64}], 'scratch': [{'teacher': None}]}
    assert 'same teacher' in teacher_note(one) and '(2 runs)' in teacher_note(one)
    two = {'kd': [{'teacher': 'a' * 64}], 'fd': [{'teacher': 'b' * 64}]}
    assert '2 different teachers' in teacher_note(two)
    assert teacher_note({'scratch': [{'teacher': None}]}) == ''


@pytest.fixture
def small_x4(tmp_path, monkeypatch):
    """The x4 scale with one training photo and its records in tmp_path; CWD tmp_path (experiments/ is empty)."""
    monkeypatch.chdir(tmp_path)
    return dataclasses.replace(X4, data=str(tmp_path / 'data'), train_photos=('coins', ),
                               records=str(tmp_path / 'records'))


def write_record(scale, opt, psnr):
    record = {'name': opt['name'], 'options': opt, 'gate_on': float('nan'), 'teacher': None,
              'scores': {split: {'psnr': psnr, 'ssim': 0.5} for split in ('select', 'report')}}
    os.makedirs(scale.records, exist_ok=True)
    with open(osp.join(scale.records, f'{opt["name"]}.json'), 'w') as f:
        json.dump(record, f)


def test_a_recorded_run_is_tabulated_without_its_experiment_and_not_trained_again(small_x4, monkeypatch):
    row = dataclasses.replace(x4_registry()['scratch'], scale=small_x4)
    recorded = row.options(0, X4_PREFIX)
    write_record(small_x4, recorded, 30.)
    assert stored_record(recorded, small_x4.records)['scores']['select']['psnr'] == 30.
    changed = dict(recorded, manual_seed=7)
    assert stored_record(changed, small_x4.records) is None  # other options: not this run
    started = []
    monkeypatch.setattr(ablation, 'run_jobs', lambda jobs, **kwargs: started.extend(job.name for job in jobs))
    train_rows([row], [0, 1], X4_PREFIX, 'results/study', parallel=1)
    assert started == ['x4_scratch_s1']  # seed 0 has a record
    records = score_rows([row], [0, 1], X4_PREFIX, 'results/study')
    assert [r['name'] for r in records['scratch']] == ['x4_scratch_s0']  # seed 1 neither recorded nor trained
    started.clear()
    write_record(small_x4, row.options(1, X4_PREFIX), 30.1)
    train_rows([row], [0, 1], X4_PREFIX, 'results/study', parallel=1)
    assert started == [] and len(score_rows([row], [0, 1], X4_PREFIX, 'results/study')['scratch']) == 2


def test_a_retrained_teacher_trains_the_distilled_rows_again_and_tabulates_only_its_own_runs(small_x4, monkeypatch):
    """Same options, other teacher: the old record neither skips the run nor stands in for it; records of the
    present teacher do; on a machine without the teacher every record counts (the table's note names the mix)."""
    kd = dataclasses.replace(x4_registry()['kd'], scale=small_x4)
    old, new = (kd.options(seed, X4_PREFIX) for seed in (0, 1))
    write_record(small_x4, old, 30.)
    write_record(small_x4, new, 30.1)
    for opt, teacher in ((old, 'a' * 64), (new, 'b' * 64)):
        path = osp.join(small_x4.records, f'{opt["name"]}.json')
        with open(path) as f:
            record = dict(json.load(f), teacher=teacher)
        with open(path, 'w') as f:
            json.dump(record, f)
    assert stored_record(old, small_x4.records, 'b' * 64) is None
    assert stored_record(old, small_x4.records, 'a' * 64)['teacher'] == 'a' * 64
    assert stored_record(old, small_x4.records)['scores']['select']['psnr'] == 30.  # no teacher named: any
    started = []
    monkeypatch.setattr(ablation, 'run_jobs', lambda jobs, **kwargs: started.extend(job.name for job in jobs))
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: 'b' * 64)
    train_rows([kd], [0, 1], X4_PREFIX, 'results/study', parallel=1)
    assert started == ['x4_kd_s0']  # seed 0 learnt from teacher a; seed 1 from the present teacher b
    assert [r['name'] for r in score_rows([kd], [0, 1], X4_PREFIX, 'results/study')['kd']] == ['x4_kd_s1']
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: None)
    assert len(score_rows([kd], [0, 1], X4_PREFIX, 'results/study')['kd']) == 2


def test_the_sliced_student_file_is_cut_again_from_the_present_teacher(small_x4, monkeypatch):
    """A tinit run after a retrained teacher must not start from slices of the earlier one."""
    tinit = dataclasses.replace(x4_registry()['tinit'], scale=small_x4)
    cuts = []
    monkeypatch.setattr(ablation, 'run_jobs', lambda jobs, **kwargs: None)
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: 'b' * 64)
    monkeypatch.setattr(ablation, 'write_sliced_teacher', lambda scale: cuts.append(scale.name))
    sliced = ablation.sliced_teacher_weights(small_x4)
    assert tinit.overrides['path.pretrain_network_g'] == sliced
    os.makedirs(osp.dirname(sliced), exist_ok=True)
    open(sliced, 'wb').close()  # a file cut from an earlier teacher
    train_rows([tinit], [0], X4_PREFIX, 'results/study', parallel=1)
    assert cuts == ['x4']


def test_crop_luma_std_draws_tiles_evenly_and_measures_as_the_textured_gate(tmp_path):
    import cv2
    data = tmp_path / 'data'
    for sub, size in (('gt', 128), ('lq_x4', 32)):
        (data / 'train' / sub).mkdir(parents=True)
        cv2.imwrite(str(data / 'train' / sub / 'flat.png'), np.full((size, size, 3), 90, np.uint8))
        stripes = np.zeros((size, size, 3), np.uint8)
        stripes[:, ::2] = 200  # every crop of even width: half 0, half 200 -> grey std ~100
        cv2.imwrite(str(data / 'train' / sub / 'stripes.png'), stripes)
    scale = dataclasses.replace(X4, data=str(data))
    values = ablation.crop_luma_std(scale, crops=400)
    assert np.array_equal(values, ablation.crop_luma_std(scale, crops=400))  # seeded
    flat = values < 1e-3  # float rounding of a constant
    assert 0.4 < flat.mean() < 0.6  # two tiles, equally likely
    luma_stripes = 219 / 255 * 200 * np.sqrt(0.25 * 96 * 96 / (96 * 96 - 1))  # Y of grey v is 219/255 v; sample std
    assert np.allclose(values[~flat], luma_stripes, rtol=1e-4)


def test_without_a_teacher_the_teacher_trains_first_and_decides_which_records_count(small_x4, monkeypatch):
    """A fresh machine: the committed seed-0 record learnt from teacher a; the teacher trained here is b. Seed 0
    trains again in the same call, after the teacher, instead of dropping out of the table."""
    kd = dataclasses.replace(x4_registry()['kd'], scale=small_x4)
    scratch = dataclasses.replace(x4_registry()['scratch'], scale=small_x4)
    write_record(small_x4, kd.options(0, X4_PREFIX), 30.)
    path = osp.join(small_x4.records, 'x4_kd_s0.json')
    with open(path) as f:
        record = dict(json.load(f), teacher='a' * 64)
    with open(path, 'w') as f:
        json.dump(record, f)
    teacher = {'now': None}
    calls = []

    def fake_run_jobs(jobs, **kwargs):  # trains and records every job
        calls.append([job.name for job in jobs])
        for job in jobs:
            if job.name.startswith('study_x4_teacher'):
                teacher['now'] = 'b' * 64
            else:
                write_record(small_x4, job.opt, 30.)

    monkeypatch.setattr(ablation, 'run_jobs', fake_run_jobs)
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: teacher['now'])
    train_rows([kd, scratch], [0, 1], X4_PREFIX, 'results/study', parallel=2)
    assert calls[0][0].startswith('study_x4_teacher') and calls[0][1:] == ['x4_scratch_s0', 'x4_scratch_s1']
    assert calls[1:] == [['x4_kd_s0', 'x4_kd_s1']]


def test_a_trained_distilled_run_is_not_recorded_without_knowing_its_teacher(small_x4, monkeypatch):
    kd = dataclasses.replace(x4_registry()['kd'], scale=small_x4)
    scratch = dataclasses.replace(x4_registry()['scratch'], scale=small_x4)
    scored = []
    monkeypatch.setattr(ablation, 'is_trained', lambda opt: True)
    monkeypatch.setattr(ablation, 'score_run', lambda opt, folder, pairs, teacher: scored.append(
        (opt['name'], teacher)) or {'name': opt['name']})
    monkeypatch.setattr(ablation, 'split_pairs', lambda scale: {})
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: None)
    records = score_rows([kd, scratch], [0], X4_PREFIX, 'results/study')
    assert scored == [('x4_scratch_s0', None)] and records['kd'] == []
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: 'b' * 64)
    scored.clear()
    score_rows([kd], [0], X4_PREFIX, 'results/study')
    assert scored == [('x4_kd_s0', 'b' * 64)]


def test_a_teacher_in_the_run_cache_is_restored_before_the_due_runs_are_decided(small_x4, monkeypatch):
    """A new work tree with the teacher in the run cache: one call trains the distilled runs, no teacher phase, and
    a record of the cached teacher counts."""
    from basicsr.archs import build_network

    from facd_basicsr.host.checkpoint import fingerprint
    from facd_study.experiment import load_options, run_cache, write_options
    teacher_opt = load_options(small_x4.teacher_options)
    torch.manual_seed(0)
    net = build_network(dict(teacher_opt['network_g']))
    cached = osp.join(run_cache(), teacher_opt['name'])
    os.makedirs(osp.join(cached, 'models'))
    torch.save({'params': net.state_dict()}, osp.join(cached, 'models', 'net_g_latest.pth'))
    write_options(teacher_opt, osp.join(cached, 'run_options.yml'))
    kd = dataclasses.replace(x4_registry()['kd'], scale=small_x4)
    write_record(small_x4, kd.options(0, X4_PREFIX), 30.)
    path = osp.join(small_x4.records, 'x4_kd_s0.json')
    with open(path) as f:
        record = dict(json.load(f), teacher=fingerprint(net))
    with open(path, 'w') as f:
        json.dump(record, f)
    calls = []
    monkeypatch.setattr(ablation, 'run_jobs', lambda jobs, **kwargs: calls.append([job.name for job in jobs]))
    train_rows([kd], [0, 1], X4_PREFIX, 'results/study', parallel=2)
    assert calls == [['x4_kd_s1']]  # seed 0 learnt from this teacher
    assert osp.isfile(osp.join('experiments', teacher_opt['name'], 'models', 'net_g_latest.pth'))


def test_on_record_follows_every_record_the_teacher_included(small_x4, monkeypatch):
    """study.py keeps each committed record's weights through ``on_record``: called once per run, right after its
    record is written, so a session that ends mid-study leaves every finished run with its weights."""
    kd = dataclasses.replace(x4_registry()['kd'], scale=small_x4)
    scratch = dataclasses.replace(x4_registry()['scratch'], scale=small_x4)
    teacher = {'now': None}
    events = []

    def fake_run_jobs(jobs, on_finish, **kwargs):  # each job trains, then the driver's hook records it
        for job in jobs:
            if job.name.startswith('study_x4_teacher'):
                teacher['now'] = 'b' * 64
            on_finish(job)

    monkeypatch.setattr(ablation, 'run_jobs', fake_run_jobs)
    monkeypatch.setattr(ablation, 'present_teacher', lambda scale: teacher['now'])
    monkeypatch.setattr(ablation, 'teacher_fingerprint', lambda scale: teacher['now'])
    monkeypatch.setattr(ablation, 'split_pairs', lambda scale: {})
    monkeypatch.setattr(ablation, 'score_run', lambda opt, folder, pairs, fp: write_record(small_x4, opt, 30.) or
                        events.append(('record', opt['name'])))
    train_rows([kd, scratch], [0], X4_PREFIX, 'results/study', parallel=2,
               on_record=lambda opt, folder: events.append(('keep', opt['name'], folder)))
    names = [event[1] for event in events if event[0] == 'record']
    assert names[0].startswith('study_x4_teacher') and sorted(names[1:]) == ['x4_kd_s0', 'x4_scratch_s0']
    assert events == [e for name in names for e in (('record', name), ('keep', name, small_x4.records))]
