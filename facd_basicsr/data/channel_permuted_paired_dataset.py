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


@register_once(DATASET_REGISTRY)
class ChannelPermutedPairedImageDataset(PairedImageDataset):
    """``PairedImageDataset`` whose training items get one of the six channel orders, drawn uniformly per item.

    Every option of ``PairedImageDataset`` works as there. YAML::

        type: ChannelPermutedPairedImageDataset
        use_channel_permute: true   # false: exactly PairedImageDataset

    The order is drawn with Python's ``random`` after BasicSR's crop, flips and rotations, so seeding and resume
    treat it as they treat those. Validation items (``phase`` other than 'train') are never permuted.

    Args:
        opt (dict): the dataset's options; ``use_channel_permute`` (bool, default True) switches the permutation.

    Raises:
        TypeError: ``use_channel_permute`` is not a boolean.
    """

    def __init__(self, opt: Dict) -> None:
        super().__init__(opt)
        permute = opt.get('use_channel_permute', True)
        if not isinstance(permute, bool):
            raise TypeError(f'dataset {opt.get("name")!r}: use_channel_permute must be true or false, '
                            f'got {permute!r}')
        self.use_channel_permute = permute and opt.get('phase') == 'train'

    def __getitem__(self, index: int) -> Dict:
        item = super().__getitem__(index)
        if self.use_channel_permute:
            order = list(random.choice(RGB_ORDERS))
            item['gt'] = item['gt'][order]  # (3, H, W) tensors, channel first
            item['lq'] = item['lq'][order]
        return item
