"""facd-stats: parameter count, hand-computed conv FLOPs, the markdown table with ratios, network specs."""
import pytest
import torch
import yaml
from basicsr.archs import build_network
from torch import nn

from facd_basicsr.tools.stats import count_flops, count_params, main

from conftest import run_python

STUDENT = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
TEACHER = dict(STUDENT, num_feat=16, num_block=2)

pytestmark = pytest.mark.usefixtures('one_thread')


def _edsr_flops_by_hand(nf, nb, h, w):
    """2 * Cin * Cout * 9 * H * W summed over EDSR's 3x3 convs (x2: one upsample conv nf -> 4 nf, conv_last at HR)."""
    lr_macs = 3 * nf + 2 * nb * nf * nf + nf * nf + nf * 4 * nf
    return 2 * 9 * (lr_macs * h * w + nf * 3 * (2 * h) * (2 * w))


def test_single_conv_flops_and_params_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.rand(1, 3, 10, 12)) == 2 * 3 * 8 * 3 * 3 * 10 * 12
    assert count_params(conv) == 3 * 8 * 9 + 8


def test_tiny_edsr_params_and_flops():
    net = build_network(STUDENT)
    assert count_params(net) == sum(p.numel() for p in net.parameters())
    assert count_flops(net, torch.rand(1, 3, 6, 7)) == _edsr_flops_by_hand(8, 1, 6, 7)


def test_table_from_option_file_has_counts_and_ratios(tmp_path, capsys):
    (tmp_path / 'train.yml').write_text(yaml.safe_dump({'network_g': STUDENT, 'network_t': TEACHER}))
    assert main(['--opt', str(tmp_path / 'train.yml'), '--lr-size', '6x7', '--runs', '3', '--warmup', '1']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| ')]
    params = {name: count_params(build_network(arch)) for name, arch in (('teacher', TEACHER), ('student', STUDENT))}
    flops = {'teacher': _edsr_flops_by_hand(16, 2, 6, 7), 'student': _edsr_flops_by_hand(8, 1, 6, 7)}
    assert lines[0].startswith('| network |') and 'median of 3' in lines[0] and '@ LR 6x7' in lines[0]
    for line, name in zip(lines[1:3], ('teacher', 'student')):
        cells = [c.strip() for c in line.strip('|').split('|')]
        assert cells[0] == name and cells[2].startswith(f'{params[name]:,} ')
        assert cells[3] == f'{flops[name] / 1e9:.3f}' and float(cells[4]) > 0
    ratio = [c.strip() for c in lines[3].strip('|').split('|')]
    assert ratio[0] == 'teacher / student'
    assert ratio[2] == f'{params["teacher"] / params["student"]:.2f}x'
    assert ratio[3] == f'{flops["teacher"] / flops["student"]:.2f}x'


def test_specs_bare_block_and_option_file_key_and_errors(tmp_path, capsys):
    (tmp_path / 'teacher.yml').write_text(yaml.safe_dump(TEACHER))
    (tmp_path / 'train.yml').write_text(yaml.safe_dump({'network_g': STUDENT}))
    spec = str(tmp_path / 'train.yml') + ':network_g'
    assert main(['--teacher', str(tmp_path / 'teacher.yml'), '--student', spec, '--lr-size', '8', '--no-latency']) == 0
    printed = capsys.readouterr().out
    flops = _edsr_flops_by_hand(16, 2, 8, 8) / _edsr_flops_by_hand(8, 1, 8, 8)
    assert printed.splitlines()[-1].endswith(f'| {flops:.2f}x |')  # the ratio row, no latency cell
    assert '| teacher | EDSR num_feat=16 num_block=2 upscale=2 |' in printed
    assert 'latency' not in printed  # --no-latency: no latency column, not even in the header
    assert '| network | architecture | parameters | GFLOPs @ LR 8x8 |\n|---|---|---|---|\n' in printed
    assert main(['--teacher', str(tmp_path / 'train.yml')]) == 2  # no network_t there, and not a bare block
    assert "no 'network_t' block" in capsys.readouterr().err
    assert main(['--opt', str(tmp_path / 'train.yml'), '--student', 'x.yml']) == 2
    assert 'not both' in capsys.readouterr().err


def test_script_names_the_file_of_a_block_that_does_not_build(tmp_path):
    """``python -m facd_basicsr.tools.stats`` (it reads no checkpoint): RCAN's keyword in an EDSR block, and a type
    that is not registered, each give one ``error:`` line naming the YAML file and exit 2."""
    (tmp_path / 'edsr_with_rcan_key.yml').write_text(yaml.safe_dump(dict(STUDENT, num_group=1)))
    (tmp_path / 'train.yml').write_text(yaml.safe_dump({'network_g': STUDENT, 'network_t': dict(TEACHER, type='EDRS')}))
    cases = [(['--student', 'edsr_with_rcan_key.yml'], "edsr_with_rcan_key.yml: cannot build EDSR: ",
              "unexpected keyword argument 'num_group'"),
             (['--opt',
               'train.yml'], "train.yml (network_t): architecture type 'EDRS' is not registered. ", 'Registered: ')]
    for args, head, tail in cases:
        proc = run_python(
            ['-m', 'facd_basicsr.tools.stats', '--no-latency'] + args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: ' + head) and tail in lines[0], proc.stderr
    assert 'EDSR, ' in lines[0] and 'FACDAdapter, ' in lines[0] and 'RCAN, ' in lines[0]  # the registered names
    assert proc.stdout == ''
