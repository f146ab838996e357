"""Start-up checks of a run of our models, all made before BasicSR creates or renames any folder.

BasicSR's ``train_pipeline`` renames an existing ``experiments/<name>`` to ``<name>_archived_<time>`` first and
builds the datasets and the model afterwards; a start that then fails (a missing teacher file, a typo in a key, a
GPU asked for on a CPU machine) has already moved the earlier run's folder away. For runs of our models, the
``parse_options`` hook (:mod:`facd_basicsr.host.patches`) calls:

* :func:`check_before_parsing`: the option file is read with the safe loader (a tag that would construct a Python
  object is refused, nothing runs), and every ``--force_yml`` entry names keys that exist;
* :func:`check_after_parsing`: top-level and ``train:`` keys that neither BasicSR nor we read (with close matches),
  the devices asked for, the data paths (and dataloader workers capped at the usable cores), no live run in the
  folder (:mod:`facd_basicsr.host.run_lock`), and, for a fresh start, the model itself built once in a scratch
  folder (teacher, taps, adapters, teacher check).

Each failure is one :class:`StartupError` naming the key, the file or the folder; our entry points print it as one
``error:`` line and exit 2, and nothing in ``experiments/``, ``results/`` or ``tb_logger/`` was touched.
"""
import copy
import difflib
import glob
import logging
import os
import os.path as osp
import sys
import tempfile
from typing import Callable, List, Optional, Sequence

import torch
import yaml

from facd_basicsr.host.data_order import preserved_rng
from facd_basicsr.host.option_file import OptionFileError, load_option_file
from facd_basicsr.host.run_lock import RunFolderError, check_not_held
from facd_basicsr.host.student_runtime import STUDENT_KEYS

# Top-level keys BasicSR 1.4.2 reads for an SR run (parse_options, train_pipeline, BaseModel / SRModel), ours, and
# what parse_options adds itself; network_* blocks are accepted by prefix.
TOP_LEVEL_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'path', 'train', 'val',
                  'logger', 'dist_params', 'find_unused_parameters', 'distill', 'is_train', 'dist', 'rank',
                  'world_size', 'auto_resume', 'root_path')
TRAIN_KEYS = ('total_iter', 'warmup_iter', 'ema_decay', 'optim_g', 'scheduler', 'pixel_opt', 'perceptual_opt', 'kd_opt',
              'feature_opt', 'nonfinite', 'nonfinite_skip_limit') + STUDENT_KEYS
SCRATCH_PATH_KEYS = ('experiments_root', 'results_root', 'models', 'training_states', 'log', 'visualization')


class StartupError(RuntimeError):
    """A start-up check failed; nothing was created or renamed."""


def option_arguments(argv: Sequence[str]) -> tuple:
    """(``-opt`` path, ``--force_yml`` entries) of a BasicSR command line; (None, []) when absent."""
    path, force, in_force = None, [], False
    for i, arg in enumerate(argv):
        if arg == '-opt' and i + 1 < len(argv):
            path, in_force = argv[i + 1], False
        elif arg == '--force_yml':
            in_force = True
        elif arg.startswith('-'):
            in_force = False
        elif in_force:
            force.append(arg)
    return path, force


def peek_model_type(path: Optional[str]) -> Optional[str]:
    """The top-level ``model_type`` of the YAML file ``path``, read without constructing anything (None if unknown)."""
    try:
        with open(path, encoding='utf-8') as f:
            node = yaml.compose(f, Loader=yaml.SafeLoader)
    except (OSError, TypeError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if getattr(key, 'value', None) == 'model_type' and isinstance(value, yaml.ScalarNode):
            return value.value
    return None


def unknown_key_error(section: str, unknown: List[str], known: Sequence[str]) -> str:
    """``<section>: unknown option(s) 'x' (did you mean 'y'?). Known: ...``."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=2)
        hints.append(f'{key!r}' + (f' (did you mean {" or ".join(repr(c) for c in close)}?)' if close else ''))
    return f'{section}: unknown option(s) {", ".join(hints)}. Known: {", ".join(known)}'


def check_before_parsing(path: Optional[str], force_yml: Sequence[str]) -> dict:
    """The option file read safely, and ``--force_yml`` checked against it; returns the options read."""
    if path is None:
        raise StartupError('-opt: no option file given')
    try:
        opt = load_option_file(path)
    except OptionFileError as err:
        raise StartupError(str(err)) from None
    for entry in force_yml:
        keys = entry.split('=')[0].strip().split(':')
        node = opt
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node, dict) or key not in node:
                where = ':'.join(keys[:depth + 1])
                raise StartupError(f'--force_yml {entry}: {where} is not in {path} (--force_yml can set a key inside '
                                   'existing sections only)')
            node = node[key]
    return opt


def check_keys(opt: dict) -> None:
    """Top-level and ``train:`` keys that nothing reads are refused, with their close matches."""
    unknown = sorted(k for k in opt if k not in TOP_LEVEL_KEYS and not k.startswith('network_'))
    if unknown:
        raise StartupError(unknown_key_error('the option file', unknown, TOP_LEVEL_KEYS + ('network_g', )))
    if opt.get('is_train') and isinstance(opt.get('train'), dict):
        unknown = sorted(k for k in opt['train'] if k not in TRAIN_KEYS)
        if unknown:
            raise StartupError(unknown_key_error('train', unknown, TRAIN_KEYS))


def check_devices(opt: dict) -> None:
    """``num_gpu`` and ``prefetch_mode: cuda`` must fit this machine."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    num_gpu = opt.get('num_gpu')
    if isinstance(num_gpu, bool) or not isinstance(num_gpu, int) or num_gpu < 0:
        raise StartupError(f'num_gpu must be auto or an integer >= 0, got {num_gpu!r}')
    if num_gpu > available:
        raise StartupError(f'num_gpu: {num_gpu}, but this machine has {available} usable GPU(s): set num_gpu: auto '
                           '(every GPU there is, the CPU when there is none) or num_gpu: 0 for the CPU')
    train_set = (opt.get('datasets') or {}).get('train') or {}
    if train_set.get('prefetch_mode') == 'cuda' and num_gpu == 0:
        raise StartupError('datasets.train.prefetch_mode: cuda needs a GPU: set prefetch_mode: cpu (or ~) on a CPU run')


def check_data_paths(opt: dict) -> None:
    """Every ``dataroot_*`` and ``meta_info_file`` of every dataset exists."""
    for phase, dataset in (opt.get('datasets') or {}).items():
        for key, value in (dataset or {}).items():
            if (key.startswith('dataroot') or key == 'meta_info_file') and isinstance(value, str):
                if not osp.exists(value):
                    raise StartupError(f'datasets.{phase}.{key}: {value} does not exist (paths are relative to the '
                                       f'folder the run starts in; facd-prepare --check lists what is ready)')


def cap_workers(opt: dict, cores: int) -> List[str]:
    """Lower every ``num_worker_per_gpu`` above ``cores`` to ``cores`` (a recipe's 6 workers on a 2-core machine only
    oversubscribe it, and torch warns); returns one note per change, for the log."""
    notes = []
    for phase, dataset in (opt.get('datasets') or {}).items():
        workers = (dataset or {}).get('num_worker_per_gpu')
        if isinstance(workers, int) and not isinstance(workers, bool) and workers > cores:
            dataset['num_worker_per_gpu'] = cores
            notes.append(f'datasets.{phase}.num_worker_per_gpu: {workers} -> {cores} (the CPU cores this process may '
                         'use)')
    return notes


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def run_folder(opt: dict) -> str:
    """``experiments/<name>`` of a training run, ``results/<name>`` of a test run."""
    return opt['path']['experiments_root' if opt.get('is_train') else 'results_root']


def is_resuming(opt: dict) -> bool:
    """Whether BasicSR will resume (then it renames nothing): ``path.resume_state``, or ``--auto_resume`` with a
    ``.state`` in the run's folder."""
    if opt['path'].get('resume_state'):
        return True
    states = osp.join(opt['path'].get('training_states') or '', '*.state')
    return bool(opt.get('auto_resume') and opt.get('is_train') and glob.glob(states))


def build_in_scratch_folder(opt: dict) -> None:
    """Build the model once with its output paths in a temporary folder: every check of its start-up runs.

    The random states are restored afterwards, so the real start initialises the networks exactly as it would have.
    """
    from basicsr.models import build_model
    from basicsr.utils import logger as basicsr_logger
    scratch_opt = copy.deepcopy(opt)
    logger = logging.getLogger('basicsr')
    was_initialised = 'basicsr' in basicsr_logger.initialized_logger
    handlers, disabled = list(logger.handlers), logger.disabled
    logger.disabled = True  # the real start logs the same lines
    try:
        with tempfile.TemporaryDirectory(prefix='facd_startup_') as scratch, preserved_rng():
            for key in SCRATCH_PATH_KEYS:
                if key in scratch_opt['path']:
                    scratch_opt['path'][key] = osp.join(scratch, key)
            scratch_opt['path']['log'] = scratch
            build_model(scratch_opt)
    finally:
        logger.disabled = disabled
        if not was_initialised:  # train_pipeline must still set up its log file at the real start
            basicsr_logger.initialized_logger.pop('basicsr', None)
            for handler in logger.handlers[:]:
                if handler not in handlers:
                    logger.removeHandler(handler)


def check_after_parsing(opt: dict) -> None:
    """Keys, devices, data paths, the folder's lock and (fresh starts) the model; each failure a StartupError."""
    check_keys(opt)
    check_devices(opt)
    check_data_paths(opt)
    for note in cap_workers(opt, usable_cores()):
        print(f'note: {note}', file=sys.stderr)
    if opt.get('rank', 0) == 0:
        try:
            check_not_held(run_folder(opt))
        except RunFolderError as err:
            raise StartupError(str(err)) from None
    if is_resuming(opt):
        return
    try:
        build_in_scratch_folder(opt)
    except Exception as err:  # noqa: B902  (any failure of the model's start-up, reported as one line)
        raise StartupError(f'{type(err).__name__}: {err}') from err


def run_checked(pipeline: Callable[[str], None]) -> None:
    """Our entry points: the option file read safely (whatever its model), then BasicSR's ``pipeline`` in the current
    folder; a failed start-up check is one ``error:`` line on stderr and exit status 2."""
    path, force_yml = option_arguments(sys.argv[1:])
    try:
        if path is not None:  # without -opt, BasicSR's own parser answers (--help, or its usage error)
            check_before_parsing(path, force_yml)
        pipeline(os.getcwd())
    except StartupError as err:
        print(f'error: {err}', file=sys.stderr)
        print('Nothing was created or renamed.', file=sys.stderr)
        sys.exit(2)
