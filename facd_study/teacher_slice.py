"""A student initialised from the teacher where the shapes do not match: slices of the teacher's weights.

The x4 student (EDSR 4 x 16) shares no tensor shape with its teacher (EDSR 16 x 48), so loading the teacher with
``strict_load_g: false`` loads nothing. Our reading of "initialise from the teacher where shapes allow": student
block i takes the teacher block at the evenly spaced depth round(i * (T - 1) / (S - 1)), and every tensor takes the
teacher tensor's leading entries along each dimension (the first 16 of 48 channels; for the pixel-shuffle
upsampler the first 4 x 16 output channels, which are the sub-pixels of the first 16 features). The residual blocks'
last convolution is multiplied by res_scale_teacher / res_scale_student, so each block adds what it added in the
teacher (0.1 / 1 here).
"""
import re
from typing import Dict

import torch

BLOCK = re.compile(r'^body\.(\d+)\.(.*)$')


def teacher_block(student_block: int, student_blocks: int, teacher_blocks: int) -> int:
    """The teacher block whose weights student block ``student_block`` takes (evenly spaced, first and last kept)."""
    if student_blocks == 1:
        return 0
    return round(student_block * (teacher_blocks - 1) / (student_blocks - 1))


def sliced_state(teacher_state: Dict[str, torch.Tensor], student_state: Dict[str, torch.Tensor], teacher_blocks: int,
                 student_blocks: int, res_ratio: float) -> Dict[str, torch.Tensor]:
    """A student state dict (the keys and shapes of ``student_state``) cut out of an EDSR teacher's state dict.

    Args:
        teacher_state (dict): the teacher's ``state_dict()``.
        student_state (dict): the student's ``state_dict()`` (only keys and shapes are read).
        teacher_blocks (int), student_blocks (int): residual blocks of each network.
        res_ratio (float): res_scale of the teacher over res_scale of the student.
    """
    out = {}
    for key, target in student_state.items():
        source_key, scale = key, 1.
        match = BLOCK.match(key)
        if match:
            block, rest = int(match.group(1)), match.group(2)
            source_key = f'body.{teacher_block(block, student_blocks, teacher_blocks)}.{rest}'
            scale = res_ratio if rest.startswith('conv2.') else 1.
        source = teacher_state[source_key]
        if source.dim() != target.dim() or any(s < t for s, t in zip(source.shape, target.shape)):
            raise ValueError(f'{key}: teacher tensor {source_key} {tuple(source.shape)} cannot be cut to '
                             f'{tuple(target.shape)}')
        out[key] = source[tuple(slice(0, n) for n in target.shape)].clone() * scale
    return out
