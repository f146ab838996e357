"""A start that fails touches nothing, option files run no code, and two runs with one name cannot overwrite each
other (subprocesses of facd_basicsr/train.py and test.py on the tiny x2 option file, CPU)."""
import hashlib
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT, run_python

TRAIN = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
TEST = osp.join(REPO_ROOT, 'facd_basicsr', 'test.py')
OPT = osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml')
FAST = ['logger:print_freq=1', 'logger:use_tb_logger=false', 'distill:teacher_check=false', 'val=~',
        'datasets:train:batch_size_per_gpu=2', 'datasets:train:gt_size=32', 'logger:save_checkpoint_freq=2']
ENV = {'OMP_NUM_THREADS': '1'}


def train_args(name, total_iter, *force, opt=OPT):
    return [TRAIN, '-opt', opt, '--force_yml', *FAST, f'name={name}', f'train:total_iter={total_iter}', *force]


def folder_digest(root):
    """{relative path: sha256} of every file under ``root``."""
    return {osp.relpath(osp.join(d, f), root): hashlib.sha256(open(osp.join(d, f), 'rb').read()).hexdigest()
            for d, _, names in os.walk(root) for f in names}


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith('error:')]


def test_a_failed_start_touches_nothing_that_exists_and_a_stale_lock_does_not_block_a_resume(work):
    """A finished run; a failing restart with its name (a missing teacher: the model's own start-up check) changes
    no file; then a stale lock (a PID that is gone) does not block a resume."""
    done = run_python(train_args('kept', 2), work, ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    before = folder_digest(work / 'experiments')
    failures = [(['path:pretrain_network_t=missing/teacher.pth'], "FileNotFoundError: path.pretrain_network_t: ")]
    for force, message in failures:
        result = run_python(train_args('kept', 2, *force), work, ENV)
        assert result.returncode == 2, result.stderr[-3000:]
        errors = error_lines(result)
        assert len(errors) == 1 and message in errors[0], (message, result.stderr[-3000:])
        assert 'Traceback' not in result.stderr
    assert folder_digest(work / 'experiments') == before  # nothing renamed, archived or written
    assert not [d for d in os.listdir(work / 'experiments') if '_archived_' in d]

    folder = work / 'experiments' / 'kept'
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (folder / '.run.lock').write_text(json.dumps({'host': os.uname().nodename, 'pid': dead.pid, 'token': 'x'}))
    result = run_python(train_args('kept', 4) + ['--auto_resume'], work, ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'taking over the lock of a run that is gone (host {os.uname().nodename}, PID {dead.pid})' in result.stderr
    assert (folder / 'models' / 'net_g_4.pth').exists()


def test_key_typos_force_yml_into_missing_sections_and_absent_gpus_are_one_error_each(tmp_path):
    """In-process: what the entry point prints for a misspelled key, a --force_yml into a missing section, and a GPU
    asked for that the machine does not have."""
    from facd_basicsr.host.startup import StartupError, check_before_parsing, check_devices, check_keys
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(StartupError, match=f'num_gpu: {have + 1}, but this machine has {have} usable GPU\\(s\\): set '
                       'num_gpu: auto'):
        check_devices({'num_gpu': have + 1, 'datasets': {}})
    check_devices({'num_gpu': have, 'datasets': {}})
    with pytest.raises(StartupError, match=r"train: unknown option\(s\) 'ema_dcay' \(did you mean 'ema_decay'\?\)"):
        check_keys({'is_train': True, 'name': 'x', 'train': {'ema_dcay': 0}})
    with pytest.raises(StartupError, match=r"the option file: unknown option\(s\) 'trian' \(did you mean 'train'"):
        check_keys({'is_train': True, 'trian': {}})
    with pytest.raises(StartupError, match=f'--force_yml trian:total_iter=3: trian is not in {OPT}'):
        check_before_parsing(OPT, ['trian:total_iter=3'])
    check_before_parsing(OPT, ['train:total_iter=3', 'name=ok'])  # existing sections are fine


def test_option_files_cannot_run_code(work, tmp_path):
    marker = tmp_path / 'MARKER'
    with open(OPT) as f:
        text = f.read()
    tagged = tmp_path / 'tagged.yml'
    tagged.write_text(text + f'note: !!python/object/apply:os.system ["touch {marker}"]\n')
    for entry in (TRAIN, TEST):
        result = run_python([entry, '-opt', str(tagged)], work, ENV)
        assert result.returncode == 2, result.stderr[-3000:]
        line = len(text.splitlines()) + 1
        (error, ) = error_lines(result)
        assert error.startswith(f'error: {tagged}:{line}: tag ') and 'python/object/apply:os.system' in error
        assert 'it would construct a Python object' in error and error.endswith('nothing was constructed')
        assert not marker.exists() and 'Traceback' not in result.stderr
    assert not osp.exists(work / 'experiments' / 'FACD_tiny_x2_EDSR_f16b2_from_f32b4')


def test_a_second_run_with_the_same_name_refuses_while_the_first_trains(work):
    """Two real processes overlap: B refuses, naming A's PID; A's folder stays A's and A goes on saving into it."""
    env = dict(os.environ, **ENV)
    log = open(work / 'shared.log', 'w')  # not a pipe: a full pipe would stall the run
    first = subprocess.Popen([sys.executable, *train_args('shared', 100000, 'logger:save_checkpoint_freq=1')],
                             cwd=str(work), env=env, stdout=log, stderr=log, start_new_session=True)
    folder = work / 'experiments' / 'shared'
    try:
        deadline = time.time() + 300
        while not (folder / 'models' / 'net_g_1.pth').exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, (work / 'shared.log').read_text()[-3000:]
        second = run_python(train_args('shared', 4), work, ENV)
        assert first.poll() is None, 'the first run ended before the second finished: the test proves nothing'
        assert second.returncode == 2, second.stderr[-3000:]
        holder = json.loads((folder / '.run.lock').read_text())
        assert holder['pid'] == first.pid
        assert f'is in use by a live run (host {holder["host"]}, PID {first.pid})' in error_lines(second)[0]
        assert not [d for d in os.listdir(work / 'experiments') if d.startswith('shared_archived_')]
        saved = len(os.listdir(folder / 'models'))
        while len(os.listdir(folder / 'models')) == saved and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert len(os.listdir(folder / 'models')) > saved  # the first run still saves into its own folder
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()


def test_a_run_whose_folder_is_moved_away_stops_at_its_next_save(work):
    env = dict(os.environ, **ENV)
    log = open(work / 'moved.log', 'w')  # not a pipe: a full pipe would stall the run
    run = subprocess.Popen([sys.executable, *train_args('moved', 400, 'logger:save_checkpoint_freq=50')],
                           cwd=str(work), env=env, stdout=log, stderr=log)
    first_save = work / 'experiments' / 'moved' / 'training_states' / '50.state'  # written last: the save is over
    deadline = time.time() + 300
    while not first_save.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.rename(work / 'experiments' / 'moved', work / 'experiments' / 'moved_elsewhere')
    assert run.wait(timeout=600) != 0
    log.close()
    err = (work / 'moved.log').read_text()
    assert 'RunFolderError' in err and 'is no longer this run\'s folder' in err, err[-3000:]
    assert not osp.exists(work / 'experiments' / 'moved')  # it wrote nothing into a new folder of that name


def test_dataloader_workers_are_capped_at_the_usable_cores():
    from facd_basicsr.host.startup import cap_workers
    opt = {'datasets': {'train': {'num_worker_per_gpu': 6}, 'val': {'num_worker_per_gpu': 1}}}
    assert cap_workers(opt, 2) == ['datasets.train.num_worker_per_gpu: 6 -> 2 (the CPU cores this process may use)']
    assert opt['datasets']['train']['num_worker_per_gpu'] == 2 and opt['datasets']['val']['num_worker_per_gpu'] == 1
    assert cap_workers(opt, 2) == []
