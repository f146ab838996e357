"""One prepared check of every CUDA code path of FACD: training through the entry point, step cost, teacher drift.

On a CUDA machine (at most ~8 minutes on one recent GPU)::

    python3 benchmarks/gpu_check.py --out results/gpu_check.md

1. **Training through the entry point** (``facd_basicsr/train.py`` in a subprocess, on real photos from
   scikit-image written as a paired folder set, ``prefetch_mode: cuda`` with pinned memory and 4 workers): a tiny
   EDSR teacher (``options/tiny/train_teacher_tiny_x2.yml``), then FACD (``options/tiny/train_FACD_tiny_x2.yml``)
   with student ``train.amp: bf16``, teacher ``teacher_amp: bf16`` + fp32 ``conv_last``, both channels-last, gradient
   clipping; then FACD with student fp16 (grad scaler) trained half-way, resumed with ``--auto_resume`` and
   finished. Each run must exit 0 with finite losses; validation PSNR is read from BasicSR's log.
2. **Step cost** for the ``edsr_ref`` and ``rcan_ref`` configurations of ``step_cost.py`` (batch 16, LR 48, x4),
   under cumulative settings: fp32; teacher bf16 (+ fp32 ``conv_last``); + channels_last (teacher and student);
   + student AMP bf16; + compile (teacher and student). For each: the floor (the same teacher forward without
   autograd + a plain student step, L1 + Adam as ``SRModel``, with the same student settings) and the FACD step
   (pixel + gated KD + ratio-L2 contrastive on three taps through 1x1 adapters), timed round-robin; the per-round
   ratio FACD / floor (median and quartiles), FACD's speed-up over the fp32 FACD step, peak CUDA memory of both,
   and the teacher's PSNR drift, PSNR(SR_t, GT) - PSNR(SR_t fp32, GT) on patches of two photos not used to fit it.
   The teachers are fitted for ``--fit-steps`` Adam steps on other photos first (no weights can be downloaded
   there), so the drift is that of a briefly trained teacher, not of the official files.

It prints one markdown table per section and writes them to ``--out``. ``--device cpu --quick`` runs the same code on
CPU in well under a minute (shrunk networks, a few iterations, no CUDA prefetcher, compile with the ``aot_eager``
backend for the student and without teacher compile, since inductor takes minutes on a CPU); ``tests/test_gpu_check.py``
runs that form so the script does not rot. How to run it on this project's device machine: docs/performance.md.
"""
import argparse
import copy
import datetime
import math
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml

import facd_basicsr  # noqa: F401  (compat alias before any basicsr import)

# isort: split
from measure import EVAL_PHOTOS, FIT_PHOTOS, REPO_ROOT, photo_batch, round_robin, sync
from step_cost import CONFIGS, EDSR, RCAN, arch_name, model_opt
from teacher_runtime_cost import fit_teacher

from facd_basicsr.distill.gate import patch_psnr
from facd_basicsr.models.facd_model import FACDModel
from facd_study.sample_data import build_paired_set, load_photo

TINY = osp.join(REPO_ROOT, 'options', 'tiny')
TRAIN_PY = osp.join(REPO_ROOT, 'facd_basicsr', 'train.py')
# yapf: disable
QUICK_CONFIGS = {  # the reference configurations shrunk for --quick (same architectures, taps and loss)
    'edsr_ref': {'teacher': dict(EDSR, num_feat=16, num_block=3, res_scale=0.1),
                 'student': dict(EDSR, num_feat=8, num_block=2, res_scale=1),
                 'taps': (['body.0', 'body.1', 'conv_after_body'], ['body.0', 'body.1', 'conv_after_body']),
                 'batch': 2, 'lr_size': 12},
    'rcan_ref': {'teacher': dict(RCAN, num_feat=16, num_group=2, num_block=2, squeeze_factor=4),
                 'student': dict(RCAN, num_feat=16, num_group=2, num_block=1, squeeze_factor=4),
                 'taps': (['body.0', 'body.1', 'conv_after_body'], ['body.0', 'body.1', 'conv_after_body']),
                 'batch': 2, 'lr_size': 12},
}
# yapf: enable


# ---------------------------------------------------------------------------------------------- 1. training
def write_option_file(src: str, dst: str, data: Dict[str, str], args, **changes) -> str:
    """``src`` (an options/tiny file) on the photo folders, with the device's loader settings and ``changes``
    (``'train.amp': 'bf16'`` style keys)."""
    with open(src) as f:
        opt = yaml.safe_load(f)
    cuda = args.device == 'cuda'
    opt['num_gpu'] = 1 if cuda else 0
    for split in ('train', 'val'):
        opt['datasets'][split].update(dataroot_gt=data[f'{split}_gt'], dataroot_lq=data[f'{split}_lq'],
                                      io_backend={'type': 'disk'})
    opt['datasets']['train'].update(prefetch_mode='cuda' if cuda else None, pin_memory=cuda,
                                    num_worker_per_gpu=4 if cuda else 0)
    opt['logger'].update(print_freq=max(1, args.train_iters // 4), use_tb_logger=False)
    for key, value in changes.items():
        node = opt
        *parents, leaf = key.split('.')
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    with open(dst, 'w') as f:
        yaml.safe_dump(opt, f)
    return dst


def run_training(work: str, option_file: str, flags=()) -> Dict:
    """One ``facd_basicsr/train.py`` run in ``work``; the wall time and what its newest log says."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, TRAIN_PY, '-opt', option_file, *flags], cwd=work, capture_output=True,
                            text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f'training {option_file} {" ".join(flags)} failed:\n{result.stdout[-3000:]}\n'
                           f'{result.stderr[-3000:]}')
    with open(option_file) as f:
        name = yaml.safe_load(f)['name']
    logs = sorted((osp.join(work, 'experiments', name, f) for f in os.listdir(osp.join(work, 'experiments', name))
                   if f.startswith('train_') and f.endswith('.log')), key=osp.getmtime)
    log = open(logs[-1]).read()
    l_pix = [float(v) for v in re.findall(r'l_pix: (\S+)', log)]
    psnr = [float(v) for v in re.findall(r'# psnr: (\S+)', log)]
    if not l_pix or not all(math.isfinite(v) for v in l_pix):
        raise RuntimeError(f'{option_file}: no finite l_pix in {logs[-1]}: {l_pix}')
    return {'wall': wall, 'l_pix': l_pix[-1], 'psnr': psnr[-1] if psnr else float('nan'),
            'resumed': 'Resuming training from' in log, 'amp_scale': re.findall(r'amp_scale: (\S+)', log)[-1:]}


def training_section(work: str, args) -> List[Dict]:
    """Teacher, FACD bf16, FACD fp16 half + resume; one row per run."""
    size = (96, 64) if args.quick else (None, 128)
    data = {}
    for split, photos, side in (('train', FIT_PHOTOS, size[0]), ('val', EVAL_PHOTOS, size[1])):
        paths = build_paired_set(osp.join(work, 'datasets', split), photos, 2, size=side, lmdb=False)
        data.update({f'{split}_gt': paths['gt'], f'{split}_lq': paths['lq']})
    n = args.train_iters
    common = {'val.val_freq': n, 'logger.save_checkpoint_freq': n}
    teacher = write_option_file(osp.join(TINY, 'train_teacher_tiny_x2.yml'), osp.join(work, 'teacher.yml'), data,
                                args, name='teacher', **{'train.total_iter': n}, **common)
    teacher_file = osp.join(work, 'experiments', 'teacher', 'models', 'net_g_latest.pth')
    facd = dict(common, **{'path.pretrain_network_t': teacher_file, 'distill.teacher_check': False,
                           'train.total_iter': n})
    bf16 = write_option_file(
        osp.join(TINY, 'train_FACD_tiny_x2.yml'), osp.join(work, 'facd_bf16.yml'), data, args, name='facd_bf16',
        **facd, **{'train.amp': 'bf16', 'train.channels_last': True, 'train.grad_clip_norm': 1.0,
                   'distill.teacher_amp': 'bf16', 'distill.teacher_fp32_modules': ['conv_last'],
                   'distill.teacher_channels_last': True})
    half = max(2, n // 2)
    fp16 = dict(facd, **{'train.amp': 'fp16', 'logger.save_checkpoint_freq': half, 'val.val_freq': 2 * half})
    fp16_first = write_option_file(osp.join(TINY, 'train_FACD_tiny_x2.yml'), osp.join(work, 'facd_fp16_a.yml'), data,
                                   args, name='facd_fp16', **dict(fp16, **{'train.total_iter': half}))
    fp16_all = write_option_file(osp.join(TINY, 'train_FACD_tiny_x2.yml'), osp.join(work, 'facd_fp16_b.yml'), data,
                                 args, name='facd_fp16', **dict(fp16, **{'train.total_iter': 2 * half}))
    rows = []
    for label, option_file, iters, flags in (
        ('teacher EDSR 4x32 (SRModel, fp32)', teacher, n, ()),
        ('FACD student bf16, teacher bf16 + fp32 conv_last, channels_last, clip 1.0', bf16, n, ()),
        ('FACD student fp16 (grad scaler), first half', fp16_first, half, ()),
        ('FACD student fp16, --auto_resume to the end', fp16_all, half, ('--auto_resume', )),
    ):
        row = run_training(work, option_file, flags)
        if flags and not row['resumed']:
            raise RuntimeError(f'{option_file} did not resume')
        rows.append(dict(row, label=label, iters=iters))
        print(f'trained: {label}: {iters} iterations in {row["wall"]:.1f} s, l_pix {row["l_pix"]:.4g}, '
              f'val PSNR-Y {row["psnr"]:.3f}', flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- 2. step cost
def variants(args) -> Dict[str, Dict]:
    """Cumulative settings, each {'distill': ..., 'train': ...} added to the FACD options."""
    compile_student = {'backend': 'aot_eager'} if args.device == 'cpu' else True
    teacher_bf16 = {'teacher_amp': 'bf16', 'teacher_fp32_modules': ['conv_last']}
    out = OrderedDict()
    out['fp32'] = {'distill': {}, 'train': {}}
    out['teacher bf16 + fp32 conv_last'] = {'distill': dict(teacher_bf16), 'train': {}}
    out['+ channels_last'] = {'distill': dict(teacher_bf16, teacher_channels_last=True),
                              'train': {'channels_last': True}}
    out['+ student amp bf16'] = {'distill': dict(out['+ channels_last']['distill']),
                                 'train': {'channels_last': True, 'amp': 'bf16'}}
    if not args.skip_compile:
        label = '+ compile' if args.device == 'cuda' else '+ compile (student only, aot_eager)'
        out[label] = {'distill': dict(out['+ student amp bf16']['distill'], teacher_compile=args.device == 'cuda'),
                      'train': dict(out['+ student amp bf16']['train'], compile=compile_student)}
    return out


def floor_step(facd: FACDModel) -> None:
    """The floor with FACD's own nets and settings: teacher forward without autograd (taps not recording), then the
    student step of SRModel (zero_grad, forward, L1, backward, Adam step, loss logging) through the student
    runtime (amp, layout, compile)."""
    facd.run_teacher(facd.lq)
    facd.optimizer_g.zero_grad()
    out = facd.student_runtime.forward(facd.net_g, facd.lq)
    l_pix = facd.cri_pix(out, facd.gt)
    facd.student_runtime.backward_and_step(l_pix, facd.optimizer_g)
    facd.log_dict = facd.reduce_loss_dict(OrderedDict(l_pix=l_pix))


def peak_bytes(fn, device: str) -> Optional[int]:
    """Peak CUDA bytes allocated while ``fn`` runs (everything resident included); None on CPU."""
    if device == 'cpu':
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated()


def step_section(config: str, cfg: Dict, root: str, args) -> List[Dict]:
    device, batch, lr_size = args.device, cfg['batch'], cfg['lr_size']
    scale = cfg['student']['upscale']
    torch.manual_seed(0)
    from basicsr.archs import build_network
    net_t = build_network(cfg['teacher']).to(device)
    fit_teacher(net_t.train(), [load_photo(n) for n in FIT_PHOTOS], args.fit_steps, scale, device)
    torch.save({'params': net_t.state_dict()}, osp.join(root, 'teacher.pth'))
    del net_t
    train_data = photo_batch([load_photo(n) for n in FIT_PHOTOS], batch, lr_size, scale, np.random.default_rng(0),
                             device)
    eval_data = photo_batch([load_photo(n) for n in EVAL_PHOTOS], batch, lr_size, scale, np.random.default_rng(2),
                            device)
    rows, ref_out, ref_facd = [], None, None
    started = time.perf_counter()
    for label, extra in variants(args).items():
        if time.perf_counter() - started > args.budget_s:
            rows.append({'config': config, 'variant': label, 'skipped': f'over the {args.budget_s:.0f} s budget'})
            continue
        opt = model_opt(cfg, root, 'FACDModel', batch, device, {'distance': 'l2', 'num_negatives': None})
        opt['distill'].update(extra['distill'])
        opt['train'].update(extra['train'])
        torch.manual_seed(1)
        facd = FACDModel(opt)
        facd.feed_data(train_data)
        t0 = time.perf_counter()
        cases = {'floor': lambda: floor_step(facd), 'facd': lambda: facd.optimize_parameters(1)}
        times = round_robin(cases, device, args.warmup, args.repeats)
        ratios = [f / s for f, s in zip(times['facd'], times['floor'])]
        q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        with torch.no_grad():
            out = facd.run_teacher(eval_data['lq'])
        if ref_out is None:
            ref_out = out
        psnr = patch_psnr(out, eval_data['gt']).mean().item()
        drift = psnr - patch_psnr(ref_out, eval_data['gt']).mean().item()
        facd_ms = statistics.median(times['facd']) * 1e3
        ref_facd = ref_facd or facd_ms
        mem_floor, mem_facd = peak_bytes(cases['floor'], device), peak_bytes(cases['facd'], device)
        log = facd.get_current_log()
        if not all(math.isfinite(v) for k, v in log.items() if k.startswith('l_')):
            raise RuntimeError(f'{config} {label}: non-finite losses {log}')
        rows.append({'config': config, 'variant': label, 'floor_ms': statistics.median(times['floor']) * 1e3,
                     'facd_ms': facd_ms, 'ratio': q2, 'q1': q1, 'q3': q3, 'speedup': ref_facd / facd_ms,
                     'psnr': psnr, 'drift': drift, 'mem': None if mem_facd is None else mem_facd / mem_floor,
                     'seconds': time.perf_counter() - t0})
        r = rows[-1]
        print(f'{config:<9} {label:<40} floor {r["floor_ms"]:8.2f} ms  FACD {facd_ms:8.2f} ms  x{q2:.3f} '
              f'[{q1:.3f}-{q3:.3f}]  drift {drift:+.4f} dB  ({r["seconds"]:.0f} s)', flush=True)
        facd = cases = None  # free this setting's nets before the next
        if device == 'cuda':
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- report
def markdown(train_rows: List[Dict], step_rows: List[Dict], header: str) -> str:
    lines = [header, '']
    if train_rows:
        lines += ['| training run (entry point) | iterations | wall s | last l_pix | val PSNR-Y dB |',
                  '|---|---|---|---|---|']
        lines += [f'| {r["label"]} | {r["iters"]} | {r["wall"]:.1f} | {r["l_pix"]:.4g} | {r["psnr"]:.3f} |'
                  for r in train_rows]
        lines.append('')
    if step_rows:
        lines += ['| config | settings (cumulative) | floor ms | FACD ms | FACD / floor, per-round median [quartiles] '
                  '| FACD speed-up vs fp32 | teacher dPSNR dB | peak memory FACD / floor |',
                  '|---|---|---|---|---|---|---|---|']
        for r in step_rows:
            if 'skipped' in r:
                lines.append(f'| {r["config"]} | {r["variant"]} | skipped: {r["skipped"]} | | | | | |')
                continue
            mem = '—' if r['mem'] is None else f'{r["mem"]:.3f}'
            lines.append(f'| {r["config"]} | {r["variant"]} | {r["floor_ms"]:.2f} | {r["facd_ms"]:.2f} | '
                         f'{r["ratio"]:.3f} [{r["q1"]:.3f}-{r["q3"]:.3f}] | {r["speedup"]:.2f} | {r["drift"]:+.4f} | '
                         f'{mem} |')
    return '\n'.join(lines) + '\n'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--quick', action='store_true', help='shrunk networks and few iterations (CPU smoke form)')
    parser.add_argument('--out', default='results/gpu_check.md', help='markdown file written with the tables')
    parser.add_argument('--configs', nargs='+', default=['edsr_ref', 'rcan_ref'], choices=['edsr_ref', 'rcan_ref'])
    parser.add_argument('--train-iters', type=int, help='iterations of each training run (default 300, quick 2)')
    parser.add_argument('--fit-steps', type=int, help='teacher fit steps before the step section (default 200, '
                        'quick 2)')
    parser.add_argument('--warmup', type=int, help='warm-up rounds (default 3, quick 1)')
    parser.add_argument('--repeats', type=int, help='timed round-robin rounds per setting (default 20, quick 3)')
    parser.add_argument('--budget-s', type=float, default=150., help='per configuration: settings left when the step '
                        'section has run this long are reported as skipped')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-steps', action='store_true')
    parser.add_argument('--skip-compile', action='store_true')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    args = parser.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available here (use --device cpu --quick for the CPU form)')
    for key, full, quick in (('train_iters', 300, 2), ('fit_steps', 200, 2), ('warmup', 3, 1), ('repeats', 20, 3)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    what = (torch.cuda.get_device_name() + f', CUDA {torch.version.cuda}' if args.device == 'cuda' else
            f'CPU, {torch.get_num_threads()} torch thread(s)')
    header = (f'gpu_check ({"quick" if args.quick else "full"}), {datetime.date.today()}: {what}; torch '
              f'{torch.__version__}; {args.train_iters} training iterations per run; step section: median of '
              f'{args.repeats} round-robin rounds after {args.warmup} warm-up, teachers fitted {args.fit_steps} steps')
    print(header, flush=True)
    start = time.perf_counter()
    train_rows, step_rows = [], []
    with tempfile.TemporaryDirectory() as work:
        if not args.skip_train:
            train_rows = training_section(work, args)
        if not args.skip_steps:
            for config in args.configs:
                cfg = copy.deepcopy(QUICK_CONFIGS[config] if args.quick else CONFIGS[config])
                root = osp.join(work, config)
                os.makedirs(root)
                print(f'{config}: teacher {arch_name(cfg["teacher"])} -> student {arch_name(cfg["student"])}, '
                      f'batch {cfg["batch"]} x LR {cfg["lr_size"]}', flush=True)
                step_rows += step_section(config, cfg, root, args)
    text = markdown(train_rows, step_rows, header + f'; {time.perf_counter() - start:.0f} s in all')
    print('\n' + text)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'written: {args.out}')


if __name__ == '__main__':
    main()
