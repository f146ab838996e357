"""How FACDContrastiveLoss scales with the batch size B and the number of negatives K (CPU).

For each setting: median wall time of forward + backward after warm-up, and the bytes autograd saves for backward
(distinct storages, counted with ``torch.autograd.graph.saved_tensors_hooks``; they all live until backward, so this
is the peak of saved memory). A naive reference, autograd through a Python loop over the K shifts, is timed too.

Expected: time ~ B*K, saved memory ~ B and independent of K (the naive loop's grows with K).

Usage::

    .venv/bin/python benchmarks/contrastive_loss_scaling.py            # about 30 s
    .venv/bin/python benchmarks/contrastive_loss_scaling.py --channels 16 --size 16 --max-batch 32
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

import facd_basicsr  # noqa: F401  (compat alias before any basicsr import)
from facd_basicsr.losses.facd_contrastive_loss import FACDContrastiveLoss
from facd_basicsr.losses.facd_infonce_loss import FACDInfoNCELoss


def saved_bytes(fn: Callable[[], Tensor]) -> Tuple[Tensor, int]:
    """Run ``fn`` and return its output and the bytes of the distinct storages saved for backward."""
    storages: Dict[int, int] = {}

    def pack(x: Tensor) -> Tensor:
        storages[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn()
    return out, sum(storages.values())


def naive_ratio_l1(a: Tensor, t: Tensor, k: int) -> Tensor:
    """The ratio-L1 loss written the obvious way: autograd keeps one difference map per shift."""
    d_pos = (a - t).abs().flatten(1).mean(1)
    d_neg = sum((a - t.roll(-s, 0)).abs().flatten(1).mean(1) for s in range(1, k + 1)) / k
    return (d_pos / (d_neg + 1e-6)).mean()


def timed_step(make_loss: Callable[[Tensor, Tensor], Tensor], a: Tensor, t: Tensor) -> float:
    """Seconds of one forward + backward."""
    a.grad = None
    start = time.perf_counter()
    make_loss(a, t).backward()
    return time.perf_counter() - start


def measure_all(cases: List[Tuple[Callable, Tensor, Tensor]], warmup: int,
                repeats: int) -> List[Tuple[float, float, int]]:
    """Median and minimum seconds, and saved bytes, per case.

    Cases are timed round-robin (one step of each per round), so a change in machine load touches every case alike
    instead of skewing whichever case ran at that moment.
    """
    times: List[List[float]] = [[] for _ in cases]
    for step in range(warmup + repeats):
        for i, (make_loss, a, t) in enumerate(cases):
            seconds = timed_step(make_loss, a, t)
            if step >= warmup:
                times[i].append(seconds)
    return [(statistics.median(ts), min(ts), saved_bytes(lambda: make(a, t))[1])
            for ts, (make, a, t) in zip(times, cases)]


def features(batch: int, channels: int, size: int) -> Tuple[Tensor, Tensor]:
    """Random student (requires grad) and teacher maps of shape (batch, channels, size, size)."""
    gen = torch.Generator().manual_seed(batch)
    a = torch.randn(batch, channels, size, size, generator=gen, requires_grad=True)
    return a, torch.randn(batch, channels, size, size, generator=gen)


def make_case(variant: str, k: int) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss of one table row as a function of (student, teacher) maps."""
    if variant == 'naive-l1':
        return lambda a, t: naive_ratio_l1(a, t, k)
    if variant == 'infonce':
        loss_fn = FACDInfoNCELoss(num_negatives=k)
    else:
        loss_fn = FACDContrastiveLoss(num_negatives=k, distance=variant.split('-')[1])
    return lambda a, t: loss_fn([a], [t])[0]


def settings(max_batch: int) -> List[Tuple[str, int, int]]:
    """(variant, B, K): B sweep with K = B - 1, K sweep at the largest B, each form at the largest B."""
    batches = [b for b in (4, 8, 16, 32) if b <= max_batch]
    rows = [('ratio-l1', b, b - 1) for b in batches]
    rows += [('ratio-l1', max_batch, k) for k in sorted({1, 3, 7, max_batch // 2 - 1}) if k < max_batch - 1]
    rows += [(v, max_batch, max_batch - 1) for v in ('ratio-l2', 'ratio-cosine', 'infonce')]
    rows += [('naive-l1', b, b - 1) for b in batches[-2:]] + [('naive-l1', max_batch, k) for k in (1, 3)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--size', type=int, default=32, help='feature height = width')
    parser.add_argument('--max-batch', type=int, default=16, choices=(8, 16, 32))
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    one_map = args.channels * args.size * args.size * 4  # bytes of one float32 (1, C, H, W) sample
    print(f'torch {torch.__version__}, {args.threads} thread(s), C={args.channels}, H=W={args.size}, float32, '
          f'median of {args.repeats} round-robin rounds after {args.warmup} warm-up')
    print(f'{"variant":<13}{"B":>4}{"K":>4}{"median ms":>11}{"min ms":>9}{"us/(B*K)":>10}{"saved MiB":>11}'
          f'{"saved/(B*map)":>15}')
    rows = settings(args.max_batch)
    cases = [(make_case(variant, k), *features(batch, args.channels, args.size)) for variant, batch, k in rows]
    results = dict(zip(rows, measure_all(cases, args.warmup, args.repeats)))
    for (variant, batch, k), (seconds, fastest, nbytes) in results.items():
        print(f'{variant:<13}{batch:>4}{k:>4}{seconds * 1e3:>11.2f}{fastest * 1e3:>9.2f}'
              f'{seconds * 1e6 / (batch * k):>10.1f}{nbytes / 2**20:>11.2f}{nbytes / (batch * one_map):>15.2f}')
    print_ratios(results, args.max_batch)


def print_ratios(results: Dict[Tuple[str, int, int], Tuple[float, float, int]], max_batch: int) -> None:
    """Scaling checks: B doubled at fixed K, a straight-line fit of time against K, saved-memory ratios."""
    big, half = max_batch, max_batch // 2
    for label, col in (('median', 0), ('min', 1)):
        ratio = results['ratio-l1', big, half - 1][col] / results['ratio-l1', half, half - 1][col]
        ks = sorted(k for v, b, k in results if v == 'ratio-l1' and b == big)
        secs = [results['ratio-l1', big, k][col] for k in ks]
        slope, intercept = statistics.linear_regression(ks, secs)
        print(f'{label:>6}: B {half}->{big} at K={half - 1}: time x{ratio:.2f} (O(B) predicts x{big / half:.2f}); '
              f'B={big}, K in {ks}: time = {intercept * 1e3:.1f} ms + K * {slope * 1e3:.2f} ms '
              f'(R^2 {statistics.correlation(ks, secs)**2:.3f})')
    m_big, m_half, m_k1 = (results['ratio-l1', b, k][2] for b, k in ((big, big - 1), (half, half - 1), (big, 1)))
    n_big, n_k1 = results['naive-l1', big, big - 1][2], results['naive-l1', big, 1][2]
    print(
        f'saved memory: B {half}->{big} x{m_big / m_half:.2f} (O(B) predicts x{big / half:.2f}); K 1->{big - 1} '
        f'x{m_big / m_k1:.2f}, naive loop x{n_big / n_k1:.2f}; at K={big - 1} the naive loop saves x{n_big / m_big:.2f}'
    )


if __name__ == '__main__':
    main()
