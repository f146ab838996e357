"""The tools' error paths: bad option files and unwritable outputs are one ``error:`` line and exit 2, before work.

Every console script that reads a YAML file runs once as a real subprocess (in parallel, to keep the file fast);
the output-location checks run in process.
"""
import os
import os.path as osp
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.edsr_arch import EDSR

from facd_basicsr.tools.common import check_output_location
from facd_basicsr.tools.convert_teacher import main as convert_main
from facd_basicsr.tools.evaluate import main as eval_main
from facd_basicsr.tools.infer import main as infer_main
from facd_basicsr.tools.prepare import main as prepare_main
from facd_basicsr.tools.stats import main as stats_main

TINY_EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1, 'upscale': 2}
BIN = osp.dirname(sys.executable)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A tiny EDSR checkpoint, a good option file, a broken one, a tagged one, an image, a regular file ``afile``."""
    root = tmp_path_factory.mktemp('tool_errors')
    torch.manual_seed(0)
    net = EDSR(**{k: v for k, v in TINY_EDSR.items() if k != 'type'})
    torch.save({'params': net.state_dict()}, root / 'net_g.pth')
    (root / 'good.yml').write_text(yaml.safe_dump({'name': 'x', 'network_g': TINY_EDSR, 'network_t': TINY_EDSR}))
    (root / 'broken.yml').write_text('name: x\nnetwork_g: {type: EDSR, num_feat: 4\nnum_gpu: 0\n')
    marker = root / 'MARKER'
    (root / 'tagged.yml').write_text(f'name: x\nnote: !!python/object/apply:os.system ["touch {marker}"]\n'
                                     f'network_g: {yaml.safe_dump(TINY_EDSR, default_flow_style=True)}')
    cv2.imwrite(str(root / 'in.png'), np.full((8, 8, 3), 100, np.uint8))
    (root / 'afile').write_text('a regular file: nothing can be made under it, not even by root')
    (root / 'bench' / 'Set5').mkdir(parents=True)
    cv2.imwrite(str(root / 'bench' / 'Set5' / 'baby.png'), np.full((24, 24, 3), 100, np.uint8))
    return {'root': root, 'marker': marker, 'ckpt': str(root / 'net_g.pth')}


def _run_parallel(commands, cwd):
    """Run every ``[console script, *args]`` at once (one thread each); returns their CompletedProcess-like results."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([osp.join(BIN, cmd[0]), *cmd[1:]], cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def _one_error_line(code, err, prefix='error: '):
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err  # one line, no traceback
    return lines[0]


def test_every_yaml_reading_console_script_gives_one_error_line(files):
    """facd-eval (a syntax error), facd-infer and facd-stats (an object tag): exit 2, one line, nothing run."""
    root, ckpt = files['root'], files['ckpt']
    broken, tagged = str(root / 'broken.yml'), str(root / 'tagged.yml')
    results = _run_parallel([
        ['facd-eval', '--opt', broken, '--ckpt', ckpt, '--data-root', str(root / 'bench'), '--device', 'cpu'],
        ['facd-infer', '--opt', tagged, '--ckpt', ckpt, '-i', str(root / 'in.png'), '-o', str(root / 'o')],
        ['facd-stats', '--teacher', f'{tagged}:network_g', '--no-latency'],
    ], root)
    eval_line, infer_line, stats_line = (_one_error_line(code, err) for code, _, err in results)
    assert eval_line.startswith(f'error: {broken}:3: not valid YAML: ') and 'opened at line 2' in eval_line
    tag = "tag '!!python/object/apply:os.system' is not allowed in an option file"
    assert infer_line.startswith(f'error: {tagged}:2: {tag}')
    assert stats_line.startswith(f'error: {tagged}:2: {tag}')
    assert not files['marker'].exists()  # the tag constructed nothing
    assert not (root / 'o').exists()


def test_missing_unreadable_and_non_mapping_yaml_files_in_process(files, capsys):
    root, ckpt = files['root'], files['ckpt']
    assert stats_main(['--opt', str(root / 'bench'), '--no-latency']) == 2
    assert _one_error_line(2, capsys.readouterr().err) == f'error: {root / "bench"}: is a folder, not an option file'
    base = ['--ckpt', ckpt, '-i', str(root / 'in.png'), '-o', str(root / 'o2'), '--device', 'cpu']
    assert infer_main(['--arch-yaml', str(root / 'missing.yml')] + base) == 2
    assert _one_error_line(2, capsys.readouterr().err) == f'error: {root / "missing.yml"}: option file not found'
    (root / 'list.yml').write_text('- EDSR\n')
    assert infer_main(['--arch-yaml', str(root / 'list.yml')] + base) == 2
    assert 'list.yml: expected a YAML mapping' in _one_error_line(2, capsys.readouterr().err)
    assert not (root / 'o2').exists()


@pytest.mark.parametrize('tool', ['infer', 'eval'])
def test_an_impossible_output_folder_is_refused_before_the_network_is_read(files, tool, capsys):
    """``<tmp>/afile/out`` cannot be made (a regular file is in the way, root or not); the checkpoint does not exist,
    so an error about the output proves the output is checked first."""
    root = files['root']
    out = str(root / 'afile' / 'out')
    net = ['--opt', str(root / 'good.yml'), '--ckpt', str(root / 'never_read.pth'), '--device', 'cpu']
    if tool == 'infer':
        code, option = infer_main(net + ['-i', str(root / 'in.png'), '-o', out]), '--output'
    else:
        code, option = eval_main(net + ['--data-root', str(root / 'bench'), '--out-dir', out]), '--out-dir'
    line = _one_error_line(code, capsys.readouterr().err)
    assert line == (f'error: {option} {out}: cannot write the output here: {root / "afile"} is a file, so no folder '
                    'can be made under it')


def test_convert_teacher_and_prepare_check_their_outputs_first(files, capsys):
    root = files['root']
    out = str(root / 'afile' / 'teacher.pth')
    assert convert_main([str(root / 'never_read.pt'), '-o', out]) == 2
    assert _one_error_line(2, capsys.readouterr().err) == (
        f'error: -o {out}: cannot write the output here: {root / "afile"} is a file, so no folder can be made under it')
    bad_root = str(root / 'afile' / 'root')
    assert prepare_main(['--benchmark', str(root / 'bench'), '--root', bad_root, '--workers', '1']) == 2
    line = _one_error_line(2, capsys.readouterr().err, 'facd-prepare: error: ')
    assert line.startswith(f'facd-prepare: error: --root {bad_root}: cannot write the output here')
    assert prepare_main(['--benchmark', str(root / 'bench'), '--root', str(root / 'afile'), '--workers', '1']) == 2
    assert 'it is a file, not a folder' in capsys.readouterr().err


def test_check_output_location_creates_nothing_and_names_the_reason(tmp_path):
    check_output_location('--out-dir', str(tmp_path / 'new' / 'deeper'))
    check_output_location('-o', str(tmp_path / 'new' / 'file.pth'), 'file')
    assert os.listdir(tmp_path) == []
    (tmp_path / 'f').write_text('x')
    with pytest.raises(ValueError, match=r'^--out-dir .*/f: cannot write the output here: it is a file, not a folder'):
        check_output_location('--out-dir', str(tmp_path / 'f'))
    with pytest.raises(ValueError, match='it is a folder, not a file$'):
        check_output_location('OUTPUT', str(tmp_path), 'file')
    for folder in ('/sys', '/proc/1'):  # places no one writes in, root included (os.access may say yes to root)
        try:
            with tempfile.TemporaryFile(dir=folder):
                continue
        except OSError:
            with pytest.raises(ValueError, match=f'^--root {folder}/facd_out: .* cannot write in {folder} \\('):
                check_output_location('--root', f'{folder}/facd_out')
            break
