"""Cost of one FACD training step against its floor: a student step plus a teacher forward without autograd.

**Headline** (printed last): the whole FACD step against the whole floor step (``floor seq``: teacher forward, then
the student step), in rounds of four calls, floor-FACD-FACD-floor (flipped every other round), one ratio per round;
rounds go on until the ~95 % confidence interval of the median ratio is within +-``--ci`` (default 0.01, so two runs
on a quiet machine agree within 0.02) or ``--max-rounds`` ran. This is the figure to quote.

**Breakdown** (before it; ``--skip-breakdown`` leaves it out): all variants are built in one process and timed
round-robin (one call of each per round, the order rotating), so a change in machine load touches every variant
alike; the medians after warm-up are printed, and the per-round ratios with their quartiles (a measure of the
noise).

- ``student``: stock BasicSR ``SRModel.optimize_parameters`` (forward, L1, backward, Adam step).
- ``teacher``: the teacher forward under ``torch.no_grad``. floor = student + teacher (sum of the medians);
  ``floor seq`` runs the two back to back in one call (the teacher output held during the student step).
- ``kd only``: ``FACDModel.optimize_parameters`` with pixel L1 + gated output KD (no taps, adapters, feature loss).
- ``facd``: the same plus FACDContrastiveLoss (ratio, l2 as in the recipes, K = B - 1, weight 0.3) on three taps
  through 1x1 adapters; gate ``teacher_better``.
- ``naive``: the facd step with the teacher run WITH autograd (weights requiring grad, target not detached), as
  peers write it: the backward then also runs through the teacher.
- ``part: ...``: the pieces FACD adds, each timed alone on the tensors of a real step (forward + backward where
  there is one). Their sum is the least noisy estimate of FACD's own cost; differences of whole-step medians
  (the decomposition rows) carry the machine's noise.

Peak memory = resident bytes (inputs; parameters, gradients and optimizer state of the nets involved) + the peak of
the bytes allocated during the step above its start, after the previous step's gradients and output were freed. On
CUDA the latter is ``torch.cuda.max_memory_allocated`` minus the bytes allocated before; on CPU the peak of the
running sum of the allocation and free events that ``torch.profiler`` records with ``profile_memory=True`` (tensor
memory through PyTorch's allocator, as on CUDA; not the process RSS, which the allocator and glibc blur). The floor's
peak is measured on ``floor seq``.

The teacher-runtime section (``teacher_runtime_cost.py``): teacher time and output drift under the TeacherRunner
options. The contrastive loss alone against B and K: ``contrastive_loss_scaling.py``.

Usage::

    .venv/bin/python benchmarks/step_cost.py --config cpu                  # breakdown, runtime section, headline
    .venv/bin/python benchmarks/step_cost.py --config cpu --skip-breakdown --skip-runtime     # the headline alone
    .venv/bin/python benchmarks/step_cost.py --config edsr_ref --batch 4 --lr-size 24 --repeats 3 --skip-runtime
    .venv/bin/python benchmarks/step_cost.py --config rcan_ref --device cuda --compile    # batch 16, LR 48
    .venv/bin/python benchmarks/step_cost.py --config edsr_ref --device cuda --skip-steps \
        --teacher-weights experiments/pretrained_models/EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time
from functools import partial
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

import facd_basicsr  # noqa: F401  (compat alias before any basicsr import)

# isort: split
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from measure import (FIT_PHOTOS, median_ci, medians, paired_ratio_rounds, photo_batch, quiet_profiler, resident_bytes,
                     round_robin, step_peak_bytes)
from teacher_runtime_cost import runtime_section

from facd_basicsr.distill.teacher_runtime import TeacherRunner
from facd_basicsr.models.facd_model import FACDModel
from facd_study.sample_data import load_photo

MEAN = [0.4488, 0.4371, 0.4040]
EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'upscale': 4, 'img_range': 255., 'rgb_mean': MEAN}
RCAN = dict(EDSR, type='RCAN', num_feat=64, num_group=10, squeeze_factor=16, res_scale=1)
THIRDS = ['body.2', 'body.6', 'conv_after_body']
# yapf: disable
CONFIGS = {
    'cpu': {'teacher': dict(EDSR, num_feat=64, num_block=8, res_scale=1),
            'student': dict(EDSR, num_feat=32, num_block=4, res_scale=1),
            'taps': (['body.2', 'body.5', 'conv_after_body'], ['body.1', 'body.2', 'conv_after_body']),
            'batch': 8, 'lr_size': 24, 'fit_steps': 150},
    'edsr_ref': {'teacher': dict(EDSR, num_feat=256, num_block=32, res_scale=0.1),
                 'student': dict(EDSR, num_feat=64, num_block=16, res_scale=1),
                 'taps': (['body.9', 'body.20', 'conv_after_body'], ['body.4', 'body.10', 'conv_after_body']),
                 'batch': 16, 'lr_size': 48, 'fit_steps': 0},
    'rcan_ref': {'teacher': dict(RCAN, num_block=20), 'student': dict(RCAN, num_block=6), 'taps': (THIRDS, THIRDS),
                 'batch': 16, 'lr_size': 48, 'fit_steps': 0},
}


# ---------------------------------------------------------------------------------------------- data and models
def model_opt(cfg: Dict,
              root: str,
              model_type: str,
              batch: int,
              device: str,
              feature: Optional[Dict],
              train_extra: Optional[Dict] = None) -> Dict:
    """Training options as BasicSR's parse_options leaves them (no datasets are built); no feature loss when
    ``feature`` is None; ``train_extra`` goes into FACDModel's ``train`` (e.g. ``compile_feature_loss``)."""
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [10**6], 'gamma': 0.5}, 'total_iter': 10**6,
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.5}}
    opt = {'name': 'step_cost', 'model_type': model_type, 'scale': cfg['student']['upscale'], 'is_train': True,
           'num_gpu': 0 if device == 'cpu' else 1, 'dist': False, 'rank': 0, 'world_size': 1, 'train': train,
           'datasets': {'train': {'batch_size_per_gpu': batch}}, 'network_g': dict(cfg['student']), 'logger': {},
           'path': {'experiments_root': root, 'models': root, 'training_states': root, 'log': root,
                    'visualization': root, 'resume_state': None}}
    if model_type == 'FACDModel':
        train['kd_opt'] = {'type': 'L1Loss', 'loss_weight': 0.5}
        if feature is not None:
            feature_opt = {'type': 'FACDContrastiveLoss', 'loss_weight': 0.3, 'form': 'ratio'}
            train['feature_opt'] = dict(feature_opt, **feature)
        opt['network_t'] = dict(cfg['teacher'])
        opt['path'].update(pretrain_network_t=osp.join(root, 'teacher.pth'), param_key_t='params')
        opt['distill'] = {'teacher_taps': cfg['taps'][0], 'student_taps': cfg['taps'][1], 'teacher_check': False,
                          'gate': {'mode': 'teacher_better', 'margin': 0.0}}
        train.update(train_extra or {})
    return opt


# yapf: enable


class WithAutograd(nn.Module):
    """Runs ``net`` with autograd on even inside ``torch.no_grad``: the naive teacher (its output keeps a graph)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.requires_grad_(True)

    def forward(self, x):
        with torch.enable_grad():
            return self.net(x)


def build_models(cfg: Dict,
                 root: str,
                 batch: int,
                 device: str,
                 data: Dict,
                 feature: Dict,
                 train_extra: Optional[Dict] = None,
                 history: bool = False) -> Dict:
    """Stock SRModel, FACDModel with output KD only, full FACDModel, naive FACDModel (teacher with autograd); with
    ``history``, also 'facd history': the full FACDModel with the ``history`` negative pool (distill.history
    defaults: 4 noisy copies + the clean patch through the EMA student, no autograd)."""
    torch.manual_seed(0)
    torch.save({'params': build_network(cfg['teacher']).state_dict()}, osp.join(root, 'teacher.pth'))
    models = {}
    for name, model_type in (('student', 'SRModel'), ('kd only', 'FACDModel'), ('facd', 'FACDModel'), ('naive',
                                                                                                       'FACDModel')):
        torch.manual_seed(1)
        model_cls = SRModel if model_type == 'SRModel' else FACDModel
        model = model_cls(
            model_opt(cfg, root, model_type, batch, device, None if name == 'kd only' else feature, train_extra))
        model.feed_data(data)
        models[name] = model
    if history:
        torch.manual_seed(1)
        pool_feature = {'distance': feature['distance'], 'negatives': 'history'}
        models['facd history'] = FACDModel(model_opt(cfg, root, 'FACDModel', batch, device, pool_feature, train_extra))
        models['facd history'].feed_data(data)
    naive = models['naive']
    runner = next((k for k, v in vars(naive).items() if isinstance(v, TeacherRunner)), None)
    setattr(naive, runner or 'net_t', WithAutograd(naive.net_t))  # replaces FACDModel's teacher call (runner or net)
    return models


# ---------------------------------------------------------------------------------------------- the step section
def detached_taps(facd: FACDModel, lq: torch.Tensor) -> tuple:
    """Teacher output, student output and both tap lists of one forward pass, all detached."""
    with facd._recording(), torch.no_grad():
        sr_t, sr_s = facd.net_t(lq), facd.net_g(lq)
        return sr_t, sr_s, facd.teacher_taps.pop(), facd.student_taps.pop()


def part_cases(facd: FACDModel) -> Dict[str, Callable]:
    """The pieces a FACD step adds to the floor, each runnable alone (forward + backward where there is one)."""
    sr_t, sr_s, feats_t, feats_s = detached_taps(facd, facd.lq)
    gate = facd.gate(sr_s, sr_t, facd.gt)
    adapted = [a.detach().requires_grad_(True) for a in facd.net_adapter(feats_s)]
    student_leaves = [f.requires_grad_(True) for f in feats_s]
    copied = [c is not False for c in facd.teacher_taps.needs_copy + facd.student_taps.needs_copy]  # hooks copy these

    def feature_loss(net: Callable, leaves: List[torch.Tensor]):
        for leaf in leaves:
            leaf.grad = None
        facd.cri_feat(net(leaves), feats_t, weight=gate)[0].backward()

    def kd_loss():
        facd.output = sr_s.clone().requires_grad_(True)
        facd._kd_loss(sr_t, gate).backward()

    return {
        'part: tap copies': lambda: [f.clone() for f, c in zip(feats_t + feats_s, copied) if c],
        'part: gate (PSNR)': lambda: facd.gate(sr_s, sr_t, facd.gt),
        'part: output KD L1': kd_loss,
        'part: feature loss': lambda: feature_loss(lambda x: x, adapted),
        'part: adapters+loss': lambda: feature_loss(facd.net_adapter, student_leaves),
    }


def floor_sequence(models: Dict) -> None:
    """Teacher forward without autograd, its output kept, then the student step (the floor's memory)."""
    with torch.no_grad():
        sr_t = models['facd'].net_t(models['student'].lq)
    models['student'].optimize_parameters(1)
    del sr_t


def released(model) -> None:
    """Free the previous step's gradients and output of ``model``, as at the start of a training step."""
    model.optimizer_g.zero_grad(set_to_none=True)
    model.output = None


def held_state(name: str, models: Dict) -> list:
    """What a variant keeps between steps: inputs, nets (with any gradients) and optimizer state."""
    facd = models['facd']
    if name == 'teacher':
        return [facd.lq, facd.net_t]
    model = models.get(name, models['student'])
    held = [model.lq, model.gt, model.net_g, model.optimizer_g, facd.net_t if name == 'floor' else None]
    if name in ('kd only', 'facd', 'naive'):  # the naive teacher also holds the gradients peers never clear
        held += [model.net_t, model.net_adapter]
    return [h for h in held if h is not None]


def paired_ratio(times: Dict[str, List[float]], name: str, sequence: bool = False) -> str:
    """Median and quartiles over rounds of ``name`` / floor of the same round (load changes cancel out better); the
    floor is student + teacher, or with ``sequence`` the two run back to back in one call."""
    floors = times['floor seq'] if sequence else [s + t for s, t in zip(times['student'], times['teacher'])]
    q1, q2, q3 = statistics.quantiles([v / f for v, f in zip(times[name], floors)], n=4)
    return f'x{q2:.3f} [{q1:.3f}-{q3:.3f}]'


def print_decomposition(secs: Dict[str, float], floor: float) -> None:
    """Where the FACD step's time above the floor goes (medians; differences of medians are noisy)."""
    adapters = secs['part: adapters+loss'] - secs['part: feature loss']
    branch = secs['facd'] - secs['kd only']
    rows = [('floor seq - floor', secs['floor seq'] - floor, 'running the two back to back'),
            ('kd only - floor seq', secs['kd only'] - secs['floor seq'], 'gate, output KD, loss logging'),
            ('facd - kd only', branch, 'the feature branch, of which:'),
            ('  feature loss', secs['part: feature loss'], 'FACDContrastiveLoss fwd + bwd'),
            ('  adapters', adapters, '1x1 convs fwd + bwd'),
            ('  tap copies', secs['part: tap copies'], 'hooks (maps written in place only)'),
            ('  remainder', branch - secs['part: adapters+loss'] - secs['part: tap copies'],
             'tap grads into the student backward, adapter Adam, logging')]
    for label, seconds, what in rows:
        print(f'{label:<22}{seconds * 1e3:>10.2f}{seconds / floor:>9.3f}   {what}')


def breakdown_section(models: Dict, args) -> None:
    """Every variant and part round-robin, medians, peak memory, the decomposition (noisy differences)."""
    student, facd = models['student'], models['facd']
    cases = {
        'student': partial(student.optimize_parameters, 1),
        'teacher': torch.no_grad()(partial(facd.net_t, facd.lq))
    }
    cases['floor seq'] = partial(floor_sequence, models)
    cases.update({name: partial(models[name].optimize_parameters, 1) for name in ('kd only', 'facd', 'naive')})
    cases.update(part_cases(facd))
    times = round_robin(cases, args.device, args.warmup, args.repeats)
    secs = medians(times)
    floor = secs['student'] + secs['teacher']
    mem = {}
    for name in ('student', 'teacher', 'floor', 'kd only', 'facd', 'naive'):
        released(models.get(name, student))
        step = cases['floor seq'] if name == 'floor' else cases[name]
        mem[name] = resident_bytes(*held_state(name, models)) + step_peak_bytes(step, args.device)
    print(f'\n{"variant":<22}{"ms":>10}{"x floor":>9}{"peak MiB":>10}{"x floor":>9}')
    for name in ['student', 'teacher', 'floor', 'floor seq', 'kd only', 'facd', 'naive'
                 ] + [k for k in secs if k.startswith('part')]:
        seconds = floor if name == 'floor' else secs[name]
        peak = f'{mem[name] / 2**20:>10.1f}{mem[name] / mem["floor"]:>9.3f}' if name in mem else ''
        print(f'{name:<22}{seconds * 1e3:>10.2f}{seconds / floor:>9.3f}{peak}')
    print_decomposition(secs, floor)
    t_ratio, m_ratio = medians(times)['facd'] / floor, mem['facd'] / mem['floor']
    own = sum(secs[f'part: {k}'] for k in ('tap copies', 'gate (PSNR)', 'output KD L1', 'adapters+loss'))
    print(f'floor + parts (the work FACD adds, each part timed alone): x{1 + own / floor:.3f} floor')
    print(f'breakdown medians: FACD / floor time x{t_ratio:.3f}, peak memory x{m_ratio:.3f} (target <= 1.10: '
          f'{"met" if m_ratio <= 1.10 else "MISSED"}); naive / floor: time x{secs["naive"] / floor:.3f}, peak memory '
          f'x{mem["naive"] / mem["floor"]:.3f}')
    print('breakdown per-round ratios, median [quartiles]: FACD / floor ' + paired_ratio(times, 'facd') +
          ', FACD / floor seq ' + paired_ratio(times, 'facd', True) + ', KD only / floor ' +
          paired_ratio(times, 'kd only') + ', naive / floor ' + paired_ratio(times, 'naive'))


def headline_section(models: Dict, args, name: str = 'facd') -> float:
    """The whole FACD step (``models[name]``) against the whole floor step (floor seq), ABBA rounds until the median's
    interval is within +-``args.ci``; prints the headline and returns the median ratio."""
    start = time.perf_counter()
    ratios, seconds = paired_ratio_rounds(partial(models[name].optimize_parameters, 1),
                                          partial(floor_sequence, models), args.device, args.warmup,
                                          args.min_rounds, args.max_rounds, args.ci)
    ratio, low, high = median_ci(ratios)
    converged = (high - low) / 2 <= args.ci
    print(f'\nheadline rounds: {len(ratios)} (floor, FACD, FACD, floor; flipped every other round) in '
          f'{time.perf_counter() - start:.0f} s; FACD step {statistics.median(seconds["case"]) * 1e3:.2f} ms, floor '
          f'step {statistics.median(seconds["floor"]) * 1e3:.2f} ms (medians); interval '
          f'{"within" if converged else "NOT within"} +-{args.ci} after {len(ratios)} rounds')
    label = 'FACD' if name == 'facd' else 'FACD with the history pool'
    print(f'HEADLINE {label} / floor, whole step: x{ratio:.3f} [95% CI {low:.3f}-{high:.3f}] (target <= 1.05: '
          f'{"met" if ratio <= 1.05 else "MISSED"})')
    return ratio


# ---------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', choices=sorted(CONFIGS), default='cpu')
    parser.add_argument('--batch', type=int, help='batch size (default: the configuration\'s)')
    parser.add_argument('--lr-size', type=int, help='LR patch side (default: the configuration\'s)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=11, help='timed rounds of the breakdown')
    parser.add_argument('--ci', type=float, default=0.01, help='headline: stop when the ~95%% interval of the median '
                        'ratio is within +- this')
    parser.add_argument('--min-rounds', type=int, default=15, help='headline: rounds at least')
    parser.add_argument('--max-rounds', type=int, default=150, help='headline: rounds at most')
    parser.add_argument('--skip-breakdown', action='store_true', help='only the headline of the step section')
    parser.add_argument('--compile-feature-loss', action='store_true',
                        help='FACD with train.compile_feature_loss: true (inductor; the first step compiles)')
    parser.add_argument('--runtime-repeats', type=int, default=3, help='timed rounds of the teacher-runtime section')
    parser.add_argument('--distance', choices=('l1', 'l2', 'cosine'), default='l2', help='FACDContrastiveLoss')
    parser.add_argument('--num-negatives', type=int, help='K of FACDContrastiveLoss (default: batch - 1)')
    parser.add_argument('--history', action='store_true',
                        help='also the whole-step headline of FACD with negatives: history (the EMA pool)')
    parser.add_argument('--teacher-weights', help='BasicSR teacher file (key params) for the runtime section')
    parser.add_argument(
        '--fit-steps',
        type=int,
        help='teacher fit steps without --teacher-weights (default: the '
        'configuration\'s: 150 for cpu, 0 for the reference configs)')
    parser.add_argument('--compile', action='store_true', help='also time torch.compile\'d teacher runners')
    parser.add_argument('--skip-steps', action='store_true', help='only the teacher-runtime section')
    parser.add_argument('--skip-runtime', action='store_true', help='only the step section')
    args = parser.parse_args()
    cfg = CONFIGS[args.config]
    args.batch = args.batch or cfg['batch']
    args.lr_size = args.lr_size or cfg['lr_size']
    args.fit_steps = cfg['fit_steps'] if args.fit_steps is None else args.fit_steps
    return args


def arch_name(net_opt: Dict) -> str:
    """E.g. 'EDSR 32x256' (blocks x channels) or 'RCAN 10x20x64' (groups x blocks x channels)."""
    group = f'{net_opt["num_group"]}x' if 'num_group' in net_opt else ''
    return f'{net_opt["type"]} {group}{net_opt["num_block"]}x{net_opt["num_feat"]}'


def describe(args) -> str:
    if args.device == 'cpu':
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), 'unknown CPU')
        return f'{cpu}, {torch.get_num_threads()} torch thread(s)'
    return f'{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}'


def main() -> None:
    quiet_profiler()
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    t, s = cfg['teacher'], cfg['student']
    print(f'config {args.config}: teacher {arch_name(t)} -> student {arch_name(s)}, x{s["upscale"]}, '
          f'batch {args.batch}, LR {args.lr_size}; torch {torch.__version__}; {describe(args)}; float32; '
          f'{"feature loss compiled; " if args.compile_feature_loss else ""}'
          f'breakdown: median of {args.repeats} round-robin rounds after {args.warmup} warm-up')
    start = time.perf_counter()
    if not args.skip_runtime:  # first, so that the headline is the last line
        runtime_section(cfg, args)
    if not args.skip_steps:
        with tempfile.TemporaryDirectory() as root:
            data = photo_batch([load_photo(n) for n in FIT_PHOTOS], args.batch, args.lr_size, s['upscale'],
                               np.random.default_rng(0), args.device)
            feature = {'distance': args.distance, 'num_negatives': args.num_negatives}
            train_extra = {'compile_feature_loss': True} if args.compile_feature_loss else None
            models = build_models(cfg, root, args.batch, args.device, data, feature, train_extra, args.history)
            if not args.skip_breakdown:
                breakdown_section(models, args)
            if args.history:
                headline_section(models, args, 'facd history')
            headline_section(models, args)
    print(f'({time.perf_counter() - start:.0f} s)')


if __name__ == '__main__':
    main()
