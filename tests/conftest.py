"""Shared fixtures: a tiny real-photo paired SR set (folders + LMDB) built once per session, and run helpers."""
import os
import os.path as osp
import subprocess
import sys
import tempfile

import pytest

import facd_basicsr  # noqa: F401  (compat alias before any basicsr import in the tests)
from facd_study.sample_data import build_sample_sets

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# the study driver's run cache (~/.cache/facd-basicsr/runs) holds the user's runs: tests (and the runs they start)
# keep theirs apart, one folder per test process
os.environ['FACD_STUDY_CACHE'] = tempfile.mkdtemp(prefix='facd_test_run_cache_')


@pytest.fixture(scope='session')
def sample_root(tmp_path_factory):
    """A folder holding ``datasets/sample/{train,val}`` at x2 (GT 96 / 64 px), folders and LMDB.

    Options files refer to ``datasets/sample/...`` relative to the CWD, so runs use this folder as their CWD.
    """
    root = tmp_path_factory.mktemp('sample')
    build_sample_sets(str(root / 'datasets' / 'sample'), scale=2)
    return root


@pytest.fixture
def run_dir(sample_root, tmp_path):
    """A fresh working directory whose ``datasets`` points at the session's sample data."""
    os.symlink(sample_root / 'datasets', tmp_path / 'datasets')
    return tmp_path


TINY_FACD_OPT = osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml')


@pytest.fixture(scope='module')
def work(sample_root, tmp_path_factory):
    """A working directory with the sample datasets and the tiny FACD option file's teacher (random weights)."""
    import torch
    import yaml
    from basicsr.archs import build_network
    root = tmp_path_factory.mktemp('work')
    os.symlink(sample_root / 'datasets', root / 'datasets')
    with open(TINY_FACD_OPT) as f:
        opt = yaml.safe_load(f)
    teacher = root / opt['path']['pretrain_network_t']
    teacher.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({'params': build_network(opt['network_t']).state_dict()}, teacher)
    return root


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module of tiny-net tests: faster on a shared 2-core machine (restored after)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_python(args, cwd, env=None, timeout=600):
    """Run ``python args...`` in ``cwd`` with the test interpreter; returns the CompletedProcess (never raises)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=str(cwd), env=full_env, capture_output=True, text=True,
                          timeout=timeout)
