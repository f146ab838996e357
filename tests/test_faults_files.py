"""Hostile checkpoint files for every loader we own: refused with a message naming the file, a pickle never executed.

Files: truncated to half its bytes, random bytes, a zip that is not a torch file, and pickles (torch's zip format and
the legacy plain-pickle format) whose unpickling would create a marker file. Loaders: the teacher of FACDModel, the
training state of a resume (``--auto_resume`` and an explicit ``path.resume_state``), and the tools
``facd-convert-teacher``, ``facd-checksum``, ``facd-eval``, ``facd-infer``, ``facd-export`` as subprocesses
(``facd-stats`` reads no checkpoint: it must not touch one named in its option file).
"""
import copy
import os
import os.path as osp
import pickle
import random
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.models import build_model

from facd_basicsr.host.checkpoint import CheckpointError, CheckpointWriteError, atomic_torch_save, read_state_dict
from facd_basicsr.host.resume import load_resume_state
from facd_basicsr.tools.checksum import main as checksum_main
from facd_basicsr.tools.convert_teacher import main as convert_main
from facd_basicsr.tools.evaluate import main as eval_main
from facd_basicsr.tools.export import main as export_main
from facd_basicsr.tools.infer import main as infer_main

from conftest import REPO_ROOT
from model_helpers import STUDENT, TEACHER, make_opt

KINDS = ('truncated', 'random', 'zip', 'pickle', 'pickle_legacy')
# What each kind's message says (after the file's path).
REASONS = {
    'truncated': 'a zip archive that is cut short or corrupt',
    'random': 'the weights-only unpickler refused it',  # random.Random(0) bytes under torch 2.14
    'zip': 'a zip archive but not a torch checkpoint',
    'pickle': 'it holds a pickled object that is not plain weights',
    'pickle_legacy': 'the weights-only unpickler refused it',
}


class Payload:
    """Unpickling this creates ``marker`` (any code could run instead)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture
def hostile(tmp_path):
    """{kind: path} of hostile copies of a good tiny EDSR checkpoint, and the marker their pickles would create."""
    folder = tmp_path / 'hostile'
    folder.mkdir()
    good = folder / 'good.pth'
    torch.manual_seed(0)
    torch.save({'params': build_network(STUDENT).state_dict()}, good)
    marker = tmp_path / 'marker'
    files = {kind: folder / f'{kind}.pth' for kind in KINDS}
    files['truncated'].write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    files['random'].write_bytes(random.Random(0).randbytes(4096))
    with zipfile.ZipFile(files['zip'], 'w') as archive:
        archive.writestr('readme.txt', 'a zip archive, not a torch file')
    torch.save({'params': Payload(str(marker))}, files['pickle'])
    with open(files['pickle_legacy'], 'wb') as f:
        pickle.dump({'params': Payload(str(marker))}, f)
    # the payload is real: an unsafe load runs it
    torch.load(files['pickle'], weights_only=False)
    assert marker.exists()
    marker.unlink()
    return {k: str(v) for k, v in files.items()}, marker, str(good)


def test_the_reader_refuses_each_kind_naming_file_and_option(hostile):
    files, marker, _ = hostile
    for kind, path in files.items():
        with pytest.raises(CheckpointError) as info:
            read_state_dict(path, 'params', '--ckpt')
        assert str(info.value).startswith(f'--ckpt: cannot load the checkpoint {path}: ')
        assert REASONS[kind] in str(info.value), (kind, str(info.value))
    assert not marker.exists()


def test_teacher_of_facd_model(hostile, tmp_path):
    files, marker, good = hostile
    for kind, path in files.items():
        opt = make_opt(tmp_path, path={'pretrain_network_t': path})
        with pytest.raises(CheckpointError) as info:
            build_model(opt)
        assert f'path.pretrain_network_t: cannot load the checkpoint {path}: {REASONS[kind]}' in str(info.value)
    # a list or a dict of non-tensors is refused too
    for bad in ([1, 2], {'params': {'w': 'not a tensor'}}):
        torch.save(bad, tmp_path / 'odd.pth')
        with pytest.raises(CheckpointError, match='odd.pth'):
            build_model(make_opt(tmp_path, path={'pretrain_network_t': str(tmp_path / 'odd.pth')}))
    assert not marker.exists()


def test_student_initialisation_file(hostile, tmp_path):
    files, marker, good = hostile
    for kind, path in files.items():
        opt = make_opt(tmp_path, path={'pretrain_network_g': path, 'strict_load_g': True})
        with pytest.raises(CheckpointError) as info:
            build_model(opt)
        assert f'path.pretrain_network_g: cannot load the student checkpoint {path}: {REASONS[kind]}' in \
            str(info.value)
    assert not marker.exists()
    build_model(make_opt(tmp_path, path={'pretrain_network_g': good, 'strict_load_g': True}))


def test_teacher_with_non_finite_weights_is_refused_at_start_up(tmp_path):
    torch.manual_seed(0)
    state = build_network(TEACHER).state_dict()
    state['body.0.conv1.weight'][0, 0, 0, 0] = float('nan')
    torch.save({'params': state}, tmp_path / 'nan_teacher.pth')
    opt = make_opt(tmp_path, path={'pretrain_network_t': str(tmp_path / 'nan_teacher.pth')})
    with pytest.raises(ValueError, match=r'path.pretrain_network_t: .*nan_teacher.pth has non-finite weights '
                       r'\(1 tensors, e.g. \[\'body.0.conv1.weight\'\]\)'):
        build_model(opt)


def resume_opt(tmp_path, auto_resume):
    opt = make_opt(tmp_path)
    opt['auto_resume'] = auto_resume
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    return opt


def test_training_state_is_never_unpickled(hostile, tmp_path):
    files, marker, _ = hostile
    opt = resume_opt(tmp_path, auto_resume=False)
    for kind, path in files.items():
        opt['path']['resume_state'] = path
        with pytest.raises(CheckpointError) as info:
            load_resume_state(copy.deepcopy(opt))
        message = str(info.value)
        assert f'path.resume_state: cannot load the training state {path}: {REASONS[kind]}' in message, message
        assert message.endswith('there is no complete checkpoint (--auto_resume picks the newest complete one)')
    # --auto_resume with only a planted pickle: an error, not a fresh start and not the payload
    states = opt['path']['training_states']
    torch.save({'epoch': 0, 'iter': 4, 'optimizers': [], 'schedulers': [], 'x': Payload(str(marker))},
               osp.join(states, '4.state'))
    opt = resume_opt(tmp_path, auto_resume=True)
    with pytest.raises(CheckpointError, match=r'--auto_resume: no complete checkpoint to resume from: '
                       r'path.resume_state: cannot load the training state .*4.state: it holds a pickled object'):
        load_resume_state(opt)
    assert not marker.exists()


def test_explicit_resume_state_that_is_truncated_names_the_newest_complete_one(tmp_path):
    opt = resume_opt(tmp_path, auto_resume=False)
    states, models = opt['path']['training_states'], opt['path']['models']
    state = {'epoch': 0, 'iter': 2, 'optimizers': [], 'schedulers': []}
    torch.save(state, osp.join(states, '2.state'))
    torch.save({'params': {}}, osp.join(models, 'net_g_2.pth'))
    torch.save(dict(state, iter=4), osp.join(states, '4.state'))  # its net_g_4.pth was never written
    opt['path']['resume_state'] = osp.join(states, '4.state')
    with pytest.raises(CheckpointError, match=r"the checkpoint of .*4.state: network file '.*net_g_4.pth' does not "
                       r'exist; the newest complete checkpoint is .*2.state'):
        load_resume_state(copy.deepcopy(opt))
    opt['auto_resume'] = True
    assert load_resume_state(opt)['iter'] == 2 and opt['path']['resume_state'].endswith('2.state')


def test_atomic_save_leaves_the_old_file_when_the_write_fails(tmp_path):
    path = str(tmp_path / 'net.pth')
    atomic_torch_save({'params': {'w': torch.ones(2)}}, path)
    os.mkdir(path + '.tmp')  # the temporary name is taken: the write fails like a full disk would
    with pytest.raises(CheckpointWriteError, match=r'could not write the checkpoint .*net.pth: Is a directory'):
        atomic_torch_save({'params': {'w': torch.zeros(2)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(2))


# ---------------------------------------------------------------------------------------------------- the tools
@pytest.fixture
def tool_inputs(tmp_path):
    arch = tmp_path / 'arch.yml'
    arch.write_text(yaml.safe_dump(dict(STUDENT)))
    image = tmp_path / 'in.png'
    cv2.imwrite(str(image), np.full((16, 16, 3), 128, np.uint8))
    (tmp_path / 'bench').mkdir()
    return {'arch': str(arch), 'image': str(image), 'bench': str(tmp_path / 'bench'), 'out': str(tmp_path / 'out')}


def tool_args(tool, ckpt, inputs):
    net = ['--arch-yaml', inputs['arch'], '--ckpt', ckpt]
    return {
        'convert_teacher': [ckpt, inputs['out'] + '.pth'],
        'checksum': [ckpt],
        'evaluate': net + ['--data-root', inputs['bench'], '--device', 'cpu'],
        'infer': net + ['-i', inputs['image'], '-o', inputs['out'], '--device', 'cpu'],
        'export': net + ['--out-dir', inputs['out']],
    }[tool]


MAINS = {'convert_teacher': convert_main, 'checksum': checksum_main, 'evaluate': eval_main, 'infer': infer_main,
         'export': export_main}


def test_tools_in_process_refuse_each_kind(hostile, tool_inputs, capsys):
    files, marker, _ = hostile
    for tool, main in MAINS.items():
        for kind, path in files.items():
            code = main(tool_args(tool, path, tool_inputs))
            captured = capsys.readouterr()
            text = captured.out + captured.err
            assert code == (1 if tool == 'checksum' else 2), (tool, kind, text)
            assert f'cannot load the {"file" if tool == "checksum" else ""}'.rstrip() in text
            assert path in text and REASONS[kind] in text, (tool, kind, text)
    assert not marker.exists()


def test_tools_as_subprocesses_never_run_the_pickle(hostile, tool_inputs, tmp_path):
    files, marker, good = hostile
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = {}
    for tool in MAINS:
        procs[tool] = subprocess.Popen([sys.executable, '-m', f'facd_basicsr.tools.{tool}',
                                        *tool_args(tool, files['pickle'], tool_inputs)], cwd=str(tmp_path), env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # facd-stats reads no checkpoint: an option file naming the pickle as teacher must leave it alone
    opt = yaml.safe_load(open(osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml')))
    opt['path']['pretrain_network_t'] = files['pickle']
    (tmp_path / 'stats.yml').write_text(yaml.safe_dump(opt))
    procs['stats'] = subprocess.Popen([sys.executable, '-m', 'facd_basicsr.tools.stats', '--opt', 'stats.yml',
                                       '--lr-size', '8x8', '--no-latency'], cwd=str(tmp_path), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for tool, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        if tool == 'stats':
            assert proc.returncode == 0 and 'EDSR' in out, err[-2000:]
            continue
        assert proc.returncode == (1 if tool == 'checksum' else 2), (tool, out, err[-2000:])
        assert files['pickle'] in out + err and REASONS['pickle'] in out + err, (tool, out, err[-2000:])
        assert 'Traceback' not in err, (tool, err[-2000:])
    assert not marker.exists(), 'a tool executed the pickle'
