"""Machinery of ``make demo``, ``make mini-table`` and the studies: option files plus overrides, training runs.

A run is an option file of ``options/demo/`` with a few overrides (dotted keys, e.g. ``train.feature_opt.loss_weight``),
written to a generated YAML file and trained by our entry point ``facd_basicsr/train.py`` in a subprocess, exactly
as a user would run it. Several runs can share the CPU (one thread each), each with a progress bar fed by the
iteration numbers of BasicSR's log. Runs whose ``experiments/<name>/models/net_g_latest.pth`` exists and was made
from the same options and the same starting weight files (the teacher; a pretrained student) are reused, so every
script can be stopped and started again, and a retrained teacher under the same path trains its students again.
"""
import copy
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

import yaml
from tqdm import tqdm

from facd_basicsr.host.checkpoint import atomic_torch_save, fingerprint, network_state
from facd_basicsr.host.option_file import load_option_file
from facd_basicsr.tools.common import load_network

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_ENTRY = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
DELETE = '<delete>'  # override value that removes the key
INPUT_KEYS = ('pretrain_network_t', 'pretrain_network_g')  # path.* weight files a run starts from
INPUTS_FILE = 'run_inputs.json'
_ITER_RE = re.compile(r'iter:\s*([\d,]+), lr:')


def load_options(path: str) -> dict:
    """An option file as a plain dict (``!!float`` and ``~`` resolved as BasicSR reads them), read safely."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'option file {path} does not exist')
    return _plain(load_option_file(path))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def with_overrides(opt: dict, overrides: Optional[Mapping[str, Any]] = None) -> dict:
    """A deep copy of ``opt`` with ``overrides`` applied.

    Args:
        opt (dict): options, e.g. from :func:`load_options`.
        overrides (Mapping[str, Any] | None): dotted key -> value. A missing intermediate level is created; a dict
            value replaces the whole sub-tree; :data:`DELETE` removes the key (a missing key is an error).

    Returns:
        dict: the new options; ``opt`` is left unchanged.
    """
    new = copy.deepcopy(opt)
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split('.')
        node = new
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise KeyError(f'override {dotted!r}: {key!r} is not a mapping')
        if value == DELETE:
            if last not in node:
                raise KeyError(f'override {dotted!r}: no such key to delete')
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return new


def write_options(opt: dict, path: str) -> str:
    """Write ``opt`` as YAML to ``path`` (folders created); returns ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False, default_flow_style=None, width=120)
    return path


def latest_weights(name: str, root: str = '.') -> str:
    """Path of ``experiments/<name>/models/net_g_latest.pth`` under ``root`` (it may not exist)."""
    return osp.join(root, 'experiments', name, 'models', 'net_g_latest.pth')


_FILE_DIGESTS: Dict[tuple, str] = {}


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes ('' when it does not exist); kept per (path, inode, size, mtime, ctime)."""
    if not osp.isfile(path):
        return ''
    info = os.stat(path)
    key = (osp.abspath(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def run_inputs(opt: dict, root: str = '.') -> Dict[str, str]:
    """``{path key: SHA-256}`` of the weight files run ``opt`` starts from (``path.pretrain_network_t`` and
    ``path.pretrain_network_g`` when set; paths relative to ``root``). Two runs are the same run only when these and
    their options match: a teacher retrained to the same path makes other students. A missing file gives ''."""
    path = opt.get('path') or {}
    return {key: file_digest(osp.join(root, osp.expanduser(path[key]))) for key in INPUT_KEYS if path.get(key)}


def read_inputs(folder: str) -> Optional[Dict[str, str]]:
    """The ``run_inputs.json`` kept in ``folder``; None when there is none (runs finished before it was kept)."""
    stored = osp.join(folder, INPUTS_FILE)
    if not osp.isfile(stored):
        return None
    with open(stored) as f:
        return json.load(f)


def write_inputs(inputs: Dict[str, str], folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, INPUTS_FILE), 'w') as f:
        json.dump(inputs, f, indent=1, sort_keys=True)


def same_inputs(stored: Optional[Dict[str, str]], inputs: Dict[str, str]) -> bool:
    """Whether a run that kept ``stored`` started from ``inputs`` (:func:`run_inputs`). A run that kept no record
    (finished before records were kept) counts only when it starts from no weight file (e.g. a scratch run); a
    missing weight file ('') matches nothing."""
    if stored is None:
        return not inputs
    return stored == inputs and all(inputs.values())


def is_trained(opt: dict, root: str = '.', check_inputs: bool = True) -> bool:
    """True when the run ``opt['name']`` finished, its stored options equal ``opt`` (ignoring key order) and, with
    ``check_inputs``, it started from the weight files ``opt`` names as they are now (:func:`run_inputs`). Leave the
    inputs out only where the weights are checked otherwise (``keep_weights``: the record's weights fingerprint)."""
    folder = osp.join(root, 'experiments', opt['name'])
    stored = osp.join(folder, 'run_options.yml')
    if not (osp.isfile(latest_weights(opt['name'], root)) and osp.isfile(stored)):
        return False
    if load_options(stored) != _plain(opt):
        return False
    return not check_inputs or same_inputs(read_inputs(folder), run_inputs(opt, root))


@dataclass
class TrainJob:
    """One training run: the options to train and where its console output goes.

    Attributes:
        opt (dict): complete options (``name`` and ``train.total_iter`` are read).
        opt_path (str): where the generated option file is written.
        log_path (str): console output of the run (BasicSR's own log also goes to ``experiments/<name>/``).
        label (str): progress-bar label; the run name when empty.
        after (str): name of a run of the same batch that must finish first (e.g. the teacher); '' for none.
    """
    opt: dict
    opt_path: str
    log_path: str
    label: str = ''
    after: str = ''
    process: Optional[subprocess.Popen] = field(default=None, repr=False)
    inputs: Dict[str, str] = field(default_factory=dict, repr=False)  # run_inputs() when it started

    @property
    def name(self) -> str:
        return self.opt['name']

    @property
    def total_iter(self) -> int:
        return int(self.opt['train']['total_iter'])


def train_command(opt_path: str) -> List[str]:
    """The command line that trains one option file with our entry point; it continues from the run's last
    training state when there is one (option files that save checkpoints can be stopped and started again)."""
    return [sys.executable, TRAIN_ENTRY, '-opt', opt_path, '--auto_resume']


def forget_other_states(job: 'TrainJob', root: str) -> None:
    """Delete the run's training states when its last start used other options or other starting weight files
    (a retrained teacher): a resume must continue the same run. The last start left ``job.opt_path`` and, beside it,
    ``<opt_path>.inputs.json`` (:func:`restore_snapshot` writes both for the checkpoint it restores)."""
    states = osp.join(root, 'experiments', job.name, 'training_states')
    if not osp.isdir(states):
        return
    last_inputs = None
    if osp.isfile(job.opt_path + '.inputs.json'):
        with open(job.opt_path + '.inputs.json') as f:
            last_inputs = json.load(f)
    if osp.isfile(job.opt_path):
        same = load_options(job.opt_path) == _plain(job.opt) and same_inputs(last_inputs, job.inputs)
    else:  # no record of the last start: only a run that starts from no weight file can be vouched for
        same = not job.inputs
    if not same:
        shutil.rmtree(states, ignore_errors=True)


def last_logged_iter(log_path: str) -> int:
    """The last ``iter:`` number printed by BasicSR's MessageLogger (``[name..][epoch:  0, iter:   1,500, lr:(``)."""
    if not osp.isfile(log_path):
        return 0
    with open(log_path, errors='replace') as f:
        found = _ITER_RE.findall(f.read())
    return int(found[-1].replace(',', '')) if found else 0


def write_start(job: 'TrainJob') -> None:
    """Keep what this start of ``job`` uses: its options at ``job.opt_path``, its inputs beside them."""
    write_options(job.opt, job.opt_path)
    with open(job.opt_path + '.inputs.json', 'w') as f:
        json.dump(job.inputs, f)


def _start(job: TrainJob, root: str, threads: int) -> None:
    job.inputs = run_inputs(job.opt, root)  # the teacher exists by now (``after``, or train_rows' two calls)
    forget_other_states(job, root)
    write_start(job)
    os.makedirs(osp.dirname(osp.abspath(job.log_path)), exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(job.log_path, 'w') as log:  # the child keeps its own handle
        job.process = subprocess.Popen(train_command(osp.abspath(job.opt_path)), cwd=root, stdout=log,
                                       stderr=subprocess.STDOUT, env=env)


def _finish(job: TrainJob, root: str) -> Optional[str]:
    """Record a finished run; returns an error message when it failed."""
    code = job.process.returncode
    if code == 0 and osp.isfile(latest_weights(job.name, root)):
        write_inputs(job.inputs, osp.join(root, 'experiments', job.name))
        write_options(job.opt, osp.join(root, 'experiments', job.name, 'run_options.yml'))
        return None
    with open(job.log_path, errors='replace') as f:
        tail = ''.join(f.readlines()[-15:])
    return f'run {job.name} failed (exit code {code}, log {job.log_path}):\n{tail}'


def run_cache() -> str:
    """Folder outside the work tree that keeps finished runs: ``$FACD_STUDY_CACHE``, else
    ``~/.cache/facd-basicsr/runs``. A study spread over sessions whose work trees are laid anew (experiments/ is
    not committed) finds its teacher and finished rows there, on a machine that is kept."""
    return os.environ.get('FACD_STUDY_CACHE') or osp.join(osp.expanduser('~'), '.cache', 'facd-basicsr', 'runs')


def _run_files(name: str, root: str) -> List[str]:
    """What a finished run leaves that the tables read: weights, options, its newest BasicSR log, gate_log.csv."""
    folder = osp.join(root, 'experiments', name)
    logs = sorted(f for f in os.listdir(folder) if f.startswith('train_') and f.endswith('.log'))
    files = [osp.join('models', 'net_g_latest.pth'), 'run_options.yml'] + logs[-1:]
    return files + [f for f in ('gate_log.csv', INPUTS_FILE) if osp.isfile(osp.join(folder, f))]


def cache_run(name: str, root: str, cache: str) -> None:
    """Copy a finished run's files into ``cache/<name>/``, unless the cache holds exactly these files already."""
    target = osp.join(cache, name)
    files = _run_files(name, root)
    kept = [f for f in files if not f.startswith('train_')]  # the weights, options, inputs and gate log
    if all(file_digest(osp.join(target, rel)) == file_digest(osp.join(root, 'experiments', name, rel)) for rel in kept):
        return
    for rel in files:
        os.makedirs(osp.dirname(osp.join(target + '.partial', rel)), exist_ok=True)
        shutil.copy2(osp.join(root, 'experiments', name, rel), osp.join(target + '.partial', rel))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(target + '.partial', target)  # complete or absent


def restore_run(opt: dict, root: str, cache: str, check_inputs: bool = True) -> bool:
    """Put a cached run of exactly ``opt`` (and, with ``check_inputs``, of the starting weight files now at its
    paths) back into ``experiments/``; True when it is trained afterwards (:func:`is_trained`, same check)."""
    source = osp.join(cache, opt['name'])
    stored = osp.join(source, 'run_options.yml')
    if not osp.isfile(stored) or load_options(stored) != _plain(opt):
        return False
    if check_inputs and not same_inputs(read_inputs(source), run_inputs(opt, root)):
        return False  # trained from another teacher (or pretrained student) than the one now at that path
    target = osp.join(root, 'experiments', opt['name'])
    for folder, _, names in os.walk(source):
        for file_name in names:
            rel = osp.relpath(osp.join(folder, file_name), source)
            os.makedirs(osp.dirname(osp.join(target, rel)), exist_ok=True)
            shutil.copy2(osp.join(folder, file_name), osp.join(target, rel))
    return is_trained(opt, root, check_inputs)


def restore_kept(opt: dict, record: Optional[Mapping], weights_path: str, root: str = '.') -> bool:
    """Put the committed final weights of run ``opt`` back into ``experiments/`` as a finished run; True when done.

    Only for runs that start from no weight file (the study teachers): what a distilled run learnt from cannot be
    vouched for by its weights alone. ``record`` is the run's record of the same options (``stored_record``) and
    ``weights_path`` its kept file (``{'params': state_dict}``); nothing is written unless the file is exactly the
    network the record scored (its ``student`` fingerprint). A clone of main on a fresh machine thus gets the x4
    teacher back instead of training it again (about 2 h, and, measured twice, other weights: docs/ablation.md).
    """
    if run_inputs(opt, root) or not record or not record.get('student') or not osp.isfile(weights_path):
        return False
    try:
        net = load_network(opt['network_g'], weights_path)
    except (KeyError, ValueError):  # not a checkpoint of this network
        return False
    if fingerprint(net) != record['student']:
        return False
    folder = osp.join(root, 'experiments', opt['name'])
    os.makedirs(osp.join(folder, 'models'), exist_ok=True)
    atomic_torch_save({'params': network_state(net)}, latest_weights(opt['name'], root), 'restored weights')
    write_inputs({}, folder)
    write_options(opt, osp.join(folder, 'run_options.yml'))
    return is_trained(opt, root)


def _newest_state_iter(run_folder: str) -> Optional[int]:
    """Iteration of the newest ``training_states/<iter>.state`` under ``run_folder``; None when there is none."""
    folder = osp.join(run_folder, 'training_states')
    iters = [int(f[:-len('.state')]) for f in os.listdir(folder) if f.endswith('.state')] if osp.isdir(folder) else []
    return max(iters) if iters else None


def snapshot_run(job: 'TrainJob', root: str, cache: str) -> None:
    """Copy the newest checkpoint of a run in progress (its ``.state`` and the model files of that iteration) and
    its options into ``cache/<name>.resume/``, so that a new work tree can continue it (:func:`restore_snapshot`)."""
    folder = osp.join(root, 'experiments', job.name)
    it = _newest_state_iter(folder)
    target = osp.join(cache, f'{job.name}.resume')
    if it is None or (osp.isfile(osp.join(target, 'options.yml')) and _newest_state_iter(target) == it
                      and read_inputs(target) == job.inputs):
        return
    models = [osp.join('models', f) for f in os.listdir(osp.join(folder, 'models')) if f.endswith(f'_{it}.pth')]
    partial = target + '.partial'
    shutil.rmtree(partial, ignore_errors=True)
    for rel in [osp.join('training_states', f'{it}.state')] + models:
        os.makedirs(osp.dirname(osp.join(partial, rel)), exist_ok=True)
        shutil.copy2(osp.join(folder, rel), osp.join(partial, rel))
    write_options(job.opt, osp.join(partial, 'options.yml'))
    write_inputs(job.inputs, partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def restore_snapshot(job: 'TrainJob', root: str, cache: str) -> bool:
    """Put the cached checkpoint of a run of the same options and starting weight files back when ``experiments/``
    has no state of it;
    BasicSR's ``--auto_resume`` then continues from there. True when something was restored."""
    source = osp.join(cache, f'{job.name}.resume')
    stored = osp.join(source, 'options.yml')
    if _newest_state_iter(osp.join(root, 'experiments', job.name)) is not None or not osp.isfile(stored):
        return False
    if load_options(stored) != _plain(job.opt) or not same_inputs(read_inputs(source), run_inputs(job.opt, root)):
        return False
    target = osp.join(root, 'experiments', job.name)
    for sub in ('training_states', 'models'):
        os.makedirs(osp.join(target, sub), exist_ok=True)
        for name in os.listdir(osp.join(source, sub)):
            shutil.copy2(osp.join(source, sub, name), osp.join(target, sub, name))
    job.inputs = run_inputs(job.opt, root)
    write_start(job)  # the checkpoint's options and inputs were checked: its start is vouched for
    return True


def _raise_exit(signum, frame) -> None:
    raise SystemExit(f'stopped by signal {signum}')


def _next_ready(pending: List[TrainJob], running: Dict[int, TrainJob]) -> Optional[TrainJob]:
    """Take the first pending job whose ``after`` run is neither pending nor running; None if none is ready."""
    busy = {job.name for job in pending} | {job.name for job in running.values()}
    for i, job in enumerate(pending):
        if job.after not in busy:
            return pending.pop(i)
    if pending and not running:
        raise ValueError(f'runs wait for each other: {[(job.name, job.after) for job in pending]}')
    return None


def run_jobs(jobs: List[TrainJob], parallel: int = 1, root: str = '.', poll_s: float = 2., force: bool = False,
             threads: int = 1, cache: Optional[str] = None,
             on_finish: Optional[Callable[[TrainJob], None]] = None, start_before: Optional[float] = None) -> List[str]:
    """Train every job that is not trained yet, ``parallel`` at a time, each with a progress bar.

    Args:
        jobs (list[TrainJob]): runs, started in this order, except that a run waits for its ``after`` run.
        parallel (int): runs at once. Default: 1.
        root (str): working directory of the runs (``datasets/`` and ``experiments/`` are relative to it).
        poll_s (float): seconds between two looks at the logs. Default: 2.
        force (bool): train even the runs that are already trained. Default: False.
        threads (int): torch threads per run. Default: 1: on a busy CPU a multi-threaded run spends most of its time
            waiting for its own descheduled threads (measured 10x slower), so use processes, not threads.
        cache (str | None): with a folder (e.g. :func:`run_cache`), runs missing from ``experiments/`` are restored
            from it when it holds them with the same options and starting weight files (:func:`run_inputs`), every
            finished run is copied into it, and so is the
            newest checkpoint of every running run (continued by ``--auto_resume`` from a new work tree).
        on_finish (callable | None): called with each job that finished well, as soon as it finished (e.g. to score
            and record it before a session ends).
        start_before (float | None): ``time.time()`` after which no run starts (the runs in flight finish): a
            session that ends at a known time does not start a run it would lose. Default: None (no limit).

    Returns:
        list[str]: names of the runs trained now (reused runs are not listed).

    Raises:
        RuntimeError: after the other runs finished, when at least one run failed; the message holds its log tail.
    """
    if cache and not force:
        for job in jobs:
            if not is_trained(job.opt, root) and not restore_run(job.opt, root, cache):
                restore_snapshot(job, root, cache)
    pending = [job for job in jobs if force or not is_trained(job.opt, root)]
    running: Dict[int, TrainJob] = {}  # progress-bar slot -> job
    bars: Dict[str, tqdm] = {}
    errors, trained = [], []
    previous = signal.signal(signal.SIGTERM, _raise_exit)  # a killed script takes its runs with it
    try:
        while (pending and not _too_late(start_before)) or running:
            for slot in range(parallel):
                job = _next_ready(pending, running) if slot not in running and not _too_late(start_before) else None
                if job is not None:
                    running[slot] = job
                    _start(job, root, threads)
                    bars[job.name] = tqdm(total=job.total_iter, desc=job.label or job.name, position=slot, unit='it',
                                          leave=True, dynamic_ncols=True)
            time.sleep(poll_s)
            for job in running.values() if cache else ():
                snapshot_run(job, root, cache)  # a no-op until the run writes a newer checkpoint
            for slot, job in list(running.items()):
                bar = bars[job.name]
                done = last_logged_iter(job.log_path)
                if done > bar.n:
                    bar.update(done - bar.n)
                if job.process.poll() is not None:
                    del running[slot]
                    bar.close()
                    error = _finish(job, root)
                    if error:
                        errors.append(error)
                    else:
                        trained.append(job.name)
                        if cache:
                            cache_run(job.name, root, cache)  # at once: a session may end before the others
                        if on_finish is not None:
                            on_finish(job)
        for job in jobs if cache else ():  # runs trained earlier without a cache
            if is_trained(job.opt, root):
                cache_run(job.name, root, cache)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for job in running.values():  # interrupted: do not leave orphans behind
            job.process.terminate()
    left = [job.name for job in pending]  # started jobs leave the list
    if left:
        print(f'Not started (--start-before): {len(left)} run(s), {", ".join(left)}', flush=True)
    if errors:
        raise RuntimeError('\n\n'.join(errors))
    return trained


def _too_late(start_before: Optional[float]) -> bool:
    return start_before is not None and time.time() >= start_before
