"""ChannelPermutedPairedImageDataset: BasicSR's paired LMDB dataset plus one channel order shared by GT and LQ."""
import random

import pytest
import torch
from basicsr.data import build_dataset
from basicsr.data.paired_image_dataset import PairedImageDataset

from facd_basicsr.data.channel_permuted_paired_dataset import RGB_ORDERS, ChannelPermutedPairedImageDataset


def dataset_opt(root, phase='train', lmdb=False, **extra):
    """The sample's x2 training pairs; folders unless ``lmdb`` (LMDB allows one open environment per process)."""
    ext = '.lmdb' if lmdb else ''
    opt = {'name': 'sample_train', 'type': 'ChannelPermutedPairedImageDataset', 'phase': phase, 'scale': 2,
           'dataroot_gt': str(root / f'datasets/sample/train/gt{ext}'),
           'dataroot_lq': str(root / f'datasets/sample/train/lq_x2{ext}'),
           'io_backend': {'type': 'lmdb' if lmdb else 'disk'}, 'gt_size': 32, 'use_hflip': True, 'use_rot': True}
    opt.update(extra)
    return opt


def items(dataset, seed, count=12):
    """``count`` items from seed ``seed``, and the next number Python's ``random`` draws after them."""
    random.seed(seed)
    drawn = [dataset[i % len(dataset)] for i in range(count)]
    return drawn, random.random()


def matching_order(permuted, plain):
    """The channel order that turns ``plain`` into ``permuted``; None when none of the six does."""
    found = [order for order in RGB_ORDERS if torch.equal(plain[list(order)], permuted)]
    return found[0] if found else None


def test_builds_from_the_registry_and_keeps_the_stock_crop(sample_root):
    dataset = build_dataset(dataset_opt(sample_root, lmdb=True))
    assert isinstance(dataset, ChannelPermutedPairedImageDataset) and isinstance(dataset, PairedImageDataset)
    item = dataset[0]
    assert item['gt'].shape == (3, 32, 32) and item['lq'].shape == (3, 16, 16)


def test_gt_and_lq_get_the_same_order_and_every_order_occurs(sample_root):
    """Same seed, same crops: each permuted pair is the stock pair with one shared order, and all six orders show."""
    stock = PairedImageDataset(dataset_opt(sample_root, type='PairedImageDataset'))
    permuted = ChannelPermutedPairedImageDataset(dataset_opt(sample_root))
    seen = set()
    random.seed(3)
    for i in range(60):
        state = random.getstate()
        plain = stock[i % len(stock)]
        random.setstate(state)
        item = permuted[i % len(permuted)]
        order = matching_order(item['gt'], plain['gt'])
        assert order is not None and order == matching_order(item['lq'], plain['lq'])
        assert item['gt_path'] == plain['gt_path']
        seen.add(order)
    assert seen == set(RGB_ORDERS)  # colour photos: a grey patch would match the identity order only


def test_off_and_validation_are_exactly_the_stock_dataset(sample_root):
    stock = PairedImageDataset(dataset_opt(sample_root, type='PairedImageDataset'))
    off = ChannelPermutedPairedImageDataset(dataset_opt(sample_root, use_channel_permute=False))
    (off_items, off_next), (stock_items, stock_next) = items(off, 7), items(stock, 7)
    for a, b in zip(off_items, stock_items):
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
    assert off_next == stock_next  # switched off, it draws no random number
    val = ChannelPermutedPairedImageDataset(dataset_opt(sample_root, phase='val'))
    stock_val = PairedImageDataset(dataset_opt(sample_root, phase='val', type='PairedImageDataset'))
    assert not val.use_channel_permute
    assert torch.equal(val[0]['gt'], stock_val[0]['gt']) and torch.equal(val[0]['lq'], stock_val[0]['lq'])


def test_a_non_boolean_switch_is_refused_by_name(sample_root):
    with pytest.raises(ValueError, match="datasets.train.use_channel_permute must be true or false, got 'yes'"):
        ChannelPermutedPairedImageDataset(dataset_opt(sample_root, use_channel_permute='yes'))


@pytest.mark.parametrize('extra, match', [({'color': 'y'}, r'datasets.train.color is y \(one channel\)'),
                                          ({'mean': [0.4, 0.5, 0.6]}, r'datasets.train.mean \[0.4, 0.5, 0.6\] differs'),
                                          ({'std': [1., 2., 1.]}, r'datasets.train.std \[1.0, 2.0, 1.0\] differs')])
def test_options_that_make_a_permutation_wrong_are_refused_at_start_up(sample_root, extra, match):
    with pytest.raises(ValueError, match=match):
        ChannelPermutedPairedImageDataset(dataset_opt(sample_root, **extra))
    # switched off, or for validation, they are the stock dataset's options and pass
    ChannelPermutedPairedImageDataset(dataset_opt(sample_root, use_channel_permute=False, **extra))
    ChannelPermutedPairedImageDataset(dataset_opt(sample_root, phase='val', **extra))


def test_the_same_mean_and_std_on_every_channel_are_accepted_and_permute_correctly(sample_root):
    stock = PairedImageDataset(dataset_opt(sample_root, type='PairedImageDataset', mean=[.5] * 3, std=[.5] * 3))
    permuted = ChannelPermutedPairedImageDataset(dataset_opt(sample_root, mean=[.5] * 3, std=[.5] * 3))
    random.seed(1)
    state = random.getstate()
    plain = stock[0]
    random.setstate(state)
    item = permuted[0]
    assert matching_order(item['gt'], plain['gt']) is not None


def test_a_training_run_resumes_bit_exact_with_the_permutation(work):
    """facd_basicsr/train.py on the tiny FACD file with this dataset: 2 + 2 iterations (--auto_resume) = 4 straight."""
    from test_faults_training import assert_same_weights, net_g, train
    permute = ['datasets:train:type=ChannelPermutedPairedImageDataset', 'logger:save_checkpoint_freq=2', 'val=~']
    straight = train(work, 'permuted_straight', 4, *permute)
    assert 'Dataset [ChannelPermutedPairedImageDataset] - sample_train is built.' in straight.stdout + straight.stderr
    train(work, 'permuted_resumed', 2, *permute)
    train(work, 'permuted_resumed', 4, *permute, auto_resume=True)
    assert_same_weights(net_g(work, 'permuted_resumed', 4), net_g(work, 'permuted_straight', 4))
