"""Teacher-slice initialisation: a student's first weights cut out of its teacher's, where the shapes allow.

``distill.init_from_teacher: true`` (FACDModel; not on resume, not with ``path.pretrain_network_g``). OUR READING of
"initialise the student from the teacher" (CSD's issue #9 shows that teacher-weight initialisation alone gives most
of CSD's gain), for BasicSR's EDSR and RCAN:

* Depth: student block i takes the teacher block at the evenly spaced depth ``round(i * (T - 1) / (S - 1))`` (first
  and last kept); RCAN maps its residual groups the same way, and the blocks inside each group.
* Width: every tensor takes the teacher tensor's leading entries along each dimension (the first C_s of C_t
  channels; for the pixel-shuffle upsampler, the first r^2 x C_s output channels, which are the sub-pixels of the
  first C_s features).
* EDSR's residual blocks multiply their branch by ``res_scale``: the student's last convolution of each block is
  multiplied by ``res_scale_teacher / res_scale_student``, so each block adds what it added in the teacher. RCAN's
  channel attention is not linear in its input, so RCAN needs equal ``res_scale``.

The result is a plain state dict of the student's own architecture.
"""
import re
from typing import Dict, Mapping

import torch

SUPPORTED = ('EDSR', 'RCAN')
EDSR_BLOCK = re.compile(r'^body\.(\d+)\.(.*)$')
RCAN_BLOCK = re.compile(r'^body\.(\d+)\.residual_group\.(\d+)\.(.*)$')
RCAN_GROUP = re.compile(r'^body\.(\d+)\.(.*)$')


def teacher_block(student_block: int, student_blocks: int, teacher_blocks: int) -> int:
    """The teacher block whose weights student block ``student_block`` takes (evenly spaced, first and last kept)."""
    if student_blocks == 1:
        return 0
    return round(student_block * (teacher_blocks - 1) / (student_blocks - 1))


def cut(source: torch.Tensor, target_shape: torch.Size, key: str, source_key: str) -> torch.Tensor:
    """The leading entries of ``source`` along each dimension, shaped ``target_shape``; a ValueError names both."""
    if source.dim() != len(target_shape) or any(s < t for s, t in zip(source.shape, target_shape)):
        raise ValueError(f'distill.init_from_teacher: student tensor {key} {tuple(target_shape)} cannot be cut out '
                         f'of teacher tensor {source_key} {tuple(source.shape)}')
    return source[tuple(slice(0, n) for n in target_shape)].clone()


def source_key_edsr(key: str, student_opt: Mapping, teacher_opt: Mapping) -> tuple:
    """(teacher key, factor) for an EDSR student key."""
    match = EDSR_BLOCK.match(key)
    if not match:
        return key, 1.
    block, rest = int(match.group(1)), match.group(2)
    block_t = teacher_block(block, student_opt.get('num_block', 16), teacher_opt.get('num_block', 16))
    ratio = teacher_opt.get('res_scale', 1) / student_opt.get('res_scale', 1)
    return f'body.{block_t}.{rest}', ratio if rest.startswith('conv2.') else 1.


def source_key_rcan(key: str, student_opt: Mapping, teacher_opt: Mapping) -> tuple:
    """(teacher key, factor) for an RCAN student key."""
    groups_s, groups_t = student_opt.get('num_group', 10), teacher_opt.get('num_group', 10)
    match = RCAN_BLOCK.match(key)
    if match:
        group, block, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        block_t = teacher_block(block, student_opt.get('num_block', 16), teacher_opt.get('num_block', 16))
        return f'body.{teacher_block(group, groups_s, groups_t)}.residual_group.{block_t}.{rest}', 1.
    match = RCAN_GROUP.match(key)
    if match:
        return f'body.{teacher_block(int(match.group(1)), groups_s, groups_t)}.{match.group(2)}', 1.
    return key, 1.


def check_pair(student_opt: Mapping, teacher_opt: Mapping) -> str:
    """The architecture type both networks share; a ValueError when it is not supported or they differ."""
    types = (student_opt.get('type'), teacher_opt.get('type'))
    if types[0] != types[1] or types[0] not in SUPPORTED:
        raise ValueError(f'distill.init_from_teacher supports a student and teacher of the same type, one of '
                         f'{", ".join(SUPPORTED)}; got network_g {types[0]} and network_t {types[1]}')
    if types[0] == 'RCAN' and student_opt.get('res_scale', 1) != teacher_opt.get('res_scale', 1):
        raise ValueError(f'distill.init_from_teacher: RCAN needs the same res_scale in network_g and network_t (its '
                         f'channel attention is not linear), got {student_opt.get("res_scale", 1)} and '
                         f'{teacher_opt.get("res_scale", 1)}')
    return types[0]


def sliced_state(teacher_state: Mapping[str, torch.Tensor], student_state: Mapping[str, torch.Tensor],
                 student_opt: Mapping, teacher_opt: Mapping) -> Dict[str, torch.Tensor]:
    """A student state dict (keys and shapes of ``student_state``) cut out of the teacher's state dict.

    Args:
        teacher_state (dict): the teacher's ``state_dict()``.
        student_state (dict): the student's ``state_dict()`` (only keys and shapes are read).
        student_opt (dict), teacher_opt (dict): ``network_g`` and ``network_t`` options (type, num_block, ...).

    Raises:
        ValueError: unsupported or different types, or a tensor that cannot be cut; the message names both shapes.
    """
    source_key = source_key_edsr if check_pair(student_opt, teacher_opt) == 'EDSR' else source_key_rcan
    out = {}
    for key, target in student_state.items():
        from_key, factor = source_key(key, student_opt, teacher_opt)
        if from_key not in teacher_state:
            raise ValueError(f'distill.init_from_teacher: student tensor {key} {tuple(target.shape)} has no teacher '
                             f'tensor {from_key}')
        out[key] = cut(teacher_state[from_key], target.shape, key, from_key) * factor
    return out
