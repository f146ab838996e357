"""``facd-prepare`` on real photos laid out as the official DIV2K archives and as benchmark folders.

The miniature DIV2K has 240-px photos and 96-px crops (step 48) so the whole file runs in well under a minute on two
cores; one test runs BasicSR's own 480 / 240 / 0 parameters on a 504x744 photo.
"""
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import cv2
import lmdb
import numpy as np
import pytest
from skimage import data as skdata

# isort: off
import facd_basicsr  # noqa: F401  (compat shim: must precede the first basicsr import)
from basicsr.utils.matlab_functions import imresize
# isort: on
from facd_basicsr.tools.prepare import main
from facd_basicsr.tools.prepare_bench import bicubic_lr
from facd_basicsr.tools.prepare_check import check_tree
from facd_basicsr.tools.prepare_div2k import crop_starts

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry', 'hubble_deep_field')
SIZES = ((240, 192), (264, 180), (216, 216), (252, 204), (228, 240), (240, 264))  # (W, H), multiples of 12
SMALL = ['--crop-size', '96', '--step', '48']
HR_LMDB = 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb'


def photo(index, size):
    """A scikit-image photo as BGR uint8, resized to ``size`` (W, H)."""
    img = getattr(skdata, PHOTOS[index % len(PHOTOS)])()
    return cv2.resize(np.ascontiguousarray(img[..., ::-1]), size, interpolation=cv2.INTER_AREA)


def make_div2k(folder, count, scales, sizes=SIZES, zipped=False):
    """``DIV2K_train_HR/0001.png`` and ``DIV2K_train_LR_bicubic/X<s>/0001x<s>.png`` (or the official zips)."""
    files = {}
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        hr = photo(i, sizes[i % len(sizes)])
        files[f'DIV2K_train_HR/{i + 1:04d}.png'] = hr
        for s in scales:
            files[f'DIV2K_train_LR_bicubic/X{s}/{i + 1:04d}x{s}.png'] = bicubic_lr(hr, s)
    for name, img in files.items():
        if zipped:
            archive = 'DIV2K_train_HR.zip' if 'HR' in name else f'DIV2K_train_LR_bicubic_{name.split("/")[1]}.zip'
            with zipfile.ZipFile(osp.join(folder, archive), 'a') as zf:
                zf.writestr(name, cv2.imencode('.png', img)[1].tobytes())
        else:
            os.makedirs(osp.dirname(osp.join(folder, name)), exist_ok=True)
            cv2.imwrite(osp.join(folder, name), img)
    return str(folder)


def make_benchmark(folder):
    """Five sets: Set5 in the EDSR layout (``Set5/HR/``), the others as bare folders; odd sizes, one grey image."""
    for k, name in enumerate(('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')):
        hr_dir = osp.join(folder, name, 'HR') if name == 'Set5' else osp.join(folder, name)
        os.makedirs(hr_dir)
        for j in range(2):
            img = photo(k + j, (101 + 7 * j, 89 + 5 * k))
            if name == 'Set14' and j == 1:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            cv2.imwrite(osp.join(hr_dir, f'img_{j:03d}.png'), img)
    return str(folder)


def lmdb_items(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        items = dict(txn.cursor())
    env.close()
    return items


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """A prepared root: DIV2K (4 photos, x2 x3 x4, 96-px crops) and the five benchmark sets at x2 x3 x4."""
    base = tmp_path_factory.mktemp('prepare')
    div2k = make_div2k(base / 'download', 4, (2, 3, 4))
    bench = make_benchmark(str(base / 'benchmark'))
    root = base / 'root'
    assert main(['--div2k', div2k, '--benchmark', bench, '--root', str(root), '--workers', '2', *SMALL]) == 0
    return {'root': root, 'div2k': div2k, 'bench': bench}


def test_div2k_lmdbs_hold_basicsr_crops(tree):
    root = tree['root']
    assert sorted(os.listdir(root / 'datasets' / 'DIV2K')) == [
        'DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X2_sub.lmdb', 'DIV2K_train_LR_bicubic_X3_sub.lmdb',
        'DIV2K_train_LR_bicubic_X4_sub.lmdb']  # no staging folder left
    hr = lmdb_items(str(root / HR_LMDB))
    meta = open(root / HR_LMDB / 'meta_info.txt').read().splitlines()
    assert meta[0] == '0001_s001.png (96,96,3) 1' and len(meta) == len(hr)
    expected = sum(len(crop_starts(h, 96, 48, 0)) * len(crop_starts(w, 96, 48, 0)) for w, h in SIZES[:4])
    assert len(hr) == expected and [m.split('.')[0] for m in meta] == sorted(k.decode() for k in hr)
    for s in (2, 3, 4):
        lr = lmdb_items(str(root / f'datasets/DIV2K/DIV2K_train_LR_bicubic_X{s}_sub.lmdb'))
        assert lr.keys() == hr.keys()
        crop = cv2.imdecode(np.frombuffer(lr[b'0002_s002'], np.uint8), cv2.IMREAD_UNCHANGED)
        assert crop.shape == (96 // s, 96 // s, 3)
        if s == 3:  # 0002 is 264x180 (88x60 at x3): s002 is the window at row 0, column 48 (16 at x3)
            source = cv2.imread(osp.join(tree['div2k'], 'DIV2K_train_LR_bicubic', 'X3', '0002x3.png'))
            np.testing.assert_array_equal(crop, source[0:32, 16:48])


def test_benchmark_gtmod12_and_lr_are_pixel_exact(tree):
    root, bench = tree['root'], tree['bench']
    assert sorted(os.listdir(root / 'datasets')) == ['BSDS100', 'DIV2K', 'Manga109', 'Set14', 'Set5', 'Urban100']
    for name, hr_dir in (('Set5', 'Set5/HR'), ('Set14', 'Set14'), ('BSDS100', 'B100')):
        for stem in ('img_000', 'img_001'):
            hr = cv2.imread(osp.join(bench, hr_dir, f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            gt = cv2.imread(str(root / 'datasets' / name / 'GTmod12' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
            h, w = hr.shape[:2]
            np.testing.assert_array_equal(gt, hr[:h - h % 12, :w - w % 12])
            for s in (2, 3, 4):
                lr = cv2.imread(str(root / 'datasets' / name / f'LRbicx{s}' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
                want = np.clip((imresize(gt.astype(np.float32) / 255., 1 / s) * 255.).round(), 0, 255).astype('uint8')
                np.testing.assert_array_equal(lr, want)
                assert lr.shape[:2] == (gt.shape[0] // s, gt.shape[1] // s)
    assert cv2.imread(str(root / 'datasets/Set14/LRbicx4/img_001.png'), cv2.IMREAD_UNCHANGED).ndim == 2  # grey kept


def test_check_accepts_the_tree_for_every_shipped_option_file(tree, capsys):
    assert main(['--check', '--root', str(tree['root'])]) == 0
    out = capsys.readouterr().out
    assert 'MISSING' not in out and 'options/train_FACD_RCAN_x4.yml: ok' in out.replace(REPO_ROOT + '/', '')
    report = check_tree(str(tree['root']), [osp.join(REPO_ROOT, 'options')])
    checked = [p for p, problems in report if problems is not None]
    names = {osp.relpath(p, REPO_ROOT) for p in checked}
    assert {'options/train_FACD_EDSR_x3.yml', 'options/baselines/train_KD_RCAN_x2.yml',
            'options/test/test_FACD_RCAN_x4.yml'} <= names
    assert all(not problems for p, problems in report if problems is not None)
    assert len(checked) >= 45 + 39  # every recipe and every test option file


def test_check_on_an_empty_tree_names_what_each_option_file_lacks(tmp_path, capsys):
    assert main(['--check', '--root', str(tmp_path)]) == 1
    found = {osp.relpath(osp.abspath(k), REPO_ROOT): v for k, v in blocks(capsys.readouterr().out).items()}
    block = found['options/train_FACD_RCAN_x4.yml']
    assert block.startswith('MISSING\n')
    for path, key in ((HR_LMDB, 'train.dataroot_gt'), ('datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb',
                                                       'train.dataroot_lq'),
                      ('datasets/Set5/GTmod12', 'val.dataroot_gt'), ('datasets/Set5/LRbicx4', 'val.dataroot_lq')):
        assert f'  - {path} (datasets.{key}): not found\n' in block, path
    assert block.count('\n') == 5 and 'LRbicx2' not in block
    assert 'datasets/Set5/LRbicx2' in found['options/train_FACD_EDSR_x2.yml']
    assert 'datasets/Manga109/LRbicx3' in found['options/test/manga109/test_FAKD_RCAN_x3.yml']
    assert 'Manga109' not in found['options/test/test_FAKD_RCAN_x3.yml']  # the free sets only
    assert 'options/demo/train_FACD_demo_x2.yml' not in found  # reads no data facd-prepare writes: skipped


def write_option(path, scale=4, lq=None, val=True):
    """A tiny SRModel recipe (EDSR, 4 features, 1 block, 2 iterations, CPU) reading the prepared tree."""
    lq = lq or f'datasets/DIV2K/DIV2K_train_LR_bicubic_X{scale}_sub.lmdb'
    val_block = (f'  val:\n    name: Set5\n    type: PairedImageDataset\n    dataroot_gt: datasets/Set5/GTmod12\n'
                 f'    dataroot_lq: datasets/Set5/LRbicx{scale}\n    io_backend:\n      type: disk\n') if val else ''
    path.write_text(f"""name: prepare_tiny_x{scale}
model_type: SRModel
scale: {scale}
num_gpu: 0
manual_seed: 0
datasets:
  train:
    name: DIV2K
    type: PairedImageDataset
    dataroot_gt: {HR_LMDB}
    dataroot_lq: {lq}
    io_backend:
      type: lmdb
    gt_size: 48
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
{val_block}network_g:
  type: EDSR
  num_in_ch: 3
  num_out_ch: 3
  num_feat: 4
  num_block: 1
  upscale: {scale}
  res_scale: 1
  img_range: 255.
  rgb_mean: [0.4488, 0.4371, 0.4040]
path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~
train:
  ema_decay: 0
  optim_g:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [100]
    gamma: 0.5
  total_iter: 2
  warmup_iter: -1
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean
val:
  val_freq: !!float 1e8
  save_img: false
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: {scale}
      test_y_channel: true
logger:
  print_freq: 1
  save_checkpoint_freq: !!float 1e8
  use_tb_logger: false
  wandb:
    project: ~
    resume_id: ~
dist_params:
  backend: gloo
  port: 29500
""")
    return str(path)


def blocks(out):
    """``--check`` output as ``{option file: its status line and problem lines}``."""
    found, name = {}, None
    for line in out.splitlines():
        if line.startswith('  - ') and name:
            found[name] += line + '\n'
        elif ': ' in line and not line.startswith('facd-prepare'):
            name, status = line.rsplit(': ', 1)
            found[name] = status + '\n'
    return found


def test_check_names_what_an_incomplete_tree_lacks(tree, tmp_path, capsys):
    root = tmp_path / 'root'
    shutil.copytree(tree['root'] / 'datasets' / 'DIV2K', root / 'datasets' / 'DIV2K')  # no benchmark sets
    with open(root / 'datasets/DIV2K/DIV2K_train_LR_bicubic_X2_sub.lmdb/meta_info.txt', 'a') as f:
        f.write('0009_s001.png (48,48,3) 1\n')
    opts = [write_option(tmp_path / 'x4.yml'), write_option(tmp_path / 'x2.yml', 2, val=False),
            write_option(tmp_path / 'x3.yml', 3, lq='datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb', val=False)]
    assert main(['--check', '--root', str(root), '--opt', *opts]) == 1
    out = capsys.readouterr().out
    x4, x2, x3 = (blocks(out)[p] for p in opts)
    assert x4.startswith('MISSING') and 'datasets/Set5/GTmod12 (datasets.val.dataroot_gt): not found' in x4
    assert 'DIV2K' not in x4
    assert 'LMDB keys but' in x2 and 'meta_info.txt lines' in x2
    assert 'disagree with scale 3' in x3


def test_default_parameters_480_step_240(tmp_path, capsys):
    src = make_div2k(tmp_path / 'download', 1, (4,), sizes=((744, 504),))
    root = str(tmp_path / 'root')
    assert main(['--div2k', src, '--root', root, '--workers', '1']) == 0
    hr = lmdb_items(osp.join(root, HR_LMDB))
    lr = lmdb_items(osp.join(root, 'datasets/DIV2K/DIV2K_train_LR_bicubic_X4_sub.lmdb'))
    assert sorted(hr) == [f'0001_s{i:03d}'.encode() for i in range(1, 7)] and lr.keys() == hr.keys()
    assert open(osp.join(root, HR_LMDB, 'meta_info.txt')).readline() == '0001_s001.png (480,480,3) 1\n'
    source = cv2.imread(osp.join(src, 'DIV2K_train_HR', '0001.png'))  # rows 0, 24; columns 0, 240, 264
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(hr[b'0001_s006'], np.uint8), 1), source[24:, 264:])
    assert cv2.imdecode(np.frombuffer(lr[b'0001_s006'], np.uint8), 1).shape == (120, 120, 3)

    data_mdb = osp.join(root, HR_LMDB, 'data.mdb')
    before = os.stat(data_mdb).st_mtime_ns
    assert main(['--div2k', src, '--root', root, '--workers', '1']) == 0
    assert 'exists: kept (--overwrite rebuilds it)' in capsys.readouterr().out
    assert os.stat(data_mdb).st_mtime_ns == before
    assert main(['--div2k', src, '--root', root, '--workers', '2', '--overwrite']) == 0
    assert os.stat(data_mdb).st_mtime_ns != before and lmdb_items(osp.join(root, HR_LMDB)) == hr


def test_zip_archives_give_the_same_lmdbs_as_folders(tmp_path):
    folders = make_div2k(tmp_path / 'folders', 2, (2,))
    zips = make_div2k(tmp_path / 'zips', 2, (2,), zipped=True)
    assert sorted(os.listdir(zips)) == ['DIV2K_train_HR.zip', 'DIV2K_train_LR_bicubic_X2.zip']
    for src, root in ((folders, 'a'), (zips, 'b')):
        assert main(['--div2k', src, '--root', str(tmp_path / root), '--workers', '2', *SMALL]) == 0
    for name in ('DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X2_sub.lmdb'):
        a = lmdb_items(str(tmp_path / 'a/datasets/DIV2K' / name))
        assert a and a == lmdb_items(str(tmp_path / 'b/datasets/DIV2K' / name))


def test_progress_off_a_terminal_is_one_line_per_stage(tmp_path, capsys):
    """Under a log or a pipe (capsys is neither a terminal) no per-image bar updates: one line per stage."""
    src = make_div2k(tmp_path / 'download', 2, (2,))
    bench = make_benchmark(str(tmp_path / 'benchmark'))
    args = ['--div2k', src, '--benchmark', bench, '--root', str(tmp_path / 'root'), '--scales', '2', *SMALL]
    assert main(args + ['--workers', '1']) == 0
    err = capsys.readouterr().err
    assert '\r' not in err
    stages = ['DIV2K crops', 'DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X2_sub.lmdb', 'BSDS100', 'Manga109',
              'Set14', 'Set5', 'Urban100']
    assert [line.split(':')[0] for line in err.splitlines()] == stages
    assert err.splitlines()[-1].startswith('Urban100: 2 img in ')


def test_corrupt_and_missing_images_are_named(tmp_path, capsys):
    src = make_div2k(tmp_path / 'download', 3, (2,))
    with open(osp.join(src, 'DIV2K_train_HR', '0002.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')
    assert main(['--div2k', src, '--root', str(tmp_path / 'root'), '--workers', '2', *SMALL]) == 2
    assert 'corrupt or unreadable image: ' + osp.join(src, 'DIV2K_train_HR', '0002.png') in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'root' / HR_LMDB)
    os.remove(osp.join(src, 'DIV2K_train_LR_bicubic', 'X2', '0003x2.png'))
    assert main(['--div2k', src, '--root', str(tmp_path / 'root'), *SMALL]) == 2
    assert 'LR x2 images missing for HR image(s) 0003' in capsys.readouterr().err


def _run_until(args, cwd, ready, timeout=60):
    """Start ``facd-prepare args`` and SIGKILL it as soon as ``ready()`` holds; True when it was killed."""
    proc = subprocess.Popen([sys.executable, '-m', 'facd_basicsr.tools.prepare', *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    proc.wait()
    return False


def test_killed_runs_resume_to_the_same_lmdbs(tmp_path, capsys):
    src = make_div2k(tmp_path / 'download', 8, (2, 4))
    args = ['--div2k', src, '--workers', '1', *SMALL]
    assert main([*args, '--root', str(tmp_path / 'clean'), '--workers', '2']) == 0
    root = tmp_path / 'killed'
    stage = root / 'datasets' / 'DIV2K' / '.facd-prepare-partial'
    done = stage / 'DIV2K_train_HR_sub' / '.done'
    # killed while cropping, after the second image
    assert _run_until([*args, '--root', str(root)], REPO_ROOT, lambda: osp.isdir(done) and len(os.listdir(done)) >= 2)
    assert not osp.exists(root / HR_LMDB) and len(os.listdir(done)) < 8
    opt = write_option(tmp_path / 'x4.yml', val=False)
    assert main(['--check', '--root', str(root), '--opt', opt]) == 1
    # resumed, killed while writing the first LMDB
    assert _run_until([*args, '--root', str(root)], REPO_ROOT,
                      lambda: osp.isdir(stage / 'DIV2K_train_HR_sub.lmdb'))
    assert not osp.exists(root / HR_LMDB)
    assert main(['--check', '--root', str(root), '--opt', opt]) == 1
    capsys.readouterr()
    assert main([*args, '--root', str(root)]) == 0
    assert 'already cropped' in capsys.readouterr().out
    for name in ('DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X2_sub.lmdb', 'DIV2K_train_LR_bicubic_X4_sub.lmdb'):
        clean = lmdb_items(str(tmp_path / 'clean/datasets/DIV2K' / name))
        assert clean and lmdb_items(str(root / 'datasets/DIV2K' / name)) == clean, name
        assert open(root / 'datasets/DIV2K' / name / 'meta_info.txt').read() == \
            open(tmp_path / 'clean/datasets/DIV2K' / name / 'meta_info.txt').read()
    assert not osp.exists(stage)
    assert main(['--check', '--root', str(root), '--opt', opt]) == 0
