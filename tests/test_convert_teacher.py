"""Official EDSR / RCAN -> BasicSR conversion: same function after conversion, every key accounted for."""
import hashlib
import io
import os
import os.path as osp

import pytest
import torch
import yaml
from basicsr.archs import build_network

from facd_basicsr.tools.checksum import main as checksum_main
from facd_basicsr.tools.convert_teacher import ConversionError, convert_state_dict, edsr_plan, main
from facd_basicsr.tools.teacher_files import TEACHER_FILES, find_teacher_file

from conftest import REPO_ROOT, run_python
from official_layouts import OfficialEDSRLayout, OfficialRCANLayout


def _outputs_max_diff(official: torch.nn.Module, basicsr_net: torch.nn.Module, seed: int = 0) -> float:
    """Max |official(255 x) / 255 - basicsr(x)| on a random (2, 3, 12, 10) input in [0, 1]."""
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(seed))
    official.eval()
    basicsr_net.eval()
    with torch.no_grad():
        return (official(x * 255.) / 255. - basicsr_net(x)).abs().max().item()


def _converted(official: torch.nn.Module, **kwargs) -> torch.nn.Module:
    params, net, _ = convert_state_dict(official.state_dict(), **kwargs)
    model = build_network(dict(net))
    model.load_state_dict(params, strict=True)
    return model


def _spread(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every trainable weight with std 0.1 so that a wrongly placed tensor changes the output visibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_edsr_outputs_match(scale):
    official = _spread(OfficialEDSRLayout(feat=8, blocks=2, scale=scale, res_scale=0.5), seed=scale)
    model = _converted(official, res_scale=0.5)
    assert [type(m).__name__ for m in model.upsample] == ['Conv2d', 'PixelShuffle'] * (2 if scale == 4 else 1)
    assert _outputs_max_diff(official, model) < 1e-5


@pytest.mark.parametrize('scale', [2, 3, 4, 8])
def test_rcan_outputs_match(scale):
    official = _spread(OfficialRCANLayout(feat=16, groups=2, blocks=2, reduction=4, scale=scale), seed=scale)
    params, net, warnings = convert_state_dict(official.state_dict())
    assert (net['type'], net['num_group'], net['num_block'], net['num_feat']) == ('RCAN', 2, 2, 16)
    assert (net['squeeze_factor'], net['upscale'], net['res_scale'], warnings) == (4, scale, 1, [])
    model = build_network(dict(net))
    model.load_state_dict(params, strict=True)
    assert _outputs_max_diff(official, model) < 1e-5


def test_comparison_detects_a_misplaced_tensor_and_a_wrong_res_scale():
    """The equality check above is sensitive: swapped convs or the wrong residual scale break it."""
    official = _spread(OfficialEDSRLayout(feat=8, blocks=2, scale=2, res_scale=0.5), seed=7)
    model = _converted(official, res_scale=0.5)
    with torch.no_grad():
        w0, w1 = model.body[0].conv1.weight.clone(), model.body[1].conv1.weight.clone()
        model.body[0].conv1.weight.copy_(w1)
        model.body[1].conv1.weight.copy_(w0)
    assert _outputs_max_diff(official, model) > 1e-3
    assert _outputs_max_diff(official, _converted(official)) > 1e-3  # inferred res_scale 1 is wrong for this net


def test_res_scale_inferred_from_size():
    """0.1 for the official EDSR (32 blocks x 256 ch), 1 for anything else (only shapes are read)."""

    def fake_edsr(feat: int, blocks: int) -> dict:
        shapes = {'head.0.weight': (feat, 3, 3, 3), 'tail.0.0.weight': (4 * feat, feat, 3, 3)}
        shapes['tail.1.weight'] = (3, feat, 3, 3)
        shapes.update({f'body.{b}.body.0.weight': (feat, feat, 3, 3) for b in range(blocks)})
        return {k: torch.zeros(()).expand(s) for k, s in shapes.items()}

    assert edsr_plan(fake_edsr(256, 32), None)[0]['res_scale'] == 0.1
    assert edsr_plan(fake_edsr(64, 16), None)[0]['res_scale'] == 1
    assert edsr_plan(fake_edsr(256, 32), 1.)[0]['res_scale'] == 1


def test_unknown_and_missing_keys_are_named():
    sd = OfficialRCANLayout(scale=2).state_dict()
    sd['body.0.body.0.body.3.extra.weight'] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"unknown source keys \['body\.0\.body\.0\.body\.3\.extra\.weight'\]"):
        convert_state_dict(sd)
    sd = OfficialEDSRLayout(scale=2).state_dict()
    del sd['body.2.bias']  # the conv after the body
    with pytest.raises(ConversionError, match=r"missing source keys \['body\.2\.bias'\]"):
        convert_state_dict(sd)
    sd = OfficialEDSRLayout(scale=2).state_dict()
    del sd['body.1.body.0.weight']  # makes body.1 look like the tail conv: its other keys are then unknown
    with pytest.raises(ConversionError, match=r'body\.1\.body\.0\.bias'):
        convert_state_dict(sd)


def test_wrong_upsampler_and_layout_fail():
    sd = OfficialEDSRLayout(scale=4).state_dict()
    sd['tail.0.1.weight'] = sd.pop('tail.0.2.weight')
    with pytest.raises(ConversionError, match=r'Unrecognised upsampler: conv indices \[0, 1\]'):
        convert_state_dict(sd)
    with pytest.raises(ConversionError, match='Neither the official EDSR layout'):
        convert_state_dict({'conv_first.weight': torch.zeros(8, 3, 3, 3)})


def test_mean_shift_is_checked():
    official = OfficialEDSRLayout(scale=2, rgb_range=1.)
    with pytest.raises(ConversionError, match=r'sub_mean\.bias = \[-0\.4488, -0\.4371, -0\.404\]'):
        convert_state_dict(official.state_dict())
    _, net, warnings = convert_state_dict(official.state_dict(), check_mean=False)
    assert len(warnings) == 2 and net['img_range'] == 255.
    no_mean = {k: v for k, v in official.state_dict().items() if 'mean' not in k}
    assert convert_state_dict(no_mean)[2] == []


def _save_official(tmp_path, name: str, scale: int) -> str:
    path = str(tmp_path / name)
    torch.save(_spread(OfficialRCANLayout(scale=scale), seed=1).state_dict(), path)
    return path


def test_cli_subprocess_writes_loadable_checkpoint_and_yaml(tmp_path):
    src = _save_official(tmp_path, 'RCAN_BIX3.pt', 3)
    out = tmp_path / 'pretrained' / 'RCAN_BIX3.pth'
    proc = run_python(['-m', 'facd_basicsr.tools.convert_teacher', src, '-o', str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ckpt = torch.load(str(out), map_location='cpu', weights_only=True)
    assert list(ckpt) == ['params']
    opts = yaml.safe_load(proc.stdout[proc.stdout.index('network_t:'):])
    assert opts['path'] == {'pretrain_network_t': str(out), 'param_key_t': 'params', 'strict_load_t': True}
    net_opt = opts['network_t']
    assert net_opt['img_range'] == 255. and net_opt['rgb_mean'] == [0.4488, 0.4371, 0.4040]
    model = build_network(net_opt)
    model.load_state_dict(ckpt['params'], strict=True)
    official = OfficialRCANLayout(scale=3)
    official.load_state_dict(torch.load(src, weights_only=True))
    assert _outputs_max_diff(official, model) < 1e-5


def test_cli_refuses_overwrite_wrong_scale_and_basicsr_files(tmp_path, capsys):
    src = _save_official(tmp_path, 'RCAN_BIX2.pt', 2)
    assert main([src, '--scale', '4']) == 2
    assert '--scale 4 given, but the upsampler' in capsys.readouterr().err
    assert main([src]) == 0 and osp.isfile(str(tmp_path / 'RCAN_BIX2.pth'))
    assert 'type: RCAN' in capsys.readouterr().out
    assert main([src]) == 2
    assert 'pass --force' in capsys.readouterr().err
    assert main([src, str(tmp_path / 'positional.pth')]) == 0 and osp.isfile(str(tmp_path / 'positional.pth'))
    assert main([src, str(tmp_path / 'a.pth'), '-o', str(tmp_path / 'b.pth')]) == 2
    assert main([str(tmp_path / 'RCAN_BIX2.pth'), '-o', str(tmp_path / 'again.pth')]) == 2
    assert 'already a BasicSR checkpoint' in capsys.readouterr().err
    assert main([str(tmp_path / 'absent.pt')]) == 2


def test_checksum_ok_mismatch_unknown_missing(tmp_path, capsys):
    buffer = io.BytesIO()
    torch.save({'params': {'w': torch.arange(4.)}}, buffer)  # a small real checkpoint (facd-checksum loads it)
    payload = buffer.getvalue()
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    good = tmp_path / f'my_teacher-{prefix}.pth'  # follows the BasicSR zoo naming convention
    zoo = tmp_path / 'EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth'  # in the table, wrong bytes
    official = tmp_path / 'RCAN_BIX4.pt'  # in the table, no published hash
    for path in (good, zoo, official):
        path.write_bytes(payload)
    assert checksum_main([str(good), str(official)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('OK') and f'matches {prefix}' in out[0]
    assert out[1].startswith('UNKNOWN') and 'no published hash' in out[1]
    assert hashlib.sha256(payload).hexdigest() in out[1]
    assert checksum_main([str(good), str(zoo), str(tmp_path / 'absent.pth')]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ['OK', 'MISMATCH', 'MISSING']
    assert 'does not start with 76ee1c8f' in out[1]


def test_checksum_script_subprocess_and_table(tmp_path):
    zoo = tmp_path / 'EDSR_Lx2_f256b32_DIV2K_official-be38e77d.pth'
    torch.save({'params': {}}, zoo)
    proc = run_python(['-m', 'facd_basicsr.tools.checksum', str(zoo)], cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout.startswith('MISMATCH'), proc.stdout + proc.stderr
    entry = find_teacher_file(str(zoo))
    assert entry.option_files[0] == 'options/train_FACD_EDSR_x2.yml' and not entry.needs_conversion
    assert find_teacher_file('RCAN_BIX3.pth').option_files[0] == 'options/train_FACD_RCAN_x3.yml'
    assert all(e.sha256_prefix is None for e in TEACHER_FILES if e.name.endswith('.pt'))


def test_table_matches_the_shipped_option_files():
    """Every option file that loads a known teacher file is listed for it, and every listed one exists and loads it."""
    used = {}
    for folder, _, names in os.walk(osp.join(REPO_ROOT, 'options')):
        for name in names:
            path = osp.join(folder, name)
            with open(path, encoding='utf-8') as f:
                path_opt = (yaml.safe_load(f) or {}).get('path') or {}
            for key in ('pretrain_network_t', 'pretrain_network_g'):
                entry = find_teacher_file(path_opt.get(key) or '')
                if entry is not None:
                    used.setdefault(entry.name, set()).add(osp.relpath(path, REPO_ROOT).replace(os.sep, '/'))
    listed = {e.name: set(e.option_files) for e in TEACHER_FILES if e.option_files}
    assert used == listed


def test_docs_name_every_teacher_file_of_an_option_file():
    with open(osp.join(REPO_ROOT, 'docs', 'teachers.md'), encoding='utf-8') as f:
        text = f.read()
    for entry in TEACHER_FILES:
        if entry.option_files:
            assert entry.name in text and (entry.sha256_prefix or 'none published') in text
