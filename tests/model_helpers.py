"""Tiny FACD set-ups for the model tests: option dicts, teacher files and real-photo batches."""
import contextlib
import copy
import logging
import os
import os.path as osp

import numpy as np
import torch
from basicsr.archs import build_network

from facd_basicsr.tools.bicubic import bicubic_lr
from facd_study.sample_data import load_photo

TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'upscale': 2,
           'res_scale': 1, 'img_range': 255., 'rgb_mean': [0.4488, 0.4371, 0.4040]}
STUDENT = dict(TEACHER, num_feat=4, num_block=1)


def save_teacher(path, seed=0, param_key='params', extra_keys=()):
    """A random-weight tiny EDSR teacher saved as ``{param_key: state}``; returns its state dict.

    ``extra_keys`` adds other keys holding differently seeded weights (to catch loading the wrong key).
    """
    nets = {}
    for i, key in enumerate((param_key, *extra_keys)):
        torch.manual_seed(seed + 100 * i)
        nets[key] = build_network(TEACHER).state_dict()
    torch.save(nets, path)
    return nets[param_key]


def make_opt(tmp_path, feature_opt=None, kd=True, gate=None, batch_size=4, path=None, **distill):
    """Training options as BasicSR's parse_options would leave them, for a tiny EDSR teacher/student pair."""
    root = osp.join(str(tmp_path), 'exp')
    os.makedirs(str(tmp_path), exist_ok=True)
    teacher_file = osp.join(str(tmp_path), 'teacher.pth')
    if not osp.exists(teacher_file):
        save_teacher(teacher_file)
    train = {
        'ema_decay': 0,
        'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
        'total_iter': 100,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.5},
    }
    if kd:
        train['kd_opt'] = {'type': 'L1Loss', 'loss_weight': 0.5}
    if feature_opt is not None:
        train['feature_opt'] = copy.deepcopy(feature_opt)
    distill_opt = {
        'teacher_taps': ['body.0', 'body.1', 'conv_after_body'],
        'student_taps': ['conv_first', 'body.0', 'conv_after_body'],
        'gate': gate or {'mode': 'always'},
        'teacher_check': False,
    }
    distill_opt.update(distill)
    opt = {
        'name': 'facd_unit', 'model_type': 'FACDModel', 'scale': 2, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'auto_resume': False,
        'datasets': {'train': {'batch_size_per_gpu': batch_size}},
        'network_g': dict(STUDENT), 'network_t': dict(TEACHER),
        'path': {'pretrain_network_t': teacher_file, 'param_key_t': 'params', 'strict_load_t': True,
                 'experiments_root': root, 'models': osp.join(root, 'models'),
                 'training_states': osp.join(root, 'training_states'), 'log': root,
                 'visualization': osp.join(root, 'visualization'), 'resume_state': None},
        'distill': distill_opt, 'train': train, 'val': {'metrics': {}}, 'logger': {},
    }
    opt['path'].update(path or {})
    return opt


def bgr_to_tensor(imgs):
    """uint8 BGR (H, W, 3) images -> float RGB tensor (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(imgs)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.


def photo_batches(num_batches, batch_size=4, gt_size=32, seed=0):
    """Fixed (lq, gt) batches of random crops from real photos, as float tensors in [0, 1]."""
    rng = np.random.default_rng(seed)
    photos = [load_photo(name) for name in ('astronaut', 'coffee', 'chelsea')]
    batches = []
    for _ in range(num_batches):
        gts, lqs = [], []
        for _ in range(batch_size):
            img = photos[rng.integers(len(photos))]
            top, left = rng.integers(0, img.shape[0] - gt_size), rng.integers(0, img.shape[1] - gt_size)
            gt = np.ascontiguousarray(img[top:top + gt_size, left:left + gt_size])
            gts.append(gt)
            lqs.append(bicubic_lr(gt, 2))
        batches.append({'lq': bgr_to_tensor(lqs), 'gt': bgr_to_tensor(gts)})
    return batches


class _Messages(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def basicsr_log_messages(level=None):
    """A list that collects the messages of BasicSR's ``basicsr`` logger inside the block; with ``level`` (e.g.
    ``logging.INFO``, what a run's log file sets up) the logger's level meanwhile."""
    logger, handler = logging.getLogger('basicsr'), _Messages()
    before = logger.level
    if level is not None:
        logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
