"""Teacher-runtime section of ``step_cost.py``: the teacher forward under each ``TeacherRunner`` option (time and
speed-up against float32) and the output drift of autocast on real-photo patches:
PSNR(SR_t_amp, GT) - PSNR(SR_t_fp32, GT) (the issue's criterion: |drift| <= 0.01 dB) and PSNR(SR_t_amp, SR_t_fp32).

GT-referenced drift only means something with trained weights: ``--teacher-weights`` loads a BasicSR file, otherwise
the teacher is fitted for ``--fit-steps`` Adam steps on other photos (random weights when 0).
"""
import copy
import time
from typing import Dict, List

import numpy as np
import torch
from measure import EVAL_PHOTOS, FIT_PHOTOS, medians, photo_batch, round_robin
from torch import nn

import facd_basicsr  # noqa: F401  (compat alias before any basicsr import)

# isort: split
from basicsr.archs import build_network

from facd_basicsr.distill.gate import patch_psnr
from facd_basicsr.distill.teacher_runtime import TeacherRunner
from facd_study.sample_data import load_photo


def fit_teacher(net: nn.Module, photos: List[np.ndarray], steps: int, scale: int, device: str) -> None:
    """A short L1 fit of the teacher on photo crops (batch 4, LR 16), so that its activations look trained."""
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.99))
    rng = np.random.default_rng(1)
    for _ in range(steps):
        data = photo_batch(photos, 4, 16, scale, rng, device)
        optimizer.zero_grad()
        nn.functional.l1_loss(net(data['lq']), data['gt']).backward()
        optimizer.step()


def runtime_teacher(cfg: Dict, args) -> nn.Module:
    """The teacher of the runtime section: ``--teacher-weights``, or fitted for ``--fit-steps``, or random."""
    torch.manual_seed(0)
    net = build_network(cfg['teacher']).to(args.device)
    if args.teacher_weights:
        from facd_basicsr.host.checkpoint import load_strictly, read_state_dict
        load_strictly(net, read_state_dict(args.teacher_weights, 'params', '--teacher-weights'), True,
                      '--teacher-weights')
        print(f'teacher weights: {args.teacher_weights}')
    else:
        start = time.perf_counter()
        fit_teacher(net.train(), [load_photo(n) for n in FIT_PHOTOS], args.fit_steps, cfg['teacher']['upscale'],
                    args.device)
        print('teacher weights: ' + (f'random init + {args.fit_steps} Adam steps on {", ".join(FIT_PHOTOS)} '
                                     f'({time.perf_counter() - start:.0f} s)' if args.fit_steps else 'random init'))
    return net.eval().requires_grad_(False)


def runtime_section(cfg: Dict, args) -> None:
    net = runtime_teacher(cfg, args)
    scale = cfg['teacher']['upscale']
    data = photo_batch([load_photo(n) for n in EVAL_PHOTOS], args.batch, args.lr_size, scale, np.random.default_rng(2),
                       args.device)
    options = {'fp32': {}, 'fp32 channels_last': {'channels_last': True}}
    for amp in ('bf16', 'fp16'):
        options.update({amp: {'amp': amp}, f'{amp}, fp32 conv_last': {'amp': amp, 'fp32_modules': ['conv_last']}})
        if args.device != 'cpu':
            options[f'{amp}, fp32 conv_last, ch_last'] = dict(options[f'{amp}, fp32 conv_last'], channels_last=True)
    if args.compile:
        options.update({f'{k} compile': dict(v, compile=True) for k, v in list(options.items())})
    runners = {name: TeacherRunner(copy.deepcopy(net), **kw) for name, kw in options.items()}
    cases = {name: (lambda r=runner: r(data['lq'])) for name, runner in runners.items()}
    secs = medians(round_robin(cases, args.device, max(args.warmup, 2 if args.compile else 1), args.runtime_repeats))
    outs = {name: runner(data['lq']) for name, runner in runners.items()}
    bicubic = nn.functional.interpolate(data['lq'], scale_factor=scale, mode='bicubic', align_corners=False)
    psnr_ref = patch_psnr(outs['fp32'], data['gt']).mean().item()
    print(f'\nteacher forward, {args.batch} x LR {args.lr_size}: PSNR(SR_t fp32, GT) {psnr_ref:.3f} dB, '
          f'bicubic {patch_psnr(bicubic, data["gt"]).mean().item():.3f} dB (RGB, mean over patches of '
          f'{", ".join(EVAL_PHOTOS)})')
    print(f'{"teacher runner":<32}{"ms":>10}{"speed-up":>10}{"dPSNR GT dB":>13}{"PSNR vs fp32":>14}{"max |d|":>10}')
    for name, seconds in secs.items():
        drift = patch_psnr(outs[name], data['gt']).mean().item() - psnr_ref
        vs_fp32 = patch_psnr(outs[name], outs['fp32'].clamp(0, 1)).mean().item()
        max_diff = (outs[name] - outs['fp32']).abs().max().item()
        print(f'{name:<32}{seconds * 1e3:>10.2f}{secs["fp32"] / seconds:>10.2f}{drift:>+13.4f}{vs_fp32:>14.2f}'
              f'{max_diff:>10.2e}')
