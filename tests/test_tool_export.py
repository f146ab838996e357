"""facd-export: tiny EDSR, RCAN and SwinIR to TorchScript + ONNX (dynamic batch / H / W checked with onnxruntime),
safetensors read back, exit codes. spandrel round trips: tests/test_spandrel_export.py."""
import os.path as osp
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from basicsr.archs import build_network
from test_tool_infer import assert_one_error_line, other_architecture_checkpoint

from facd_basicsr.host.checkpoint import read_state_dict
from facd_basicsr.tools.export import main

from conftest import run_python

TINY = {
    'edsr': {
        'type': 'EDSR',
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 8,
        'num_block': 1,
        'upscale': 2
    },
    'rcan': {
        'type': 'RCAN',
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 8,
        'num_group': 1,
        'num_block': 1,
        'squeeze_factor': 4,
        'upscale': 3
    },
}

pytestmark = pytest.mark.usefixtures('one_thread')


def _checkpoint(tmp_path, kind):
    """Train-option YAML with ``network_g`` and a ``{'params': ...}`` checkpoint of a tiny randomly initialised net."""
    torch.manual_seed(0)
    net = build_network(TINY[kind]).eval()
    torch.save({'params': net.state_dict()}, tmp_path / f'{kind}.pth')
    (tmp_path / f'{kind}.yml').write_text(yaml.safe_dump({'name': kind, 'network_g': TINY[kind]}))
    return net, str(tmp_path / f'{kind}.yml'), str(tmp_path / f'{kind}.pth')


@pytest.mark.parametrize('kind,ts_mode', [('edsr', 'trace'), ('rcan', 'script')])
def test_export_checks_both_formats_and_onnx_runs_at_a_third_size(tmp_path, capsys, kind, ts_mode):
    net, opt, pth = _checkpoint(tmp_path, kind)
    out = tmp_path / 'exported'
    assert main(['--opt', opt, '--ckpt', pth, '--out-dir', str(out), '--ts-mode', ts_mode]) == 0
    printed = capsys.readouterr().out
    assert printed.count('| yes |') == 4 and '| NO |' not in printed  # 2 formats x 2 sizes
    assert '(1, 3, 32, 32)' in printed and '(2, 3, 45, 27)' in printed
    scale = TINY[kind]['upscale']
    dims = onnx.load(str(out / f'{kind}.onnx')).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ['batch', '', 'height', 'width']
    x = torch.rand(1, 3, 17, 23)
    with torch.no_grad():
        ref = net(x).numpy()
    sr = onnxruntime.InferenceSession(str(out / f'{kind}.onnx')).run(None, {'lr': x.numpy()})[0]
    assert sr.shape == (1, 3, 17 * scale, 23 * scale) and np.abs(sr - ref).max() < 1e-4
    with torch.no_grad():
        ts = torch.jit.load(str(out / f'{kind}.pt'))(x).numpy()
    assert np.abs(ts - ref).max() < 1e-4


def test_console_script_fails_when_a_difference_reaches_atol(tmp_path):
    _, opt, pth = _checkpoint(tmp_path, 'edsr')
    script = osp.join(osp.dirname(sys.executable), 'facd-export')
    args = ['--opt', opt, '--ckpt', pth, '--out-dir', str(tmp_path), '--formats', 'onnx', '--atol', '1e-12']
    proc = run_python([script] + args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 1, proc.stderr
    assert '| NO |' in proc.stdout and 'FAILED' in proc.stdout
    assert osp.isfile(tmp_path / 'edsr.onnx')


def test_config_errors_exit_2(tmp_path, capsys):
    _, opt, pth = _checkpoint(tmp_path, 'edsr')
    assert main(['--opt', opt, '--ckpt', str(tmp_path / 'none.pth')]) == 2
    assert 'Checkpoint not found' in capsys.readouterr().err
    assert main(['--opt', opt, '--net-key', 'network_t', '--ckpt', pth]) == 2
    assert "no 'network_t' block" in capsys.readouterr().err


def test_script_refuses_a_checkpoint_of_another_architecture(tmp_path):
    """``python -m facd_basicsr.tools.export``: an RCAN checkpoint for the EDSR block, one error line, exit 2."""
    _, opt, _ = _checkpoint(tmp_path, 'edsr')
    pth = other_architecture_checkpoint(tmp_path)
    args = ['--opt', opt, '--ckpt', pth, '--out-dir', str(tmp_path / 'exported')]
    proc = run_python(['-m', 'facd_basicsr.tools.export'] + args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert_one_error_line(proc, pth, f'EDSR from {opt} (network_g)')
    assert not (tmp_path / 'exported').exists()


def test_an_unwritable_out_dir_is_one_error_line_before_the_network_is_read(tmp_path, capsys):
    """``--out-dir`` under a regular file (unwritable even for root): exit 2, one line naming option and path."""
    _, opt, _ = _checkpoint(tmp_path, 'edsr')
    (tmp_path / 'a_file').write_text('not a folder')
    out = str(tmp_path / 'a_file' / 'exported')
    args = ['--opt', opt, '--ckpt', str(tmp_path / 'missing.pth'), '--out-dir', out]  # the checkpoint is never read
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f'error: --out-dir {out}: cannot write the output here: {tmp_path / "a_file"} is a file, so no folder can be '
        'made under it'
    ] and captured.out == ''


SWINIR = {
    'type': 'SwinIR',
    'upscale': 2,
    'in_chans': 3,
    'img_size': 16,
    'window_size': 4,
    'img_range': 1.,
    'depths': [2],
    'embed_dim': 12,
    'num_heads': [2],
    'mlp_ratio': 2,
    'upsampler': 'pixelshuffledirect',
    'resi_connection': '1conv'
}


def test_swinir_onnx_and_torchscript_run_at_any_batch_and_size(tmp_path, capsys):
    """Traced as it is, SwinIR keeps the example's batch (and, at img_size, its mask): here both stay dynamic."""
    torch.manual_seed(0)
    net = build_network(dict(SWINIR)).eval()
    torch.save({'params': net.state_dict()}, tmp_path / 'swinir.pth')
    (tmp_path / 'swinir.yml').write_text(yaml.safe_dump(SWINIR))
    args = ['--arch-yaml', str(tmp_path / 'swinir.yml'), '--ckpt', str(tmp_path / 'swinir.pth'), '--out-dir',
            str(tmp_path)]
    assert main(args + ['--check-sizes', '16x16', '20x12']) == 0  # traced at img_size, then batch 2 at 20x12
    printed = capsys.readouterr().out
    assert printed.count('| yes |') == 4 and '(2, 3, 20, 12)' in printed
    x = torch.rand(3, 3, 8, 28)
    with torch.no_grad():
        ref = net(x).numpy()
    sr = onnxruntime.InferenceSession(str(tmp_path / 'swinir.onnx')).run(None, {'lr': x.numpy()})[0]
    assert np.abs(sr - ref).max() < 1e-4
    with torch.no_grad():
        assert np.abs(torch.jit.load(str(tmp_path / 'swinir.pt'))(x).numpy() - ref).max() < 1e-4
    assert main(args + ['--formats', 'onnx']) == 0  # default check sizes rounded up to the window: 32x32, 48x28
    assert '(2, 3, 48, 28)' in capsys.readouterr().out
    assert main(args + ['--formats', 'torchscript', '--ts-mode', 'script']) == 2
    assert capsys.readouterr().err.startswith('error: --ts-mode script: SwinIR cannot be scripted')


def test_safetensors_export_reads_back_through_our_reader(tmp_path, capsys):
    net, opt, pth = _checkpoint(tmp_path, 'edsr')
    assert main(['--opt', opt, '--ckpt', pth, '--out-dir', str(tmp_path), '--format', 'safetensors']) == 0
    printed = capsys.readouterr().out
    assert printed.count('| facd loader |') == 2 and printed.count('| yes |') == 2
    assert 'spandrel: does not load BasicSR-layout EDSR' in printed and '| not checked |' in printed
    state = read_state_dict(str(tmp_path / 'edsr.safetensors'), None, '--ckpt')
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()) and set(state) == set(net.state_dict())
    with pytest.raises(KeyError, match='is a safetensors file, a bare state dict without param keys'):
        read_state_dict(str(tmp_path / 'edsr.safetensors'), 'params', '--ckpt')
