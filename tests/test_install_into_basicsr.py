"""facd-install: a BasicSR checkout runs FACD through its own basicsr/train.py and test.py, then uninstalls to the byte.

The checkout is laid out from the installed basicsr package (1.4.2: the same sources as tag v1.4.2, with its generated
``version.py``) plus user files in ``options/``. Runs write ``experiments/``, ``results/``, ``tb_logger/`` and Python
bytecode (``__pycache__/`` of BasicSR's own modules); those are run outputs and are excluded from the byte-for-byte
comparison, while a separate check proves no bytecode of a removed installer file is left behind.

"Not installed" uses a second venv whose only link to this one is a ``.pth`` line that appends our site-packages to
``sys.path``: torch, basicsr and friends import, but site.py processes ``.pth`` files of site-packages folders only, so
our editable install's finder (itself started by a ``.pth`` in our site-packages) never runs there.
"""
import hashlib
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata

import basicsr
import pytest
import torch
import yaml
from basicsr.archs import build_network

from facd_basicsr.tools import install_into_basicsr as installer

from conftest import REPO_ROOT

SOURCE_TRAIN = osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml')
TRAIN_OPT = 'options/train/FACD/train_FACD_tiny_x2.yml'
TEST_OPT = 'options/test/FACD/test_FACD_tiny_x2.yml'
SCRIPT = osp.join(REPO_ROOT, 'scripts', 'install_into_basicsr.py')
# A few iterations; a random-weight teacher cannot beat bicubic, so its quality check is off here.
FORCE = ['--force_yml', 'train:total_iter=4', 'val:val_freq=4', 'logger:save_checkpoint_freq=4',
         'logger:print_freq=2', 'logger:use_tb_logger=false', 'distill:teacher_check=false']
OUTPUTS = ('experiments', 'results', 'tb_logger')
USER_TRAIN = b'# my own experiment\nname: my_EDSR_x2\nmodel_type: SRModel\n'

needs_tiny_config = pytest.mark.skipif(not osp.isfile(SOURCE_TRAIN), reason=f'{SOURCE_TRAIN} is missing')


def run(args, cwd, python=sys.executable):
    """Run ``python args`` from ``cwd`` with ``PYTHONPATH=.`` and bytecode writing on; never raises."""
    env = dict(os.environ, PYTHONPATH='.', PYTHONDONTWRITEBYTECODE='')
    return subprocess.run([python, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300)


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot(root):
    """{relative path: sha256} of every file and {relative folder + '/': 'dir'}; run outputs excluded."""
    out = {}
    for folder, dirs, files in os.walk(root):
        rel = osp.relpath(folder, root)
        dirs[:] = [d for d in dirs if d != '__pycache__' and not (rel == '.' and d in OUTPUTS)]
        out[rel + '/'] = 'dir'
        out.update({osp.join(rel, name): sha(osp.join(folder, name)) for name in files})
    return out


def orphan_bytecode(root):
    """Cached bytecode whose source file is gone (what a removed ``.py`` would leave behind)."""
    orphans = []
    for folder, _, files in os.walk(root):
        if osp.basename(folder) == '__pycache__':
            src_dir = osp.dirname(folder)
            orphans += [
                osp.join(folder, n) for n in files if not osp.isfile(osp.join(src_dir, n.split('.')[0] + '.py'))]
    return orphans


@pytest.fixture
def checkout(tmp_path):
    """A BasicSR v1.4.2 checkout: basicsr/ (sources + generated version.py), VERSION, the user's own options."""
    root = tmp_path / 'BasicSR'
    shutil.copytree(osp.dirname(basicsr.__file__), root / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    (root / 'basicsr' / 'version.py').write_text("# GENERATED VERSION FILE\n__version__ = '1.4.2'\n"
                                                 "__gitsha__ = 'unknown'\nversion_info = (1, 4, 2)\n")
    (root / 'VERSION').write_text('1.4.2\n')
    for kind in ('train', 'test'):
        (root / 'options' / kind / 'EDSR').mkdir(parents=True)
        (root / 'options' / kind / 'EDSR' / f'{kind}_my_EDSR_x2.yml').write_bytes(USER_TRAIN)
    return root


@pytest.fixture(scope='module')
def bare_python(tmp_path_factory):
    """A Python that imports torch and basicsr from this venv but cannot import facd_basicsr."""
    root = tmp_path_factory.mktemp('bare_venv')
    venv.create(str(root), with_pip=False)
    site = subprocess.run([str(root / 'bin' / 'python'), '-c', 'import site; print(site.getsitepackages()[0])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    paths = dict.fromkeys([sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']])
    with open(osp.join(site, 'our_venv_packages.pth'), 'w') as f:
        f.write(''.join(f'{p}\n' for p in paths))
    python = str(root / 'bin' / 'python')
    probe = "import importlib.util as u; print(u.find_spec('facd_basicsr') is None, u.find_spec('basicsr') is None)"
    found = subprocess.run([python, '-c', probe], cwd=str(root), capture_output=True, text=True, check=True)
    assert found.stdout.split() == ['True', 'False']
    return python


def write_random_teacher(root):
    """The teacher file the tiny config names (random weights: the run only has to work, not to learn)."""
    with open(root / TRAIN_OPT) as f:
        opt = yaml.safe_load(f)
    path = root / opt['path']['pretrain_network_t']
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({opt['path'].get('param_key_t', 'params'): build_network(opt['network_t']).state_dict()}, path)
    return opt['name']


def last_psnr(text):
    values = re.findall(r'# psnr: ([0-9.]+)', text)
    assert values, text[-2000:]
    return float(values[-1])


def train_and_test(root, sample_root, python):
    """Checkout's own train.py (tiny FACD, 4 iterations, resumed to 6 on the CPU) then test.py on the student."""
    os.symlink(sample_root / 'datasets', root / 'datasets')
    name = write_random_teacher(root)
    train = run(['basicsr/train.py', '-opt', TRAIN_OPT, *FORCE], root, python)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    log = train.stdout + train.stderr
    assert 'Model [FACDModel] is created.' in log
    assert (root / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
    # BasicSR's own load_resume_state needs CUDA; the plugin's import patched the checkout's train.py (__main__)
    more = [arg.replace('total_iter=4', 'total_iter=6') for arg in FORCE]
    resumed = run(['basicsr/train.py', '-opt', TRAIN_OPT, '--auto_resume', *more], root, python)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'Resuming training from epoch' in log
    test = run(['basicsr/test.py', '-opt', TEST_OPT], root, python)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    # test.py (PNG folders) scores the saved student exactly as the last validation of training (LMDB) did
    assert last_psnr(test.stdout + test.stderr) == pytest.approx(last_psnr(log), abs=1e-4)
    with open(root / TEST_OPT) as f:
        results = root / 'results' / yaml.safe_load(f)['name'] / 'visualization' / 'sample_val'
    assert len(os.listdir(results)) == 2
    os.remove(root / 'datasets')


def assert_back_to(root, before):
    """Outputs of the runs deleted, every other file byte-identical to ``before`` and no orphan bytecode."""
    for out in OUTPUTS:
        shutil.rmtree(root / out, ignore_errors=True)
    assert snapshot(root) == before
    assert orphan_bytecode(root) == []


@needs_tiny_config
def test_installed_package_way(checkout, sample_root):
    before = snapshot(checkout)
    done = run([SCRIPT, str(checkout)], checkout)
    assert done.returncode == 0, done.stderr
    assert (checkout / installer.SHIM).is_file() and not (checkout / 'facd_basicsr').exists()
    with open(SOURCE_TRAIN, 'rb') as f:
        assert (checkout / TRAIN_OPT).read_bytes() == f.read()
    train_and_test(checkout, sample_root, sys.executable)
    undone = run([SCRIPT, str(checkout), '--uninstall'], checkout)
    assert undone.returncode == 0, undone.stderr
    assert_back_to(checkout, before)


def test_console_script_points_at_main():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group='console_scripts')}
    assert scripts['facd-install'] == 'facd_basicsr.tools.install_into_basicsr:main'


@needs_tiny_config
def test_copy_way_where_the_package_is_not_installed(checkout, sample_root, bare_python):
    before = snapshot(checkout)
    done = run([SCRIPT, str(checkout), '--copy'], checkout, bare_python)
    assert done.returncode == 0, done.stderr
    with open(osp.join(REPO_ROOT, 'facd_basicsr', 'models', 'facd_model.py'), 'rb') as f:
        assert (checkout / 'facd_basicsr' / 'models' / 'facd_model.py').read_bytes() == f.read()
    train_and_test(checkout, sample_root, bare_python)
    undone = run([SCRIPT, str(checkout), '--uninstall'], checkout, bare_python)
    assert undone.returncode == 0, undone.stderr
    assert_back_to(checkout, before)


@needs_tiny_config
def test_shim_says_what_to_run_when_the_package_is_missing(checkout, bare_python, tmp_path):
    assert installer.main([str(checkout)]) == 0
    failed = run(['basicsr/train.py', '-opt', TRAIN_OPT], checkout, bare_python)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if re.match(r'^\w+(Error|Exception)\b', line)]
    assert len(errors) == 1 and errors[0].startswith('ImportError: The package facd_basicsr is not importable')
    assert 'During handling' not in failed.stderr
    message = failed.stderr[failed.stderr.index(errors[0]):]
    assert f'pip install --no-build-isolation --no-deps -e {REPO_ROOT}' in message
    assert f'{SCRIPT} {checkout} --copy' in message and f'{SCRIPT} {checkout} --uninstall' in message
    # with the copy present but the checkout root off sys.path, the advice is PYTHONPATH=.
    assert installer.main([str(checkout), '--copy']) == 0
    shim = str(checkout / installer.SHIM)
    off_path = run(['-c', f'import runpy; runpy.run_path({shim!r})'], tmp_path, bare_python)
    assert '\nImportError: The package facd_basicsr is not importable' in off_path.stderr
    assert f'PYTHONPATH=. so that its copy {checkout}/facd_basicsr is found' in off_path.stderr
    # importing facd_basicsr first (as facd_basicsr/train.py does) re-enters it from the shim without a cycle
    probe = ('import facd_basicsr, basicsr, sys; from basicsr.utils.registry import MODEL_REGISTRY as R; '
             "print('FACDModel' in R, basicsr.__file__, 'basicsr.models.facd_plugin_model' in sys.modules)")
    reverse = run(['-c', probe], checkout, bare_python)
    assert reverse.stdout.split() == ['True', str(checkout / 'basicsr' / '__init__.py'), 'True'], reverse.stderr


def test_second_run_changes_nothing(checkout, capsys):
    assert installer.main([str(checkout)]) == 0
    installed = snapshot(checkout)
    manifest = checkout / installer.MANIFEST
    stamp = manifest.stat().st_mtime_ns
    capsys.readouterr()
    assert installer.main([str(checkout)]) == 0
    assert 'nothing changed' in capsys.readouterr().out
    assert snapshot(checkout) == installed and manifest.stat().st_mtime_ns == stamp
    recorded = installer.load_manifest(str(checkout))['files']
    assert recorded[installer.SHIM] == sha(checkout / installer.SHIM)
    assert set(recorded) == {installer.SHIM, *installer.option_files(osp.join(REPO_ROOT, 'options'))}


def test_refuses_files_it_did_not_write_or_that_changed(checkout, capsys):
    before = snapshot(checkout)
    assert installer.main([str(checkout), '--uninstall']) == 1  # no manifest: nothing of ours here
    assert 'nothing was installed there' in capsys.readouterr().err
    shim = checkout / installer.SHIM
    shim.write_text('# my own model file\n')
    assert installer.main([str(checkout)]) == 1
    assert f'{installer.SHIM} already exists and was not written by this installer' in capsys.readouterr().err
    assert shim.read_text() == '# my own model file\n' and not (checkout / installer.MANIFEST).exists()
    shim.unlink()
    assert installer.main([str(checkout)]) == 0
    installed = snapshot(checkout)
    edited = checkout / 'options' / 'train' / 'FACD' / sorted(os.listdir(checkout / 'options' / 'train' / 'FACD'))[0]
    original = edited.read_bytes()
    edited.write_bytes(original + b'# tuned by hand\n')
    capsys.readouterr()
    assert installer.main([str(checkout), '--uninstall']) == 1
    err = capsys.readouterr().err
    assert 'nothing was touched' in err and f'{edited.relative_to(checkout)} was modified since' in err
    assert installer.main([str(checkout)]) == 1  # a re-install does not overwrite the edit either
    edited.write_bytes(original)
    assert snapshot(checkout) == installed
    assert installer.main([str(checkout), '--uninstall']) == 0
    assert snapshot(checkout) == before


def test_v142_torchvision_fix_is_applied_recorded_and_reverted(checkout, capsys):
    target = checkout / installer.DEGRADATIONS
    original = target.read_bytes()
    if installer.OLD_IMPORT not in original:
        pytest.skip('the installed basicsr is not 1.4.2 (no functional_tensor import to fix)')
    expected = original.replace(b'transforms.functional_tensor import', b'transforms.functional import')
    assert installer.main([str(checkout)]) == 0
    patched = target.read_bytes()
    assert patched == expected
    changed = [i for i, (a, b) in enumerate(zip(original.splitlines(), patched.splitlines())) if a != b]
    assert len(changed) == 1 and len(original.splitlines()) == len(patched.splitlines())
    record = installer.load_manifest(str(checkout))['patches'][installer.DEGRADATIONS]
    assert record['original_sha256'] == hashlib.sha256(original).hexdigest()
    # --no-patch on top of a patched install restores the file and prints the fix instead
    capsys.readouterr()
    assert installer.main([str(checkout), '--no-patch']) == 0
    assert target.read_bytes() == original
    command = next(line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith('sed '))
    subprocess.run(command, shell=True, check=True)  # the printed command is the fix
    assert target.read_bytes() == expected
    target.write_bytes(original)
    assert installer.main([str(checkout)]) == 0 and target.read_bytes() == expected
    assert installer.main([str(checkout), '--uninstall']) == 0
    assert target.read_bytes() == original


def test_master_checkout_is_not_patched(checkout):
    target = checkout / installer.DEGRADATIONS
    fixed = target.read_bytes().replace(installer.OLD_IMPORT, installer.NEW_IMPORT)
    target.write_bytes(fixed)
    assert installer.main([str(checkout)]) == 0
    assert target.read_bytes() == fixed and installer.load_manifest(str(checkout))['patches'] == {}


def test_option_files_map_to_train_and_test_folders(tmp_path):
    src = tmp_path / 'options'
    (src / 'tiny').mkdir(parents=True)
    (src / 'train_FACD_RCAN_x4.yml').write_text('name: a\n')
    (src / 'tiny' / 'test_FACD_tiny_x2.yml').write_text('name: b\n')
    (src / 'tiny' / 'finetune_x2.yml').write_text('name: c\ntrain:\n  total_iter: 10\n')
    (src / 'tiny' / 'benchmark_x2.yml').write_text('name: d\nval:\n  save_img: false\n')
    (src / 'tiny' / 'notes.txt').write_text('not an option file')
    assert installer.option_files(str(src)) == {
        'options/train/FACD/train_FACD_RCAN_x4.yml': b'name: a\n',
        'options/test/FACD/test_FACD_tiny_x2.yml': b'name: b\n',
        'options/train/FACD/finetune_x2.yml': b'name: c\ntrain:\n  total_iter: 10\n',
        'options/test/FACD/benchmark_x2.yml': b'name: d\nval:\n  save_img: false\n',
    }
    (src / 'train_FACD_tiny_x2.yml').write_text('name: e\n')
    (src / 'tiny' / 'train_FACD_tiny_x2.yml').write_text('name: f\n')
    with pytest.raises(ValueError, match='would both be installed as options/train/FACD/train_FACD_tiny_x2.yml'):
        installer.option_files(str(src))


def test_not_a_checkout(tmp_path, capsys):
    assert installer.main([str(tmp_path)]) == 1
    assert 'is not a BasicSR checkout: basicsr/models/__init__.py is missing' in capsys.readouterr().err
