"""``facd-stats``: parameters, FLOPs and median CPU latency of a teacher and a student, as a markdown table.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass on a ``1 x C x H x W`` LR
input: 2 per multiply-accumulate of convolutions and matrix products; element-wise operations are not counted.
Latency is the median wall time of ``--runs`` forward passes on the CPU under ``torch.inference_mode``, after
``--warmup`` passes. No checkpoint is needed: the numbers do not depend on the weights.

Examples::

    facd-stats --opt my_train.yml --lr-size 64x64     # its network_t vs its network_g
    facd-stats --teacher teacher.yml --student train.yml:network_g --lr-size 320x180 --runs 5
"""
import argparse
import re
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from facd_basicsr.tools.common import arch_opt_from_yaml, build_arch, config_error, load_yaml, parse_size

SHOWN_KEYS = ('num_feat', 'num_group', 'num_block', 'embed_dim', 'depths', 'upscale')


def count_params(net: nn.Module) -> int:
    """Number of parameters of ``net`` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``net(x)`` as torch's flop counter counts them (2 per multiply-accumulate)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x)
    return int(counter.get_total_flops())


def median_latency(net: nn.Module, x: torch.Tensor, warmup: int, runs: int) -> float:
    """Median wall time of ``net(x)`` in seconds over ``runs`` passes, after ``warmup`` passes."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            net(x)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_spec(spec: str, default_key: str) -> Tuple[Dict[str, Any], str]:
    """Architecture block of ``FILE[:network_x]`` (a bare block, top-level ``type``, or a block of an option file).

    Returns:
        tuple: (the block, where it comes from: ``FILE`` or ``FILE (network_x)``).
    """
    match = re.fullmatch(r'(.+):(network_\w+)', spec)
    path, key = (match.group(1), match.group(2)) if match else (spec, None)
    if key is None and isinstance(load_yaml(path).get('type'), str):
        return arch_opt_from_yaml(path, None), path
    return arch_opt_from_yaml(path, key or default_key), f'{path} ({key or default_key})'


def describe(arch_opt: Dict[str, Any]) -> str:
    """Short architecture summary, e.g. ``RCAN num_feat=64 num_group=10 num_block=6 upscale=4``."""
    shown = ' '.join(f'{k}={arch_opt[k]}' for k in SHOWN_KEYS if k in arch_opt)
    return f'{arch_opt["type"]} {shown}'.strip()


def measure(arch_opt: Dict[str, Any], source: str, lr_size: Tuple[int, int],
            args: argparse.Namespace) -> Dict[str, Any]:
    """Parameters, FLOPs and (unless ``--no-latency``) median latency of one architecture (from ``source``) on CPU."""
    net = build_arch(arch_opt, source).eval().requires_grad_(False)
    x = torch.rand(1, arch_opt.get('num_in_ch', 3), *lr_size)
    row = {'arch': describe(arch_opt), 'params': count_params(net), 'flops': count_flops(net, x)}
    row['latency'] = None if args.no_latency else median_latency(net, x, args.warmup, args.runs)
    return row


def stats_markdown(rows: List[Tuple[str, Dict[str, Any]]], lr_size: Tuple[int, int], runs: int) -> str:
    """The measured rows as a markdown table; with two rows, a last row of first/second ratios.

    The latency column is there only when the rows were timed (not under ``--no-latency``).
    """
    timed = all(row['latency'] is not None for _, row in rows)
    header = f'| network | architecture | parameters | GFLOPs @ LR {lr_size[0]}x{lr_size[1]} |'
    lines = [header + (f' CPU latency (ms, median of {runs}) |' if timed else ''), '|---' * (5 if timed else 4) + '|']
    for name, row in rows:
        latency = f' {row["latency"] * 1e3:.1f} |' if timed else ''
        lines.append(f'| {name} | {row["arch"]} | {row["params"]:,} ({row["params"] / 1e6:.3f} M) '
                     f'| {row["flops"] / 1e9:.3f} |{latency}')
    if len(rows) == 2:
        (name_a, a), (name_b, b) = rows
        latency = f' {a["latency"] / b["latency"]:.2f}x |' if timed else ''
        lines.append(f'| {name_a} / {name_b} | | {a["params"] / b["params"]:.2f}x | {a["flops"] / b["flops"]:.2f}x '
                     f'|{latency}')
    return '\n'.join(lines)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='facd-stats', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--opt', help='option file: teacher = its network_t, student = its network_g')
    parser.add_argument('--teacher', help='teacher as FILE or FILE:network_x (FILE: option file or bare block)')
    parser.add_argument('--student', help='student as FILE or FILE:network_x (FILE: option file or bare block)')
    parser.add_argument('--lr-size', type=parse_size, default=(64, 64), help='LR input HxW. Default: 64x64')
    parser.add_argument('--warmup', type=int, default=2, help='untimed passes first. Default: 2')
    parser.add_argument('--runs', type=int, default=10, help='timed passes. Default: 10')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads. Default: torch default')
    parser.add_argument('--no-latency', action='store_true', help='parameters and FLOPs only')
    return parser.parse_args(argv)


def networks(args: argparse.Namespace) -> List[Tuple[str, Tuple[Dict[str, Any], str]]]:
    """``(name, (architecture block, where it comes from))`` of the teacher and/or the student of ``args``."""
    if args.opt and (args.teacher or args.student):
        raise ValueError('give either --opt or --teacher/--student, not both')
    if args.opt:
        return [(name, (arch_opt_from_yaml(args.opt, key), f'{args.opt} ({key})'))
                for name, key in (('teacher', 'network_t'), ('student', 'network_g'))]
    chosen = [(name, parse_spec(spec, 'network_t' if name == 'teacher' else 'network_g'))
              for name, spec in (('teacher', args.teacher), ('student', args.student)) if spec]
    if not chosen:
        raise ValueError('nothing to measure: give --opt, or --teacher and/or --student')
    return chosen


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-stats``; exit code 0, or 2 on a configuration error."""
    args = parse_args(argv)
    try:
        if args.runs < 1 or args.warmup < 0:
            raise ValueError(f'--runs ({args.runs}) must be >= 1 and --warmup ({args.warmup}) >= 0')
        if args.threads:
            torch.set_num_threads(args.threads)
        rows = [(name, measure(arch_opt, source, args.lr_size, args)) for name, (arch_opt, source) in networks(args)]
    except (FileNotFoundError, KeyError, ValueError) as err:
        return config_error(err)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); FLOPs = 2 x multiply-accumulates '
          'of conv/matmul ops (torch.utils.flop_counter)\n')
    print(stats_markdown(rows, args.lr_size, args.runs))
    return 0


if __name__ == '__main__':
    sys.exit(main())
