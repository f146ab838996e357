"""README from top to bottom on tiny data, as a new user on a CPU machine runs it (issue 29, "done when").

The commands are read out of README.md's and docs/tools.md's ``bash`` blocks, not retyped here, so a command that
changes in the docs changes here. Only placeholders are filled in (``~`` is a temporary home, ``experiments/<run>``
the recipe's run name, ``my_train.yml`` / ``my_run`` of docs/tools.md the same recipe and run), and the training
command gets ``--force_yml`` overrides that make it tiny: 3 iterations of batch 2 on 48-px patches, a randomly
initialised teacher without the teacher check, one log line per iteration, no loader workers.

The sequence: an official-layout DIV2K download (one 744 x 504 photo, HR and X2 / X3 / X4 zips) and EDSR's
``benchmark.tar`` with the four free sets (no Manga109); README's ``tar`` and ``facd-prepare ... --check``; README's
teacher conversion and checksum of an official-layout ``RCAN_BIX4.pt``; README's training and test commands of the
x4 RCAN recipe (subprocesses of our entry points); then ``facd-eval``, ``facd-infer`` and ``facd-export`` as the
docs write them. The console scripts run in this process (their ``main``); each separate interpreter would pay
about 6 s of imports.
"""
import glob
import os
import os.path as osp
import re
import shlex
import subprocess
import tarfile

import cv2
import pytest
import torch
import yaml
from basicsr.archs import build_network

from facd_basicsr.tools import checksum, convert_teacher, evaluate, export, infer, prepare

from conftest import REPO_ROOT, run_python
from official_layouts import OfficialRCANLayout
from test_prepare import make_div2k, photo

RECIPE = 'options/train_FACD_RCAN_x4.yml'
TEST_FILE = 'options/test/test_FACD_RCAN_x4.yml'
RUN = 'FACD_RCAN_x4_G10B6_from_G10B20_DIV2K_300k_B16G1'
FREE_SETS = ('Set5', 'Set14', 'B100', 'Urban100')
TINY = ['train:total_iter=3', 'datasets:train:batch_size_per_gpu=2', 'datasets:train:gt_size=48',
        'datasets:train:num_worker_per_gpu=0', 'distill:teacher_check=false', 'logger:print_freq=1']
TOOLS = {'facd-prepare': prepare.main, 'facd-convert-teacher': convert_teacher.main, 'facd-checksum': checksum.main,
         'facd-eval': evaluate.main, 'facd-infer': infer.main, 'facd-export': export.main}


def doc_commands(doc):
    """Every command of ``doc``'s ```bash blocks: continuation lines joined, trailing ``# comments`` dropped."""
    with open(osp.join(REPO_ROOT, doc), encoding='utf-8') as f:
        blocks = re.findall(r'```bash\n(.*?)```', f.read(), re.S)
    commands = []
    for block in blocks:
        for line in block.replace('\\\n', ' ').splitlines():
            line = re.sub(r'\s+#.*$', '', line).strip()
            if line and not line.startswith('#'):
                commands.append(line)
    return commands


def documented(doc, start, contains=''):
    """The one command of ``doc`` that is ``start``, else the one that starts with it (and holds ``contains``)."""
    commands = doc_commands(doc)
    found = [start] if start in commands else [c for c in commands if c.startswith(start) and contains in c]
    assert len(found) == 1, f'{doc}: expected one command starting {start!r} with {contains!r}, found {found}'
    return found[0]


def filled(command, home):
    """``command`` as argv with the docs' placeholders filled in."""
    for placeholder, value in (('~/', f'{home}/'), ('experiments/<run>/', f'experiments/{RUN}/'),
                               ('my_train.yml', RECIPE), ('experiments/my_run/', f'experiments/{RUN}/')):
        command = command.replace(placeholder, value)
    return shlex.split(command)


def run_tool(argv, capsys):
    """A console script in this process: (exit status, stdout + stderr)."""
    code = TOOLS[argv[0]](argv[1:])
    out = capsys.readouterr()
    return code, out.out + out.err


def write_downloads(downloads):
    """DIV2K as its official zips (one photo, x2 x3 x4) and EDSR's benchmark.tar with the four free sets."""
    make_div2k(str(downloads), 1, (2, 3, 4), sizes=((744, 504), ), zipped=True)
    with tarfile.open(downloads / 'benchmark.tar', 'w') as tar:
        for k, name in enumerate(FREE_SETS):
            for j in range(2):
                path = downloads / 'staging' / f'img_{k}{j}.png'
                path.parent.mkdir(exist_ok=True)
                cv2.imwrite(str(path), photo(k + j, (64 + 8 * j, 52 + 12 * k)))
                tar.add(path, f'benchmark/{name}/HR/img_{j:03d}.png')


def write_official_teacher(path):
    """An official EDSR-PyTorch layout RCAN_BIX4.pt (10 groups x 20 blocks x 64, x4), random weights."""
    torch.manual_seed(0)
    torch.save(OfficialRCANLayout(feat=64, groups=10, blocks=20, reduction=16, scale=4).state_dict(), path)


def test_readme_from_top_to_bottom_on_a_cpu(tmp_path, monkeypatch, capsys):
    home, root = tmp_path / 'home', tmp_path / 'repo'
    (home / 'Downloads').mkdir(parents=True)
    root.mkdir()
    for name in ('options', 'facd_basicsr'):  # the clone's folders the commands name
        os.symlink(osp.join(REPO_ROOT, name), root / name)
    monkeypatch.chdir(root)
    write_downloads(home / 'Downloads')
    env = {'CUDA_VISIBLE_DEVICES': ''}

    # Data: README's two commands, as written
    tar = filled(documented('README.md', 'tar -xf'), home)
    assert subprocess.run(tar, capture_output=True).returncode == 0
    code, out = run_tool(filled(documented('README.md', 'facd-prepare'), home), capsys)
    assert code == 0, out[-3000:]
    assert f'{RECIPE}: ok' in out.replace(REPO_ROOT + '/', '') and 'missing, optional' in out  # Manga109 only
    assert sorted(os.listdir('datasets')) == ['BSDS100', 'DIV2K', 'Set14', 'Set5', 'Urban100']

    # Teacher files: README's conversion and checksum of the official file
    write_official_teacher(root / 'RCAN_BIX4.pt')
    code, out = run_tool(filled(documented('README.md', 'facd-convert-teacher'), home), capsys)
    assert code == 0 and 'num_group: 10' in out, out[-3000:]
    argv = filled(documented('README.md', 'facd-checksum'), home)
    code, out = run_tool(argv[:1] + sorted(p for a in argv[1:] for p in glob.glob(a)), capsys)  # the shell's glob
    assert code == 0 and out.startswith('UNKNOWN  experiments/pretrained_models/RCAN_BIX4.pth'), out

    # Train and test: README's commands (training made tiny) through our entry points
    train = filled(documented('README.md', f'python facd_basicsr/train.py -opt {RECIPE}'), home)
    result = run_python(train[1:] + ['--force_yml', *TINY], root, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ckpt = root / 'experiments' / RUN / 'models' / 'net_g_latest.pth'
    log = next(glob.iglob(str(root / 'experiments' / RUN / 'train_*.log')))
    text = open(log).read()
    assert re.search(r'iter:\s+3, lr:\([^)]*\)\] \[eta: 0:00:00, ', text) and '-1 day' not in text, text[-2000:]
    for key in ('l_pix', 'l_kd', 'l_feat', 'gate_on', 'd_pos', 'd_neg', 'Validation Set5\n\t # psnr'):
        assert key in text, key
    test = filled(documented('README.md', 'python facd_basicsr/test.py', TEST_FILE), home)
    result = run_python(test[1:], root, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    test_log = open(next(glob.iglob(str(root / 'results' / RUN / 'test_*.log')))).read()
    psnr = {name: float(value) for name, value in re.findall(r'Validation (\w+)\n\s+# psnr: ([0-9.]+)', test_log)}
    assert sorted(psnr) == sorted(FREE_SETS) and all(5 < v < 60 for v in psnr.values()), test_log[-2000:]

    # After training: facd-eval and facd-infer as docs/tools.md writes them, facd-export as README does
    code, out = run_tool(filled(documented('docs/tools.md', 'facd-eval'), home), capsys)
    assert code == 0, out[-3000:]
    rows = [line.split(',') for line in (root / 'results/eval_x4/summary.csv').read_text().splitlines()[1:]]
    scores = {{'BSDS100': 'B100'}.get(row[0], row[0]): float(row[4]) for row in rows}  # B100's folder: BSDS100
    assert scores == pytest.approx(psnr, abs=1e-4)  # as BasicSR's test scores the same checkpoint
    (root / 'photos').mkdir()
    for j in range(2):
        cv2.imwrite(str(root / 'photos' / f'photo{j}.png'), photo(j, (36 + 4 * j, 28)))
    code, out = run_tool(filled(documented('docs/tools.md', 'facd-infer'), home), capsys)
    assert code == 0, out[-3000:]
    assert [cv2.imread(str(root / 'results/photos_x4' / f'photo{j}_x4.png')).shape for j in range(2)] == [
        (112, 144, 3), (112, 160, 3)]
    code, out = run_tool(filled(documented('README.md', 'facd-export', 'rcan_facd_x4'), home), capsys)
    assert code == 0, out[-3000:]
    assert sorted(os.listdir('exported')) == ['rcan_facd_x4.onnx', 'rcan_facd_x4_official.pth']

    # the student is a plain BasicSR network, as the test file builds it
    with open(TEST_FILE, encoding='utf-8') as f:
        student = build_network(dict(yaml.safe_load(f)['network_g']))
    student.load_state_dict(torch.load(ckpt, weights_only=True)['params'], strict=True)
