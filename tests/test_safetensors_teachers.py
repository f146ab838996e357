"""Safetensors teachers (traiNNer-redux's and HuggingFace's format) through the one safe reader, as strict as .pth.

The files are written by the safetensors library itself (``save_file``), as those projects write them: a bare state
dict, no param key.
"""
import os.path as osp

import pytest
import torch
from basicsr.models import build_model
from safetensors.torch import save_file

from facd_basicsr.host.checkpoint import CheckpointError, fingerprint, is_safetensors, read_state_dict, safe_torch_load
from facd_basicsr.tools.checksum import main as checksum_main

from model_helpers import make_opt, save_teacher

OPTION = 'path.pretrain_network_t'


def teacher_files(tmp_path, change=None):
    """The tiny EDSR teacher as ``teacher.pth`` ({'params': ...}) and ``teacher.safetensors`` (bare, maybe changed)."""
    pth = osp.join(str(tmp_path), 'teacher.pth')
    state = save_teacher(pth)
    state = {k: v.clone() for k, v in state.items()}
    if change:
        change(state)
    save_file(state, osp.join(str(tmp_path), 'teacher.safetensors'), metadata={'format': 'pt'})
    return pth, osp.join(str(tmp_path), 'teacher.safetensors')


def build_with_teacher(tmp_path, path, param_key):
    opt = make_opt(tmp_path / 'run', path={'pretrain_network_t': path, 'param_key_t': param_key})
    torch.manual_seed(0)
    return build_model(opt)


def test_a_safetensors_teacher_is_the_same_teacher_as_its_pth(tmp_path):
    pth, safetensors = teacher_files(tmp_path)
    from_pth = build_with_teacher(tmp_path / 'a', pth, 'params')
    from_safetensors = build_with_teacher(tmp_path / 'b', safetensors, None)
    assert from_safetensors.teacher_record['sha256'] == from_pth.teacher_record['sha256'] == fingerprint(
        from_pth.net_t)
    assert from_safetensors.teacher_record['param_key'] is None
    state = read_state_dict(safetensors, None, OPTION)
    assert set(state) == set(from_pth.net_t.state_dict())
    assert all(torch.equal(state[k], v) for k, v in from_pth.net_t.state_dict().items())


def test_a_param_key_for_a_safetensors_teacher_is_an_error_naming_the_fix(tmp_path):
    _, safetensors = teacher_files(tmp_path)
    with pytest.raises(KeyError) as info:
        build_with_teacher(tmp_path, safetensors, 'params')
    message = info.value.args[0]
    assert message.startswith(f'{OPTION}: {safetensors} is a safetensors file') and 'param_key_t: ~' in message


def _drop(state):
    state.pop('conv_last.bias')


def _extra(state):
    state['adapter.weight'] = torch.zeros(2)


def _nan(state):
    state['body.0.conv1.weight'][0, 0, 0, 0] = float('nan')


def _shape(state):
    state['conv_first.weight'] = state['conv_first.weight'][:4]


@pytest.mark.parametrize('change,expected', [(_drop, "1 missing keys, e.g. ['conv_last.bias']"),
                                             (_extra, "1 unexpected keys, e.g. ['adapter.weight']"),
                                             (_nan, "non-finite weights (1 tensors, e.g. ['body.0.conv1.weight']"),
                                             (_shape, 'conv_first.weight: file (4, 3, 3, 3) vs net (8, 3, 3, 3)')])
def test_a_safetensors_teacher_is_checked_as_strictly_as_a_pth(tmp_path, change, expected):
    _, safetensors = teacher_files(tmp_path, change)
    with pytest.raises(ValueError) as info:
        build_with_teacher(tmp_path, safetensors, None)
    assert str(info.value).startswith(OPTION) and expected in str(info.value)


def test_a_truncated_safetensors_teacher_is_one_error_naming_file_and_option(tmp_path):
    _, safetensors = teacher_files(tmp_path)
    with open(safetensors, 'rb') as f:
        blob = f.read()
    with open(safetensors, 'wb') as f:
        f.write(blob[:-100])
    with pytest.raises(CheckpointError) as info:
        build_with_teacher(tmp_path, safetensors, None)
    assert str(info.value).startswith(f'{OPTION}: cannot load the checkpoint {safetensors}: not a readable '
                                      'safetensors file')


def test_a_safetensors_file_under_another_name_is_found_by_its_bytes(tmp_path):
    pth, safetensors = teacher_files(tmp_path)
    renamed = tmp_path / 'teacher_renamed.pth'
    renamed.write_bytes(open(safetensors, 'rb').read())
    assert is_safetensors(str(renamed)) and not is_safetensors(pth)
    assert set(read_state_dict(str(renamed), None, OPTION)) == set(read_state_dict(pth, 'params', OPTION))
    with pytest.raises(CheckpointError, match='it is a safetensors file, and this option reads torch checkpoints'):
        safe_torch_load(str(renamed), 'path.pretrain_network_g', 'student checkpoint')


def test_facd_checksum_reads_safetensors(tmp_path, capsys):
    _, safetensors = teacher_files(tmp_path)
    broken = tmp_path / 'broken.safetensors'
    broken.write_bytes(open(safetensors, 'rb').read()[:40])
    assert checksum_main([safetensors]) == 0
    assert capsys.readouterr().out.startswith(f'UNKNOWN  {safetensors}: sha256 ')
    assert checksum_main([safetensors, str(broken)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f'UNREADABLE {broken}: facd-checksum: cannot load the file {broken}: not a readable '
                               'safetensors file')
