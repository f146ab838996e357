"""The one scoring path (facd_basicsr.tools.scoring): BasicSR's img2tensor / tensor2img / PSNR-Y on real photos."""
import numpy as np
import pytest
import torch
from basicsr.archs.edsr_arch import EDSR

import facd_study.scoring
from facd_basicsr.tools import evaluate
from facd_basicsr.tools.scoring import image_scores, img_to_tensor, tensor_to_img, upscale
from facd_study.sample_data import load_photo, make_gt

pytestmark = pytest.mark.usefixtures('one_thread')


def _photo(name='coffee', size=48):
    return make_gt(load_photo(name), 1, size)  # uint8 BGR, a real photo


def _old_tools_tensor_to_img(tensor):
    """The formula the tools used before they called BasicSR: clamp, x255 in float32, round half to even, BGR."""
    arr = tensor.detach().float().cpu().clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    return np.ascontiguousarray((arr * 255.).round().astype(np.uint8)[..., ::-1])


def test_img_to_tensor_is_rgb_over_255_in_float32():
    img = _photo()
    tensor = img_to_tensor(img)
    expected = img[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    assert tensor.dtype == torch.float32 and tensor.shape == (1, 3, 48, 48)
    assert np.array_equal(tensor[0].numpy(), expected)
    assert np.array_equal(tensor_to_img(tensor), img)  # the round trip is exact on every uint8 value


def test_tensor_to_img_clamps_and_rounds_as_the_tools_did_on_a_real_network_output():
    torch.manual_seed(0)
    net = EDSR(3, 3, num_feat=8, num_block=1, upscale=2).eval()
    with torch.no_grad():
        out = net(img_to_tensor(_photo('chelsea')))
    out = (out - out.mean()) * 30 + 0.5  # stretch the random net's output: part of it leaves [0, 1]
    assert (out < 0).any() and (out > 1).any()
    half = torch.full((1, 3, 2, 2), 2.5 / 255)  # float32 2.5 / 255 * 255 rounds to 2 (half to even)
    for tensor in (out, half):
        before = tensor.clone()
        assert np.array_equal(tensor_to_img(tensor), _old_tools_tensor_to_img(tensor))
        assert torch.equal(tensor, before)  # the caller's tensor is not clamped in place
    assert tensor_to_img(half)[0, 0, 0] == np.uint8(np.round(np.float32(2.5 / 255) * np.float32(255)))
    with torch.inference_mode():
        inference_tensor = out.clone()
    assert np.array_equal(tensor_to_img(inference_tensor), _old_tools_tensor_to_img(out))  # outside the mode
    with pytest.raises(ValueError, match=r'one image \(1, C, H, W\)'):
        tensor_to_img(out[0])


def test_upscale_is_the_network_between_the_two_conversions():
    torch.manual_seed(1)
    net = EDSR(3, 3, num_feat=8, num_block=1, upscale=2).eval()
    lr = _photo('rocket', 30)
    with torch.no_grad():
        rgb = torch.from_numpy(lr[..., ::-1].transpose(2, 0, 1) / 255.).float()[None]
        expected = _old_tools_tensor_to_img(net(rgb))
    assert np.array_equal(upscale(net, lr), expected)


def test_image_scores_psnr_by_hand_and_size_check():
    gt = _photo('astronaut', 40)
    sr = gt.copy()
    sr[10, 10] = [0, 0, 0]  # one pixel inside the crop
    luma = [16. + (65.481 * c[2] + 128.553 * c[1] + 24.966 * c[0]) / 255. for c in (sr[10, 10], gt[10, 10])]
    mse = (luma[0] - luma[1])**2 / (36 * 36)  # crop 2 of 40: 36 x 36 pixels compared
    assert image_scores(sr, gt, 2)['psnr'] == pytest.approx(10 * np.log10(255.**2 / mse), abs=1e-4)
    assert image_scores(gt, gt, 2) == {'psnr': float('inf'), 'ssim': pytest.approx(1.)}
    with pytest.raises(ValueError, match='differ in size'):
        image_scores(sr[:-1], gt, 2)


def test_eval_and_the_study_harness_share_the_scoring_path():
    assert facd_study.scoring.upscale is upscale and facd_study.scoring.image_scores is image_scores
    assert evaluate.upscale is upscale and evaluate.image_scores is image_scores
