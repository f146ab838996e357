"""BasicSR's paired dataset with one more augmentation: the same random order of the RGB channels for GT and LQ.

Bicubic downscaling treats each channel alike, so a patch whose channels are permuted is still a valid training pair.
On a small training set this shows the network colours its photos lack (a permutation turns dark reds into dark
greens). Our own addition for issue 32's colour probe, not part of the paper.
"""
import random
from typing import Dict

from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.registry import DATASET_REGISTRY

from facd_basicsr.registry import register_once

RGB_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def check_permutable(opt: Dict, key: str) -> None:
    """Refuse the options under which a channel order is not a valid augmentation: one-channel ``color: y`` and a
    ``mean`` / ``std`` that differs between channels (the items arrive normalised, so a permutation would pair each
    channel with another channel's statistics)."""
    if opt.get('color') == 'y':
        raise ValueError(f'{key}.color is y (one channel): ChannelPermutedPairedImageDataset permutes RGB channels; '
                         'use PairedImageDataset or set use_channel_permute: false')
    for stat in ('mean', 'std'):
        values = opt.get(stat)
        if values is not None and len(set(float(v) for v in values)) > 1:
            raise ValueError(f'{key}.{stat} {list(values)} differs between channels, so a channel permutation after '
                             'the normalisation is wrong: drop it or set use_channel_permute: false')


@register_once(DATASET_REGISTRY)
class ChannelPermutedPairedImageDataset(PairedImageDataset):
    """``PairedImageDataset`` whose training items get one of the six channel orders, drawn uniformly per item.

    Every option of ``PairedImageDataset`` works as there, except two that make a permutation wrong while it is on:
    ``color: y`` (one channel) and a ``mean`` or ``std`` that differs between channels (BasicSR normalises before
    the order is drawn). YAML::

        type: ChannelPermutedPairedImageDataset
        use_channel_permute: true   # false: exactly PairedImageDataset

    The order is drawn with Python's ``random`` after BasicSR's crop, flips and rotations, so seeding and resume
    treat it as they treat those. Validation items (``phase`` other than 'train') are never permuted.

    Args:
        opt (dict): the dataset's options; ``use_channel_permute`` (bool, default True) switches the permutation.

    Raises:
        ValueError: ``use_channel_permute`` is not a boolean, or the permutation is on with ``color: y`` or with a
            per-channel ``mean`` / ``std`` whose channels differ; the message names the key.
    """

    def __init__(self, opt: Dict) -> None:
        super().__init__(opt)
        key = f'datasets.{opt.get("phase")}'
        permute = opt.get('use_channel_permute', True)
        if not isinstance(permute, bool):
            raise ValueError(f'{key}.use_channel_permute must be true or false, got {permute!r}')
        self.use_channel_permute = permute and opt.get('phase') == 'train'
        if self.use_channel_permute:
            check_permutable(opt, key)

    def __getitem__(self, index: int) -> Dict:
        item = super().__getitem__(index)
        if self.use_channel_permute:
            order = list(random.choice(RGB_ORDERS))
            item['gt'] = item['gt'][order]  # (3, H, W) tensors, channel first
            item['lq'] = item['lq'][order]
        return item
