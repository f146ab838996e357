"""facd-export files load in spandrel (the model loader of chaiNNer and ComfyUI) and compute BasicSR's function.

Tiny students of BasicSR's own classes (``basicsr.archs.*``), within what spandrel's detection accepts: RRDBNet with
spandrel's fixed 32 growth channels, SRVGGNetCompact with PReLU (its ``body.1.weight``), SwinIR with its window.
RCAN goes out in the official EDSR-PyTorch layout, the others as BasicSR-layout safetensors.
"""
import json

import numpy as np
import pytest
import spandrel
import torch
import yaml
from basicsr.archs.rcan_arch import RCAN
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.srvgg_arch import SRVGGNetCompact
from basicsr.archs.swinir_arch import SwinIR
from safetensors import safe_open
from skimage import data

from facd_basicsr.host.checkpoint import read_state_dict
from facd_basicsr.tools.convert_teacher import main as convert_main
from facd_basicsr.tools.export import main

pytestmark = pytest.mark.usefixtures('one_thread')

# name: (BasicSR class, registered type, kwargs, --format, spandrel architecture id, scale)
STUDENTS = {
    'rcan': (RCAN, 'RCAN', {
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 8,
        'num_group': 2,
        'num_block': 1,
        'squeeze_factor': 4,
        'upscale': 4
    }, 'official', 'RCAN', 4),
    'swinir': (SwinIR, 'SwinIR', {
        'upscale': 2,
        'in_chans': 3,
        'img_size': 16,
        'window_size': 4,
        'img_range': 1.,
        'depths': [2, 2],
        'embed_dim': 12,
        'num_heads': [2, 2],
        'mlp_ratio': 2,
        'upsampler': 'pixelshuffledirect',
        'resi_connection': '1conv'
    }, 'safetensors', 'SwinIR', 2),
    'rrdbnet': (RRDBNet, 'RRDBNet', {
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 8,
        'num_block': 1,
        'num_grow_ch': 32,
        'scale': 4
    }, 'safetensors', 'ESRGAN', 4),
    'compact': (SRVGGNetCompact, 'SRVGGNetCompact_basicsr', {
        'num_in_ch': 3,
        'num_out_ch': 3,
        'num_feat': 8,
        'num_conv': 2,
        'upscale': 3,
        'act_type': 'prelu'
    }, 'safetensors', 'Compact', 3),
}
SUFFIX = {'official': '_official.pth', 'safetensors': '.safetensors'}


def photo_crop(size: int = 24) -> torch.Tensor:
    """A real colour photo crop (scikit-image's astronaut), RGB in [0, 1], ``(1, 3, size, size)``."""
    img = data.astronaut()[180:180 + size, 200:200 + size].astype(np.float32) / 255.
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def write_student(tmp_path, name, **changes):
    """A randomly initialised BasicSR student (trained-looking: biases not zero), its YAML block and checkpoint."""
    cls, arch_type, kwargs, *_ = STUDENTS[name]
    kwargs = dict(kwargs, **changes)
    torch.manual_seed(0)
    net = cls(**kwargs).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.01 * torch.randn_like(param))
    (tmp_path / f'{name}.yml').write_text(yaml.safe_dump(dict(kwargs, type=arch_type)))
    torch.save({'params': net.state_dict()}, tmp_path / f'{name}.pth')
    return net, str(tmp_path / f'{name}.yml'), str(tmp_path / f'{name}.pth')


@pytest.mark.parametrize('name', sorted(STUDENTS))
def test_spandrel_loads_the_export_and_matches_basicsr(tmp_path, capsys, name):
    net, arch_yaml, ckpt = write_student(tmp_path, name)
    _, _, _, fmt, arch_id, scale = STUDENTS[name]
    out = tmp_path / 'exported'
    assert main(['--arch-yaml', arch_yaml, '--ckpt', ckpt, '--out-dir', str(out), '--format', fmt]) == 0
    assert f'| spandrel {arch_id} x{scale} |' in capsys.readouterr().out

    model = spandrel.ModelLoader(device='cpu').load_from_file(str(out / f'{name}{SUFFIX[fmt]}'))
    assert model.architecture.id == arch_id and model.scale == scale
    x = photo_crop()
    with torch.inference_mode():
        ref = net(x)
        got = model.model.eval()(x.clone())
    assert got.shape == (1, 3, 24 * scale, 24 * scale)
    assert (got - ref).abs().max().item() < 1e-4


def test_safetensors_metadata_rebuilds_the_network(tmp_path):
    """arch, kwargs (JSON) and scale in the file's metadata; a network built from them alone gives the same output."""
    net, arch_yaml, ckpt = write_student(tmp_path, 'swinir')
    assert main(['--arch-yaml', arch_yaml, '--ckpt', ckpt, '--out-dir', str(tmp_path), '--format', 'safetensors']) == 0
    with safe_open(str(tmp_path / 'swinir.safetensors'), framework='pt') as f:
        meta = f.metadata()
    assert meta['arch'] == 'SwinIR' and meta['scale'] == '2' and meta['source'] == 'swinir.pth [params]'
    kwargs = json.loads(meta['arch_kwargs'])
    assert kwargs['embed_dim'] == 12 and kwargs['window_size'] == 4 and kwargs['depths'] == [2, 2]
    assert 'norm_layer' not in kwargs  # a class: not JSON, and the default anyway
    rebuilt = SwinIR(**kwargs).eval()
    rebuilt.load_state_dict(read_state_dict(str(tmp_path / 'swinir.safetensors'), None, 'test'), strict=True)
    x = photo_crop(16)
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), net(x))


def test_official_rcan_folds_img_range_and_mean(tmp_path, capsys):
    """A BasicSR RCAN with img_range 1 and another mean: spandrel's official RCAN (range 255) still matches it."""
    net, arch_yaml, ckpt = write_student(tmp_path, 'rcan', img_range=1., rgb_mean=[0.5, 0.4, 0.3])
    assert main(['--arch-yaml', arch_yaml, '--ckpt', ckpt, '--out-dir', str(tmp_path), '--format', 'official']) == 0
    model = spandrel.ModelLoader(device='cpu').load_from_file(str(tmp_path / 'rcan_official.pth'))
    x = photo_crop()
    with torch.inference_mode():
        assert (model.model.eval()(x.clone()) - net(x)).abs().max().item() < 1e-4


def test_official_rcan_is_the_inverse_of_facd_convert_teacher(tmp_path, capsys):
    """export --format official, then facd-convert-teacher: the very tensors of the student come back."""
    net, arch_yaml, ckpt = write_student(tmp_path, 'rcan')
    assert main(['--arch-yaml', arch_yaml, '--ckpt', ckpt, '--out-dir', str(tmp_path), '--format', 'official']) == 0
    official = torch.load(tmp_path / 'rcan_official.pth', weights_only=True)
    assert {'head.0.weight', 'body.0.body.0.body.3.conv_du.0.weight', 'body.0.body.1.weight', 'body.2.weight',
            'tail.0.2.weight', 'tail.1.weight', 'sub_mean.bias', 'add_mean.bias'} <= set(official)
    assert convert_main([str(tmp_path / 'rcan_official.pth'), str(tmp_path / 'back.pth')]) == 0
    back = torch.load(tmp_path / 'back.pth', weights_only=True)['params']
    original = net.state_dict()
    assert set(back) == set(original)
    assert all(torch.allclose(back[k], original[k], rtol=0, atol=1e-7) for k in original)


@pytest.mark.parametrize('arch', ['EDSR', 'RRDBNet'])
def test_official_format_for_another_architecture_fails_with_one_error_line(tmp_path, capsys, arch):
    block = {'type': arch, 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1}
    (tmp_path / 'net.yml').write_text(yaml.safe_dump(block))
    out = tmp_path / 'exported'
    args = ['--arch-yaml', str(tmp_path / 'net.yml'), '--ckpt', str(tmp_path / 'none.pth'), '--out-dir', str(out)]
    assert main(args + ['--format', 'onnx', 'official']) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith('error: --format official: ')
    if arch == 'EDSR':
        assert 'spandrel' in err and 'has no EDSR' in err and '--format onnx' in err
    else:
        assert 'only RCAN' in err and '--format safetensors' in err
    assert not out.exists()  # refused before the checkpoint (here missing) is even read
