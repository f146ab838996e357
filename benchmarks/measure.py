"""Measuring helpers of the benchmarks: round-robin medians, peak step memory on CPU or CUDA, resident bytes, and
real-photo batches."""
import math
import os
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from facd_basicsr.tools.bicubic import bicubic_lr

# the benchmarks load photos through the study harness (facd_study/), which is not installed: import it from the repo
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# real photos (scikit-image) for training-like batches and, disjoint from them, for evaluation patches
FIT_PHOTOS, EVAL_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket'), ('hubble_deep_field', 'motorcycle_left')


def photo_batch(photos: List[np.ndarray], batch: int, lr_size: int, scale: int, rng: np.random.Generator,
                device: str) -> Dict:
    """Random GT crops of uint8 BGR photos and their MATLAB-bicubic LR: {'lq': (B, 3, h, w), 'gt': (B, 3, sh, sw)}."""
    gts, lqs = [], []
    for _ in range(batch):
        img = photos[rng.integers(len(photos))]
        size = lr_size * scale
        top, left = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        gts.append(np.ascontiguousarray(img[top:top + size, left:left + size]))
        lqs.append(bicubic_lr(gts[-1], scale))

    def to_tensor(imgs):  # uint8 BGR (H, W, 3) -> float RGB (N, 3, H, W) in [0, 1], contiguous as BasicSR's loader
        rgb = torch.from_numpy(np.stack(imgs)[..., ::-1].copy()).permute(0, 3, 1, 2)
        return rgb.float().div(255.).contiguous().to(device)  # (a permuted view would run every conv channels-last)

    return {'lq': to_tensor(lqs), 'gt': to_tensor(gts)}


def sync(device: str) -> None:
    if device != 'cpu':
        torch.cuda.synchronize()


def round_robin(cases: Dict[str, Callable], device: str, warmup: int, repeats: int) -> Dict[str, List[float]]:
    """Seconds of each call after warm-up, per case; one call of each case per round, the starting case rotating from
    round to round (entry r of every list comes from the same round)."""
    names, times = list(cases), {name: [] for name in cases}
    for r in range(warmup + repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            start = time.perf_counter()
            cases[name]()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def medians(times: Dict[str, List[float]]) -> Dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items()}


def median_ci(values: List[float]) -> Tuple[float, float, float]:
    """Median and its distribution-free ~95 % confidence interval (order statistics n/2 -+ 0.98 sqrt(n))."""
    ordered, n = sorted(values), len(values)
    half = 0.98 * math.sqrt(n)
    low, high = max(0, round(n / 2 - half) - 1), min(n - 1, round(1 + n / 2 + half) - 1)  # 0-based ranks
    return statistics.median(ordered), ordered[low], ordered[high]


def paired_ratio_rounds(case: Callable, floor: Callable, device: str, warmup: int, min_rounds: int, max_rounds: int,
                        half_width: float) -> Tuple[List[float], Dict[str, List[float]]]:
    """Whole-step ratios case / floor, one per round; each round runs ABBA (floor, case, case, floor, the order
    flipped every other round), so a load change that drifts linearly within a round cancels. Rounds continue past
    ``min_rounds`` until the ~95 % interval of the median ratio is within +- ``half_width`` or ``max_rounds`` ran.

    Returns:
        tuple: the per-round ratios, and the per-call seconds of both ({'case': [...], 'floor': [...]}).
    """
    fns = {'case': case, 'floor': floor}
    ratios, seconds = [], {'case': [], 'floor': []}
    for r in range(warmup + max_rounds):
        order = ('floor', 'case', 'case', 'floor') if r % 2 == 0 else ('case', 'floor', 'floor', 'case')
        spent = {'case': 0.0, 'floor': 0.0}
        for name in order:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            spent[name] += time.perf_counter() - start
            if r >= warmup:
                seconds[name].append(time.perf_counter() - start)
        if r < warmup:
            continue
        ratios.append(spent['case'] / spent['floor'])
        if len(ratios) >= min_rounds:
            _, low, high = median_ci(ratios)
            if (high - low) / 2 <= half_width:
                break
    return ratios, seconds


def quiet_profiler() -> None:
    """Re-run this process with kineto's log level raised, once: torch.profiler otherwise prints
    ``USDT: ... profiler_start`` / ``profiler_stop`` lines on every profile; kineto reads the level only at start-up."""
    if os.environ.get('KINETO_LOG_LEVEL') is None:
        os.environ['KINETO_LOG_LEVEL'] = '6'  # above USDT (5): kineto prints nothing
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable] + sys.argv)


def step_peak_bytes(fn: Callable, device: str) -> int:
    """Peak bytes allocated during ``fn()`` above what was allocated when it started (see the module docstring)."""
    if device != 'cpu':
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == '[memory]')
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def resident_bytes(*objs) -> int:
    """Bytes of the distinct storages of tensors, of modules' parameters, gradients and buffers, of optimizer states."""
    tensors = []
    for obj in objs:
        if torch.is_tensor(obj):
            tensors.append(obj)
        elif isinstance(obj, nn.Module):
            tensors += [t for p in obj.parameters() for t in (p, p.grad) if t is not None] + list(obj.buffers())
        else:
            tensors += [t for state in obj.state.values() for t in state.values() if torch.is_tensor(t)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())
