"""Faults during a real training run (subprocesses of facd_basicsr/train.py on the tiny x2 option file, CPU).

* Resume is bit-identical to a straight run (random crops, flips and rotations on; validation in between), after a
  clean stop and after SIGKILL at a random moment, with 0 and with 2 dataloader workers.
* ``--auto_resume`` never executes a planted ``.state`` pickle and never resumes from a half-written checkpoint.
* A diverging run stops at the step its loss turns non-finite, naming the terms and the batch's LMDB keys.
* A corrupt LMDB record names the dataset, the key and the LMDB.
* A full disk (file-size limit) while writing a checkpoint stops the run and leaves the previous checkpoint intact.
"""
import glob
import os
import os.path as osp
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import lmdb
import pytest
import torch

from conftest import REPO_ROOT, run_python

TRAIN = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
OPT = osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml')
# Small batches of random 32 px crops (flips and rotations on, as in the option file); 50 iterations per epoch.
FAST = ['logger:print_freq=1', 'logger:use_tb_logger=false', 'distill:teacher_check=false',
        'datasets:train:batch_size_per_gpu=4', 'datasets:train:gt_size=32', 'datasets:train:dataset_enlarge_ratio=50']
WITH_VAL = ['val:val_freq=2']  # validation between steps must not change the training's random states
NO_VAL = ['val=~']


def args(name, total_iter, *force, auto_resume=False):
    flags = ['--auto_resume'] if auto_resume else []
    return [TRAIN, '-opt', OPT, *flags, '--force_yml', *FAST, f'name={name}', f'train:total_iter={total_iter}', *force]


def train(cwd, name, total_iter, *force, auto_resume=False, ok=True):
    result = run_python(args(name, total_iter, *force, auto_resume=auto_resume), cwd, env={'OMP_NUM_THREADS': '1'})
    if ok:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def net_g(cwd, name, label):
    return torch.load(osp.join(cwd, 'experiments', name, 'models', f'net_g_{label}.pth'), weights_only=True)['params']


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    diff = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not diff, f'tensors differ (max |diff|): {diff}'


@pytest.fixture(scope='module')
def straight(work):
    """6 iterations straight through, 0 workers, validation every 2 iterations."""
    train(work, 'straight_w0', 6, 'logger:save_checkpoint_freq=3', *WITH_VAL)
    return net_g(work, 'straight_w0', 6)


@pytest.fixture(scope='module')
def stopped_at_3(work):
    """The first half of the 3 + 3 run: stopped cleanly after iteration 3 (checkpoint 3); the experiment folder."""
    train(work, 'stopped_w0', 3, 'logger:save_checkpoint_freq=3', *WITH_VAL)
    return osp.join(work, 'experiments', 'stopped_w0')


def copy_experiment(work, src, name):
    dst = osp.join(work, 'experiments', name)
    shutil.copytree(src, dst)
    return dst


def to_previous_layout(folder, iteration):
    """Rewrite a checkpoint as the previous layout saved it: the run state inside ``net_adapter_<iter>.pth``
    (``params``, ``teacher``, ``student_runtime``, ``data_order``), none in ``<iter>.state``."""
    state_path = osp.join(folder, 'training_states', f'{iteration}.state')
    state = torch.load(state_path, weights_only=True)
    run_state = state.pop('run_state')
    adapter_path = osp.join(folder, 'models', f'net_adapter_{iteration}.pth')
    params = torch.load(adapter_path, weights_only=True)['params']
    torch.save({'params': params, 'teacher': run_state['teacher'], 'student_runtime': run_state['student_runtime'],
                'data_order': run_state['data_order']}, adapter_path)
    torch.save(state, state_path)


def test_a_checkpoint_of_the_previous_layout_resumes_bit_identically(work, straight, stopped_at_3):
    """Run state in the adapter file, none in the .state (as saved before issue 28): 3 + 3 still equal 6 straight."""
    exp = copy_experiment(work, stopped_at_3, 'old_layout_w0')
    to_previous_layout(exp, 3)
    assert 'run_state' not in torch.load(osp.join(exp, 'training_states', '3.state'), weights_only=True)
    train(work, 'old_layout_w0', 6, 'logger:save_checkpoint_freq=3', *WITH_VAL, auto_resume=True)
    assert_same_weights(net_g(work, 'old_layout_w0', 6), straight)
    state = torch.load(osp.join(exp, 'training_states', '6.state'), weights_only=True)
    assert state['run_state']['teacher']['sha256']  # saved in the new layout from then on


class Payload:
    """Unpickling this creates the marker file (what a planted .state could do with any code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_resume_mid_epoch_is_bit_identical_and_skips_planted_and_truncated_states(
        work, straight, stopped_at_3, tmp_path):
    exp = copy_experiment(work, stopped_at_3, 'resumed_w0')
    states = osp.join(exp, 'training_states')
    marker = tmp_path / 'marker'
    # A planted training state whose unpickling would run code, and a newer one cut short by a killed writer.
    torch.save({'epoch': 0, 'iter': 5, 'optimizers': [], 'schedulers': [], 'x': Payload(str(marker))},
               osp.join(states, '5.state'))
    with open(osp.join(states, '3.state'), 'rb') as f:
        whole = f.read()
    with open(osp.join(states, '4.state'), 'wb') as f:
        f.write(whole[:len(whole) // 2])
    shutil.copy(osp.join(exp, 'models', 'net_g_3.pth'), osp.join(exp, 'models', 'net_g_4.pth'))
    result = train(work, 'resumed_w0', 6, 'logger:save_checkpoint_freq=3', *WITH_VAL, auto_resume=True)
    assert not marker.exists(), 'the planted pickle was executed'
    err = result.stderr
    assert f'--auto_resume skips an incomplete checkpoint: path.resume_state: cannot load the training state ' \
           f'{osp.join(states, "5.state")}: it holds a pickled object that is not plain weights' in err, err[-3000:]
    assert f'{osp.join(states, "4.state")}: a zip archive that is cut short or corrupt' in err
    assert f'--auto_resume resumes from {osp.join(states, "3.state")}, the newest complete one' in err
    log = open(sorted(glob.glob(osp.join(exp, 'train_*.log')), key=osp.getmtime)[-1]).read()
    assert 'Resuming training from epoch: 0, iter: 3.' in log
    assert 'Resumed the data order: epoch 0, 3 batches of it replayed.' in log
    assert_same_weights(net_g(work, 'resumed_w0', 6), straight)


def start_killable(cwd, cmd):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, *cmd], cwd=str(cwd), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_mid_run(work, name, total_iter, force, rng):
    """Start a run and SIGKILL it at a random moment: 0-50 ms after its checkpoint k (k random in 1..total-2).

    A checkpoint is written every iteration, so the kill lands in a training step or in a checkpoint write. Retried
    with a shorter delay if the run finished first. Returns (k, delay, the training states the killed run left).
    """
    exp = osp.join(work, 'experiments', name)
    k = rng.randint(1, total_iter - 2)
    for attempt in range(4):
        delay = rng.uniform(0, 0.05) / 4**attempt
        print(f'SIGKILL {delay:.3f} s after checkpoint {k}')  # shown when the test fails
        proc = start_killable(work, args(name, total_iter, *force))
        state = osp.join(exp, 'training_states', f'{k}.state')
        while proc.poll() is None and not osp.exists(state):
            time.sleep(0.005)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its dataloader workers
        proc.wait()
        left = sorted(os.listdir(osp.dirname(state)))
        if f'{total_iter}.state' not in left:
            return k, delay, left
        shutil.rmtree(exp)  # it had finished before the kill: try again
    raise AssertionError('the run always finished before the kill')


def test_sigkill_at_a_random_moment_then_auto_resume_equals_a_straight_run_with_workers(work):
    """2 dataloader workers; a checkpoint every iteration; SIGKILL at a random moment, then --auto_resume."""
    workers = ['datasets:train:num_worker_per_gpu=2', 'logger:save_checkpoint_freq=1', *NO_VAL]
    train(work, 'straight_w2', 8, *workers)
    rng = random.Random(os.environ.get('FAULTS_SEED', str(time.time_ns())))
    k, delay, left = kill_mid_run(work, 'killed_w2', 8, workers, rng)
    resumed = train(work, 'killed_w2', 8, *workers, auto_resume=True)
    exp = osp.join(work, 'experiments', 'killed_w2')
    log = open(sorted(glob.glob(osp.join(exp, 'train_*.log')), key=osp.getmtime)[-1]).read()
    assert 'Resuming training from epoch: 0, iter: ' in log, (k, delay, left, resumed.stderr[-2000:])
    assert_same_weights(net_g(work, 'killed_w2', 8), net_g(work, 'straight_w2', 8))


def test_diverging_loss_stops_at_the_step_naming_terms_and_lmdb_keys(work):
    # An absurd learning rate: step 1 is finite, its update sends the weights to ~1e30, step 2's loss is NaN.
    result = train(work, 'diverging', 4, 'train:optim_g:lr=!!float1e30', 'logger:save_checkpoint_freq=2', *NO_VAL,
                   ok=False)
    assert result.returncode != 0
    err = result.stderr
    assert 'NonFiniteLossError: iteration 2: non-finite loss (l_pix = nan, l_kd = nan, l_feat = nan' in err, err[-3000:]
    assert "on the batch lq_path ['" in err and "gt_path ['" in err and 'the student output is not finite' in err
    assert 'Stopped (train.nonfinite: stop) before the update' in err
    assert not glob.glob(osp.join(work, 'experiments', 'diverging', 'models', '*'))


def test_corrupt_lmdb_record_names_dataset_key_and_lmdb(work, tmp_path):
    data = tmp_path / 'data'
    for name in ('gt.lmdb', 'lq_x2.lmdb'):
        shutil.copytree(osp.join(work, 'datasets', 'sample', 'train', name), data / name)
    with lmdb.open(str(data / 'lq_x2.lmdb'), map_size=1 << 30) as env, env.begin(write=True) as txn:
        assert txn.get(b'coffee') is not None
        txn.put(b'coffee', os.urandom(3000))  # one record replaced by garbage (a failed copy, a bad disk)
    result = train(work, 'corrupt_lmdb', 20, f'datasets:train:dataroot_gt={data / "gt.lmdb"}',
                   f'datasets:train:dataroot_lq={data / "lq_x2.lmdb"}', *NO_VAL, ok=False)
    assert result.returncode != 0
    err = result.stderr
    assert "DataRecordError: dataset 'sample_train' (PairedImageDataset), item " in err, err[-3000:]
    assert f"while reading the lq key 'coffee' of the LMDB {data / 'lq_x2.lmdb'}): ValueError: 3000 bytes that " \
           'do not decode as an image' in err
    assert "'NoneType' object has no attribute" not in err


def limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_while_saving_stops_and_keeps_the_previous_checkpoint(work, stopped_at_3):
    exp = copy_experiment(work, stopped_at_3, 'full_disk')
    previous = {p: open(p, 'rb').read() for p in glob.glob(osp.join(exp, '*', '*_3.*')) + [osp.join(
        exp, 'training_states', '3.state')]}
    state_size = len(previous[osp.join(exp, 'training_states', '3.state')])
    # Logs, option copy, adapter record and net_g fit under the limit; the training state (~200 kB) does not.
    limit = state_size - 10000
    assert all(len(v) < limit for p, v in previous.items() if not p.endswith('.state'))
    result = subprocess.run([sys.executable, *args('full_disk', 6, 'logger:save_checkpoint_freq=3', *NO_VAL,
                                                   auto_resume=True)],
                            cwd=str(work), capture_output=True, text=True, preexec_fn=limit_file_size(limit),
                            env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=600)
    assert result.returncode != 0
    err = result.stderr
    state_6 = osp.join(exp, 'training_states', '6.state')
    assert f'CheckpointWriteError: [Errno 27] could not write the training state {state_6}: File too large' in err, \
        err[-3000:]
    assert f'Training stopped; the newest complete checkpoint is {osp.join(exp, "training_states", "3.state")}' in err
    assert not osp.exists(state_6) and not glob.glob(osp.join(exp, '*', '*.tmp'))
    assert all(open(p, 'rb').read() == v for p, v in previous.items()), 'the previous checkpoint changed'
