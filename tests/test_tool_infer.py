"""facd-infer: tiled == whole-image output, real photos through the script, a corrupt file reported, exit codes."""
import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rcan_arch import RCAN

from facd_basicsr.tools.common import tiled_forward
from facd_basicsr.tools.infer import main
from facd_basicsr.tools.scoring import img_to_tensor, tensor_to_img
from facd_study.sample_data import load_photo, make_gt

from conftest import run_python

TINY_EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
# LR receptive-field radius of TINY_EDSR: conv_first 1 + res block 2 + conv_after_body 1 + upsample conv 1
# + conv_last (1 HR pixel, rounds up to 1 LR pixel) = 6.
RADIUS = 6


def _tiny_edsr(seed=0):
    torch.manual_seed(seed)
    return EDSR(**{k: v for k, v in TINY_EDSR.items() if k != 'type'}).eval()


pytestmark = pytest.mark.usefixtures('one_thread')


def other_architecture_checkpoint(folder):
    """A real BasicSR checkpoint ``{'params': ...}`` of a tiny RCAN x2: it does not fit an EDSR block."""
    torch.manual_seed(0)
    net = RCAN(3, 3, num_feat=8, num_group=1, num_block=1, squeeze_factor=4, upscale=2)
    path = str(folder / 'rcan_x2.pth')
    torch.save({'params': net.state_dict()}, path)
    return path


def assert_one_error_line(proc, path, network):
    """A tool run that failed on a configuration error: exit 2, stderr exactly one ``error: ...`` naming ``path``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr  # no traceback
    assert path in lines[0] and network in lines[0] and 'does not fit the network' in lines[0]
    assert 'missing keys' in lines[0] and 'unexpected keys' in lines[0]


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    """A tiny EDSR x2 checkpoint ``{'params': ...}`` and its bare arch YAML."""
    root = tmp_path_factory.mktemp('infer_ckpt')
    net = _tiny_edsr()
    torch.save({'params': net.state_dict()}, root / 'net_g.pth')
    (root / 'arch.yml').write_text(yaml.safe_dump(TINY_EDSR))
    return {'net': net, 'pth': str(root / 'net_g.pth'), 'yml': str(root / 'arch.yml')}


@pytest.mark.parametrize('tile', [7, 10, 16])
def test_tiled_equals_whole_when_overlap_covers_receptive_field(ckpt, tile):
    x = img_to_tensor(make_gt(load_photo('coffee'), 1, 40)[:27, :33], torch.device('cpu'))
    with torch.no_grad():
        whole = ckpt['net'](x)
        tiled = tiled_forward(ckpt['net'], x, tile, RADIUS)
        short = tiled_forward(ckpt['net'], x, tile, RADIUS - 1)
    assert tiled.shape == whole.shape == (1, 3, 54, 66)
    assert (tiled - whole).abs().max().item() < 1e-4
    assert (short - whole).abs().max().item() > 1e-4  # one pixel less overlap shows seams: the radius is tight


def test_script_upscales_real_photos_and_reports_corrupt_file(ckpt, tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    photos = {'chelsea': make_gt(load_photo('chelsea'), 1, 40), 'rocket': make_gt(load_photo('rocket'), 1, 36)}
    for name, img in photos.items():
        cv2.imwrite(str(src / f'{name}.png'), img)
    (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(200)))
    (src / 'notes.txt').write_text('not an image')
    args = ['--arch-yaml', ckpt['yml'], '--ckpt', ckpt['pth'], '-i', str(src), '-o', str(tmp_path / 'out')]
    args += ['--tile', '16', '--tile-overlap', '8', '--device', 'cpu']
    proc = run_python(['-m', 'facd_basicsr.tools.infer'] + args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 1, proc.stderr
    assert 'Wrote 2 of 3 image(s)' in proc.stdout
    assert 'FAILED 1 image(s)' in proc.stdout and 'broken.png: cannot read or decode' in proc.stdout
    assert 'facd-infer' in proc.stderr  # the tqdm progress bar
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['chelsea_x2.png', 'rocket_x2.png']
    for name, img in photos.items():
        out = cv2.imread(str(tmp_path / 'out' / f'{name}_x2.png'))
        with torch.no_grad():
            expected = tensor_to_img(ckpt['net'](img_to_tensor(img, torch.device('cpu'))))
        assert out.shape == (2 * img.shape[0], 2 * img.shape[1], 3)
        assert np.abs(out.astype(int) - expected).max() <= 1  # float noise may flip a rounding


def test_single_file_suffix_and_config_errors(ckpt, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / 'cat.png'), make_gt(load_photo('chelsea'), 1, 20))
    base = ['--arch-yaml', ckpt['yml'], '--ckpt', ckpt['pth'], '--device', 'cpu', '--no-progress']
    assert main(base + ['-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'o'), '--suffix', '_sr{scale}']) == 0
    assert cv2.imread(str(tmp_path / 'o' / 'cat_sr2.png')).shape == (40, 40, 3)
    assert 'Wrote 1 of 1' in capsys.readouterr().out
    assert main(base + ['-i', str(tmp_path / 'missing.png')]) == 2
    assert 'Input not found' in capsys.readouterr().err
    assert main(base + ['-i', str(tmp_path / 'cat.png'), '--suffix', '_{size}']) == 2
    assert 'only the field {scale}' in capsys.readouterr().err


def test_script_refuses_a_checkpoint_of_another_architecture(ckpt, tmp_path):
    """``python -m facd_basicsr.tools.infer``: an RCAN checkpoint for the EDSR block, one error line, exit 2."""
    cv2.imwrite(str(tmp_path / 'cat.png'), make_gt(load_photo('chelsea'), 1, 20))
    pth = other_architecture_checkpoint(tmp_path)
    args = ['--arch-yaml', ckpt['yml'], '--ckpt', pth, '-i', str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'o')]
    proc = run_python(
        ['-m', 'facd_basicsr.tools.infer'] + args + ['--device', 'cpu'], cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert_one_error_line(proc, pth, f'EDSR from {ckpt["yml"]}')
    assert not (tmp_path / 'o').exists()


def test_a_corrupt_checkpoint_is_one_error_naming_the_file(ckpt, tmp_path, capsys):
    """The package's reader refuses a truncated file; the tool turns that into ``error: ...`` and exit 2."""
    cv2.imwrite(str(tmp_path / 'cat.png'), make_gt(load_photo('chelsea'), 1, 20))
    cut = tmp_path / 'cut.pth'
    with open(ckpt['pth'], 'rb') as f:
        cut.write_bytes(f.read()[:300])
    args = ['--arch-yaml', ckpt['yml'], '--ckpt', str(cut), '-i', str(tmp_path / 'cat.png'), '--device', 'cpu']
    assert main(args + ['-o', str(tmp_path / 'o'), '--no-progress']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --ckpt') and str(cut) in err[0]


def test_a_16_bit_png_stays_16_bit(ckpt, tmp_path, capsys):
    """A 16-bit PNG (cv2) gives a 16-bit PNG: the network on value / 65535, x65535, rounded; not 8-bit x 257."""
    photo = make_gt(load_photo('coffee'), 1, 24).astype(np.float64)
    smooth = cv2.GaussianBlur(photo, (5, 5), 1.5) * 257 + np.arange(24)[:, None, None] * 7  # uses the low byte too
    img = np.clip(smooth, 0, 65535).round().astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / 'deep.png'), img)
    assert cv2.imread(str(tmp_path / 'deep.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    base = ['--arch-yaml', ckpt['yml'], '--ckpt', ckpt['pth'], '--device', 'cpu', '--no-progress']
    assert main(base + ['-i', str(tmp_path / 'deep.png'), '-o', str(tmp_path / 'out')]) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'deep_x2.png'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (48, 48, 3)
    x = torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 65535.)[None]
    with torch.no_grad():
        expected = ckpt['net'](x).clamp(0, 1)[0].numpy().transpose(1, 2, 0)[..., ::-1]
    assert np.abs(out.astype(np.int64) - (expected * 65535.).round()).max() <= 1
    assert np.mean(out % 257 != 0) > 0.9  # 16-bit values, not 8-bit ones times 257
    capsys.readouterr()
    # a format that holds 8 bits refuses the image instead of reducing it silently
    assert main(base + ['-i', str(tmp_path / 'deep.png'), '-o', str(tmp_path / 'webp'), '--ext', 'webp']) == 1
    printed = capsys.readouterr().out
    assert 'deep.png: a 16-bit image, and --ext webp holds 8 bits per channel: use --ext png or tif' in printed
    assert not (tmp_path / 'webp' / 'deep_x2.webp').exists()
    assert main(base + ['-i', str(tmp_path / 'deep.png'), '-o', str(tmp_path / 'tif'), '--ext', 'tif']) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / 'tif' / 'deep_x2.tif'), cv2.IMREAD_UNCHANGED), out)
