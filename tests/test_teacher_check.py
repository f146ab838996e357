"""The teacher check refuses a teacher that does not beat bicubic, and lets a (briefly) trained one through."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor
from basicsr.utils.matlab_functions import imresize

from facd_basicsr.distill.teacher_check import TeacherCheckError, check_teacher, close_lmdb


def _load_pairs(folder: str):
    """(LR, GT) tensors (N, 3, h, w) / (N, 3, 2h, 2w) in [0, 1] RGB from ``folder/{lq_x2,gt}``, sorted by name."""
    names = sorted(os.listdir(osp.join(folder, 'gt')))
    read = [[cv2.imread(osp.join(folder, sub, n)).astype(np.float32) / 255. for n in names] for sub in ('lq_x2', 'gt')]
    return tuple(torch.stack(img2tensor(imgs, bgr2rgb=True, float32=True)) for imgs in read)


def _opt(root, val: bool = True, train: bool = True, scale: int = 2) -> dict:
    """BasicSR-style options: LMDB validation set, folder train set, as parse_options leaves them (minus phase)."""
    data = osp.join(str(root), 'datasets', 'sample')
    datasets = {}
    if train:
        datasets['train'] = dict(name='sample_train', type='PairedImageDataset', dataroot_gt=osp.join(data, 'train/gt'),
                                 dataroot_lq=osp.join(data, 'train/lq_x2'), io_backend={'type': 'disk'}, gt_size=32,
                                 use_hflip=True, use_rot=True)
    if val:
        datasets['val'] = dict(name='sample_val', type='PairedImageDataset', dataroot_gt=osp.join(data, 'val/gt.lmdb'),
                               dataroot_lq=osp.join(data, 'val/lq_x2.lmdb'), io_backend={'type': 'lmdb'})
    return {'scale': scale, 'num_gpu': 0, 'datasets': datasets}


@pytest.fixture(scope='module')
def trained_teacher(sample_root):
    """MSRResNet 16 ch x 1 block, x2, trained 200 Adam steps on 24 px LR crops of the sample train photos (~5 s)."""
    lq, gt = _load_pairs(osp.join(str(sample_root), 'datasets', 'sample', 'train'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: one thread is faster on a shared 2-core machine, and deterministic
    try:
        torch.manual_seed(0)
        net = build_network(dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=1, upscale=2))
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(200):
            top, left = torch.randint(0, lq.shape[-1] - 24 + 1, (2, ), generator=gen).tolist()
            x, y = lq[..., top:top + 24, left:left + 24], gt[..., 2 * top:2 * top + 48, 2 * left:2 * left + 48]
            loss = (net(x) - y).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return net


def _bicubic_psnr_by_hand(folder: str) -> float:
    lq, gt = _load_pairs(folder)
    psnrs = []
    for lq_img, gt_img in zip(lq, gt):
        up = imresize(lq_img, 2).clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1]  # RGB -> BGR, like tensor2img
        ref = gt_img.permute(1, 2, 0).numpy()[..., ::-1]
        to_u8 = [np.round(img * 255.).astype(np.uint8) for img in (up, ref)]
        psnrs.append(calculate_psnr(*to_u8, crop_border=2, test_y_channel=True))
    return float(np.mean(psnrs))


def test_trained_teacher_passes_and_bicubic_matches_hand_computation(trained_teacher, sample_root):
    trained_teacher.train()
    result = check_teacher(trained_teacher, _opt(sample_root), num_images=2)
    assert set(result) == {'teacher_psnr', 'bicubic_psnr', 'num_images'} and result['num_images'] == 2
    assert all(type(v) in (float, int) for v in result.values())
    assert result['teacher_psnr'] > result['bicubic_psnr'] + 0.2
    expected = _bicubic_psnr_by_hand(osp.join(str(sample_root), 'datasets', 'sample', 'val'))
    assert result['bicubic_psnr'] == pytest.approx(expected, abs=1e-6)
    assert trained_teacher.training  # mode restored


def test_random_teacher_is_refused(sample_root):
    torch.manual_seed(0)
    net = build_network(dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2))
    with pytest.raises(TeacherCheckError) as info:
        check_teacher(net, _opt(sample_root))
    message = str(info.value)
    for cause in ('pretrain_network_t', 'wrong scale', 'param_key_t', 'img_range', 'teacher_check: false'):
        assert cause in message
    assert 'sample_val validation set' in message
    val = build_dataset(dict(_opt(sample_root)['datasets']['val'], phase='val', scale=2))
    assert val[0]['gt'].shape == (3, 64, 64)  # the check closed its LMDB: training can open the same set again
    close_lmdb(val)


def test_margin_is_applied(trained_teacher, sample_root):
    with pytest.raises(TeacherCheckError, match='by more than 20 dB'):
        check_teacher(trained_teacher, _opt(sample_root), num_images=1, margin_db=20.)


def test_falls_back_to_train_images_without_val(trained_teacher, sample_root):
    full = check_teacher(trained_teacher, _opt(sample_root, val=False), num_images=3)
    cropped = check_teacher(trained_teacher, _opt(sample_root, val=False), num_images=3, max_lq_side=20)
    assert full['num_images'] == 3 and full['teacher_psnr'] > full['bicubic_psnr']
    assert cropped['bicubic_psnr'] != pytest.approx(full['bicubic_psnr'], abs=1e-3)


def test_wrong_scale_and_missing_data_are_explained(trained_teacher, sample_root):
    x4 = build_network(dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4))
    with pytest.raises(TeacherCheckError, match=r'turns a \(32, 32\) LR image into \(128, 128\).*wrong scale'):
        check_teacher(x4, _opt(sample_root))
    with pytest.raises(TeacherCheckError, match='Is scale 4 right'):
        check_teacher(trained_teacher, _opt(sample_root, scale=4))
    with pytest.raises(TeacherCheckError, match='no val\\* or train dataset'):
        check_teacher(trained_teacher, _opt(sample_root, val=False, train=False))
