"""facd-eval: pairing, LR made from HR, hand-computed PSNR-Y, x8 self-ensemble, published numbers, CSV/markdown."""
import csv
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rcan_arch import RCAN
from test_tool_infer import assert_one_error_line, other_architecture_checkpoint
from torch import nn

from facd_basicsr.tools.bicubic import bicubic_lr
from facd_basicsr.tools.common import self_ensemble
from facd_basicsr.tools.evaluate import main, match_pairs
from facd_basicsr.tools.published import published_rows
from facd_basicsr.tools.scoring import img_to_tensor, tensor_to_img
from facd_study.sample_data import load_photo, make_gt

from conftest import run_python

TINY_EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}


def _save_hr_lr(set_dir, photos, size, lr_names=None):
    """HR PNGs (square ``size``) of ``photos`` and, with ``lr_names``, their bicubic x2 LR under LR_bicubic/X2."""
    hrs = {}
    for i, photo in enumerate(photos):
        hr = make_gt(load_photo(photo), 2, size)
        hrs[photo] = hr
        (set_dir / 'HR').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(set_dir / 'HR' / f'{photo}.png'), hr)
        if lr_names is not None:
            (set_dir / 'LR_bicubic' / 'X2').mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(set_dir / 'LR_bicubic' / 'X2' / lr_names[i]), bicubic_lr(hr, 2))
    return hrs


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    """Set5 with LR files (one named with the x2 suffix), Urban100 with the same HR and no LR folder; tiny EDSR."""
    root = tmp_path_factory.mktemp('bench')
    hrs = _save_hr_lr(root / 'Set5', ['astronaut', 'chelsea'], 40, ['astronautx2.png', 'chelsea.png'])
    _save_hr_lr(root / 'Urban100', ['astronaut', 'chelsea'], 40)
    torch.manual_seed(0)
    net = EDSR(**{k: v for k, v in TINY_EDSR.items() if k != 'type'})
    ema = {k: v + 0.01 for k, v in net.state_dict().items()}
    torch.save({'params': net.state_dict(), 'params_ema': ema}, root / 'net_g.pth')
    (root / 'train.yml').write_text(yaml.safe_dump({'name': 'tiny', 'network_g': TINY_EDSR}))
    net.load_state_dict(ema)
    return {'root': root, 'hrs': hrs, 'net': net.eval()}


def _psnr_y_by_hand(sr, hr, crop):
    """PSNR on the ITU-R BT.601 luma of uint8 BGR images, borders of ``crop`` pixels removed."""

    def luma(img):
        img = img.astype(np.float64) / 255.
        return 16. + 65.481 * img[..., 2] + 128.553 * img[..., 1] + 24.966 * img[..., 0]

    diff = (luma(sr) - luma(hr))[crop:-crop, crop:-crop]
    return 10 * np.log10(255.**2 / np.mean(diff**2))


def test_eval_reports_hand_computed_psnr_and_writes_csv(bench, tmp_path, capsys):
    out = tmp_path / 'out'
    code = main([
        '--opt',
        str(bench['root'] / 'train.yml'), '--ckpt',
        str(bench['root'] / 'net_g.pth'), '--data-root',
        str(bench['root']), '--out-dir',
        str(out), '--device', 'cpu', '--save-sr', '--param-key', 'params_ema'
    ])
    assert code == 0
    printed = capsys.readouterr()
    assert 'param key: params_ema' in printed.out and 'Published' not in printed.out
    assert 'note:' not in printed.err  # the key was chosen explicitly
    with open(out / 'per_image.csv') as f:
        per_image = list(csv.DictReader(f))
    assert [(r['set'], r['image']) for r in per_image] == [('Set5', 'astronaut'), ('Set5', 'chelsea'),
                                                           ('Urban100', 'astronaut'), ('Urban100', 'chelsea')]
    hr = bench['hrs']['chelsea']
    with torch.no_grad():
        sr = tensor_to_img(bench['net'](img_to_tensor(bicubic_lr(hr, 2), torch.device('cpu'))))
    assert np.array_equal(cv2.imread(str(out / 'Set5' / 'chelsea.png')), sr)
    assert float(per_image[1]['psnr']) == pytest.approx(_psnr_y_by_hand(sr, hr, 2), abs=1e-6)
    # Urban100 has no LR folder: LR made from HR by the same MATLAB bicubic gives the same numbers.
    assert [r['psnr'] for r in per_image[:2]] == [r['psnr'] for r in per_image[2:]]
    with open(out / 'summary.csv') as f:
        summary = list(csv.DictReader(f))
    assert [(r['set'], r['images'], r['lr']) for r in summary] == [('Set5', '2', 'files'),
                                                                   ('Urban100', '2', 'bicubic from HR')]
    assert float(summary[0]['psnr']) == pytest.approx(np.mean([float(r['psnr']) for r in per_image[:2]]))
    assert '| Set5 | x2 | 2 | files |' in (out / 'summary.md').read_text()


def test_eval_param_key_and_scale_checks(bench, capsys):
    base = [
        '--arch-yaml',
        str(bench['root'] / 'arch.yml'), '--ckpt',
        str(bench['root'] / 'net_g.pth'), '--data-root',
        str(bench['root']), '--sets', 'Set5', '--device', 'cpu'
    ]
    (bench['root'] / 'arch.yml').write_text(yaml.safe_dump(TINY_EDSR))
    assert main(base) == 0  # default: params, as BasicSR; the file also holds params_ema and a note says so
    printed = capsys.readouterr()
    assert 'param key: params)' in printed.out
    assert 'also holds "params_ema"' in printed.err and '--param-key params_ema' in printed.err
    assert main(base + ['--param-key', 'params']) == 0
    printed = capsys.readouterr()
    assert 'param key: params)' in printed.out and 'note:' not in printed.err
    assert main(base + ['--param-key', 'nope']) == 2
    assert "no param key 'nope'; the file holds ['params', 'params_ema']" in capsys.readouterr().err
    ema_only = bench['root'] / 'ema_only.pth'
    torch.save({'params_ema': torch.load(bench['root'] / 'net_g.pth')['params_ema']}, ema_only)
    assert main(base[:2] + ['--ckpt', str(ema_only)] + base[4:]) == 2  # never a silent fall-back to another key
    err = capsys.readouterr().err
    assert "no param key 'params'; the file holds ['params_ema']: pass --param-key params_ema" in err
    assert main(base + ['--scale', '3']) == 2
    assert 'up-scales x2' in capsys.readouterr().err


def test_match_pairs_strips_scale_suffix_and_names_missing(tmp_path):
    lr_dir = tmp_path / 'lr'
    lr_dir.mkdir()
    for name in ('babyx4.png', 'bird_x4.png', 'butterfly.png', 'butterflyx4.png'):
        cv2.imwrite(str(lr_dir / name), np.zeros((2, 2, 3), np.uint8))
    hr = [str(tmp_path / n) for n in ('baby.png', 'bird.png', 'butterfly.png')]
    pairs = match_pairs(hr, str(lr_dir), 4)
    assert [osp.basename(lr) for _, lr in pairs] == ['babyx4.png', 'bird_x4.png', 'butterfly.png']
    with pytest.raises(FileNotFoundError, match='head.png'):
        match_pairs(hr + [str(tmp_path / 'head.png')], str(lr_dir), 4)


def test_self_ensemble_of_equivariant_net_equals_plain_output():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Upsample(scale_factor=2, mode='nearest'))
    x = torch.rand(1, 3, 7, 10)
    with torch.no_grad():
        torch.testing.assert_close(self_ensemble(net, x), net(x), atol=1e-6, rtol=0)


def _dihedral_numpy(a, flip, turns):
    return np.rot90(np.flip(a, -1) if flip else a, turns, axes=(-2, -1))


def test_self_ensemble_inverts_each_transform_for_a_non_equivariant_net():
    """Reference: each output mapped back by scattering through the transformed index grid (no inverse formula)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))
    x = torch.rand(1, 3, 5, 8)
    with torch.no_grad():
        ours = self_ensemble(net, x).numpy()
        plain = net(x).numpy()
        index = np.arange(10 * 16).reshape(10, 16)
        total = np.zeros_like(plain)
        for flip in (False, True):
            for turns in range(4):
                xt = torch.from_numpy(_dihedral_numpy(x.numpy(), flip, turns).copy())
                y = net(xt).numpy()
                where = _dihedral_numpy(index, flip, turns)
                back = np.empty_like(plain)
                back.reshape(1, 3, -1)[..., where.ravel()] = y.reshape(1, 3, -1)
                total += back
    np.testing.assert_allclose(ours, total / 8, atol=1e-6)
    assert np.abs(ours - plain).max() > 1e-3  # the net is not equivariant, so the check above has teeth


def test_published_rows_match_only_the_rcan_configurations():
    student = {'type': 'RCAN', 'num_feat': 64, 'num_group': 10, 'num_block': 6, 'upscale': 4}
    rows = dict(published_rows(student, 4, ['Set5', 'B100', 'urban100']))
    assert rows['FACD (aggregator listing)'] == {'Set5': 32.540, 'urban100': 26.606}
    assert len(rows) == 5
    teacher = dict(student, num_block=20, upscale=2)
    assert published_rows(teacher, 2, ['Set5']) == [('teacher (FAKD paper)', {'Set5': 38.271})]
    assert published_rows(student, 2, ['Set5']) == []  # upscale 4 evaluated at x2: no match
    assert published_rows(dict(student, type='EDSR'), 4, ['Set5']) == []


def test_script_prints_published_numbers_for_rcan_student(tmp_path):
    """The real facd-eval (``python -m facd_basicsr.tools.evaluate``) on a random RCAN 10x6 student, x2, Set5."""
    _save_hr_lr(tmp_path / 'bench' / 'Set5', ['coffee'], 24, ['coffeex2.png'])
    torch.manual_seed(0)
    net = RCAN(3, 3, num_feat=64, num_group=10, num_block=6, upscale=2)
    torch.save({'params': net.state_dict()}, tmp_path / 'rcan.pth')
    arch = {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 6, 'upscale': 2}
    (tmp_path / 'rcan.yml').write_text(yaml.safe_dump(arch))
    args = ['--arch-yaml', 'rcan.yml', '--ckpt', 'rcan.pth', '--data-root', 'bench', '--device', 'cpu']
    proc = run_python(['-m', 'facd_basicsr.tools.evaluate'] + args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr
    assert 'param key: params)' in proc.stdout
    assert '| FACD (aggregator listing) | 38.242 |' in proc.stdout
    assert '| student, no KD (FAKD paper) | 38.074 |' in proc.stdout


def test_script_refuses_a_checkpoint_of_another_architecture(bench, tmp_path):
    """``python -m facd_basicsr.tools.evaluate``: an RCAN checkpoint for the EDSR block, one error line, exit 2."""
    pth = other_architecture_checkpoint(tmp_path)
    opt = str(bench['root'] / 'train.yml')
    args = ['--opt', opt, '--ckpt', pth, '--data-root', str(bench['root']), '--device', 'cpu']
    proc = run_python(['-m', 'facd_basicsr.tools.evaluate'] + args, cwd=tmp_path, env={'OMP_NUM_THREADS': '1'})
    assert_one_error_line(proc, pth, f'EDSR from {opt} (network_g)')


def _net_args(bench):
    return ['--opt', str(bench['root'] / 'train.yml'), '--ckpt', str(bench['root'] / 'net_g.pth'), '--param-key',
            'params', '--device', 'cpu']


def _one_error(capsys):
    """The single ``error: ...`` line a tool printed on stderr (a traceback or a second line fails)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


def test_an_lr_folder_of_another_scale_is_refused_naming_both_files(bench, tmp_path, capsys):
    """HR 40x40 with an x4 LR (10x10) and an x2 network: refused (it used to score the top-left 20x20 crop)."""
    set_dir = tmp_path / 'bench' / 'Set5'
    hr = bench['hrs']['astronaut']
    (set_dir / 'HR').mkdir(parents=True)
    (set_dir / 'LR_bicubic' / 'X2').mkdir(parents=True)
    cv2.imwrite(str(set_dir / 'HR' / 'astronaut.png'), hr)
    cv2.imwrite(str(set_dir / 'LR_bicubic' / 'X2' / 'astronaut.png'), bicubic_lr(hr, 4))
    args = _net_args(bench) + ['--data-root', str(tmp_path / 'bench'), '--out-dir', str(tmp_path / 'out')]
    assert main(args) == 2
    line = _one_error(capsys)
    assert line == (f'error: HR {set_dir / "HR" / "astronaut.png"} is 40x40 but LR '
                    f'{set_dir / "LR_bicubic" / "X2" / "astronaut.png"} is 10x10: at scale x2 the HR should be 20x20 '
                    '(up to 1 pixel(s) more before a mod-crop): wrong LR folder or scale?')
    assert not (tmp_path / 'out' / 'summary.csv').exists()
    cv2.imwrite(str(set_dir / 'LR_bicubic' / 'X2' / 'astronaut.png'), cv2.resize(hr, (21, 21)))  # HR smaller
    assert main(args) == 2
    assert 'is 40x40 but LR' in _one_error(capsys)


def test_the_mod_crop_remainder_is_still_accepted(bench, tmp_path, capsys):
    """HR one pixel beyond 2 x LR (41x41, not mod-cropped) scores exactly as its 40x40 crop."""
    hr = bench['hrs']['chelsea']
    for name, img in (('even', hr), ('odd', cv2.copyMakeBorder(hr, 0, 1, 0, 1, cv2.BORDER_REFLECT))):
        (tmp_path / name / 'Set5' / 'HR').mkdir(parents=True)
        (tmp_path / name / 'Set5' / 'LR_bicubic' / 'X2').mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / 'Set5' / 'HR' / 'chelsea.png'), img)
        cv2.imwrite(str(tmp_path / name / 'Set5' / 'LR_bicubic' / 'X2' / 'chelsea.png'), bicubic_lr(hr, 2))
        args = _net_args(bench) + ['--data-root', str(tmp_path / name), '--out-dir', str(tmp_path / f'out_{name}')]
        assert main(args) == 0, capsys.readouterr().err
    assert cv2.imread(str(tmp_path / 'odd' / 'Set5' / 'HR' / 'chelsea.png')).shape == (41, 41, 3)
    assert (tmp_path / 'out_odd' / 'per_image.csv').read_text() == (tmp_path / 'out_even' / 'per_image.csv').read_text()


def test_layouts_are_detected_never_guessed(bench, tmp_path, capsys):
    """facd-prepare's GTmod12 + LRbicx<s> is read as such; a set holding both layouts, or none, is an error."""
    base = _net_args(bench)
    root = tmp_path / 'datasets'
    for set_name, lr in (('Set5', True), ('BSDS100', False)):
        (root / set_name / 'GTmod12').mkdir(parents=True)
        for photo, hr in bench['hrs'].items():
            cv2.imwrite(str(root / set_name / 'GTmod12' / f'{photo}.png'), hr)
            if lr:
                (root / set_name / 'LRbicx2').mkdir(exist_ok=True)
                cv2.imwrite(str(root / set_name / 'LRbicx2' / f'{photo}.png'), bicubic_lr(hr, 2))
    (root / 'DIV2K').mkdir()  # a folder that is no set: skipped
    assert main(base + ['--data-root', str(root), '--out-dir', str(tmp_path / 'out')]) == 0
    with open(tmp_path / 'out' / 'summary.csv') as f:
        summary = list(csv.DictReader(f))
    assert [(r['set'], r['lr']) for r in summary] == [('Set5', 'files'), ('BSDS100', 'bicubic from HR')]
    assert summary[0]['psnr'] == summary[1]['psnr']  # the same HR, LR files = bicubic made from HR
    with open(bench['root'] / 'Set5' / 'HR' / 'astronaut.png', 'rb') as f:
        assert f.read() == (root / 'Set5' / 'GTmod12' / 'astronaut.png').read_bytes()
    assert main(base + ['--data-root', str(root), '--sets', 'B100']) == 0  # B100 is BSDS100's other name
    assert '| BSDS100 | x2 | 2 | bicubic from HR |' in capsys.readouterr().out
    (root / 'Set5' / 'HR').mkdir()
    assert main(base + ['--data-root', str(root), '--sets', 'Set5']) == 2
    assert _one_error(capsys) == (f'error: {root / "Set5"} holds both GTmod12/ (facd-prepare) and HR/ (benchmark '
                                  'download): pass --layout prepared or --layout benchmark')
    assert main(base + ['--data-root', str(root), '--sets', 'Set5', '--layout', 'prepared']) == 0
    assert main(base + ['--data-root', str(tmp_path), '--sets', 'Set5']) == 2
    assert _one_error(capsys) == (f'error: --sets Set5: no such set under {tmp_path}: looked for '
                                  f'{tmp_path / "Set5"}/GTmod12/ (what facd-prepare writes) or {tmp_path / "Set5"}/HR/ '
                                  '(a benchmark download)')
    assert main(base + ['--data-root', str(tmp_path)]) == 2
    assert _one_error(capsys).endswith('pass --data-root there')
