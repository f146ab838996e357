"""The two levers of issue 16 on the step cost of the ``cpu`` configuration, each checked for equality first.

1. **Tap copies.** ``FeatureTaps`` copies a map only when the first pass showed that the network writes into it in
   place (EDSR's ``conv_after_body``: ``res += x``); the other taps hand over the module's own output. Timed: one
   training forward of teacher and student with taps (a) copying every map, as before, (b) as shipped.
2. **Fused taps' loss.** ``FACDContrastiveLoss`` (ratio, l2, K = B - 1) runs tap by tap. Candidates: (a) the three
   taps stacked into one (T, B, C, H, W) tensor so that every operation runs once instead of three times, eager;
   (b) the same function under ``torch.compile`` (inductor writes one C++ loop per fused group; ``--compile``, its
   first call compiles for about a minute on a CPU). Their loss and gradients are compared with the shipped loss
   before any timing (max abs difference printed; a mismatch stops the script).

Each comparison is round-robin (``measure.round_robin``), median of ``--repeats`` rounds; quote a lever only from
runs on a quiet machine::

    .venv/bin/python benchmarks/levers.py --repeats 41            # ~1 min
    .venv/bin/python benchmarks/levers.py --repeats 41 --compile  # + the compiled fused loss
"""
import argparse
import statistics
import tempfile
from typing import Callable, List, Sequence

import numpy as np
import torch
from torch import Tensor

import facd_basicsr  # noqa: F401  (compat alias before any basicsr import)

# isort: split
from measure import FIT_PHOTOS, photo_batch, quiet_profiler, round_robin
from step_cost import CONFIGS, build_models, detached_taps

from facd_study.sample_data import load_photo


def fused_ratio_l2(anchors: Sequence[Tensor], teachers: Sequence[Tensor], weight: Tensor, loss_weight: float,
                   eps: float) -> Tensor:
    """``FACDContrastiveLoss(form=ratio, distance=l2, K=B-1)`` over T taps of one shape in one pass per operation.

    Args:
        anchors: T adapted student maps (B, C, H, W); teachers: T teacher maps of the same shape (constants);
        weight: the gate (B, ); loss_weight: the loss's weight; eps: its eps.

    Returns:
        Tensor: the scalar loss, ``loss_weight * sum_j (1/B) sum_i g_i d_pos_ij / (d_neg_ij + eps)``.
    """
    a = torch.stack(list(anchors))  # (T, B, C, H, W)
    with torch.no_grad():
        t = torch.stack([f.detach() for f in teachers])
        batch, k = t.shape[1], t.shape[1] - 1
        mean_p = (t.sum(1, keepdim=True) - t) / k  # mean of the other B - 1 samples, per tap
        squares = (t - t.mean(1, keepdim=True)).pow(2).flatten(2).sum(2)  # (T, B)
        spread = (squares.sum(1, keepdim=True) - squares) / k - squares / k**2
    size = a[0, 0].numel()
    d_pos = (a - t).pow(2).flatten(2).mean(2)
    d_neg = (a - mean_p).pow(2).flatten(2).mean(2) + spread / size
    return loss_weight * ((d_pos / (d_neg + eps)) * weight.detach()).sum() / batch


def max_grad_diff(fn_a: Callable, fn_b: Callable, leaves: List[Tensor]) -> tuple:
    """Loss difference and max abs gradient difference of two loss functions of ``leaves``."""
    out = []
    for fn in (fn_a, fn_b):
        for leaf in leaves:
            leaf.grad = None
        loss = fn()
        loss.backward()
        out.append((loss.detach(), [leaf.grad.clone() for leaf in leaves]))
    (la, ga), (lb, gb) = out
    return (la - lb).abs().item(), max((x - y).abs().max().item() for x, y in zip(ga, gb)), la.item()


def main() -> None:
    quiet_profiler()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=21)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--compile', action='store_true', help='also time the fused loss under torch.compile')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = CONFIGS['cpu']
    with tempfile.TemporaryDirectory() as root:
        data = photo_batch([load_photo(n) for n in FIT_PHOTOS], cfg['batch'], cfg['lr_size'], cfg['student']['upscale'],
                           np.random.default_rng(0), 'cpu')
        facd = build_models(cfg, root, cfg['batch'], 'cpu', data, {'distance': 'l2', 'num_negatives': None})['facd']
    lq = facd.lq
    print(f'config cpu, batch {cfg["batch"]} x LR {cfg["lr_size"]}, {torch.get_num_threads()} thread(s); median of '
          f'{args.repeats} round-robin rounds after {args.warmup} warm-up')

    # 1. tap copies
    learnt = (list(facd.teacher_taps.needs_copy), list(facd.student_taps.needs_copy))
    print(f'\ntaps copied after the dry run: teacher {learnt[0]}, student {learnt[1]}')

    def forward(copy_all: bool):
        facd.teacher_taps.needs_copy = [True] * 3 if copy_all else list(learnt[0])
        facd.student_taps.needs_copy = [True] * 3 if copy_all else list(learnt[1])
        with facd._recording():
            facd.run_teacher(lq)
            facd.net_g(lq)
        return facd.teacher_taps.pop(), facd.student_taps.pop()

    copied, shipped = forward(True), forward(False)
    assert all(torch.equal(a, b) for a, b in zip(copied[0] + copied[1], shipped[0] + shipped[1]))
    secs = {k: statistics.median(v) for k, v in round_robin({
        'copy every map': lambda: forward(True),
        'copy written maps only': lambda: forward(False)
    }, 'cpu', args.warmup, args.repeats).items()}
    for name, s in secs.items():
        print(f'  teacher + student forward with taps, {name:<24}{s * 1e3:9.2f} ms')
    print(f'  saved: {(secs["copy every map"] - secs["copy written maps only"]) * 1e3:+.2f} ms per step (maps equal)')

    # 2. the taps' loss, tap by tap (shipped) against fused
    _, _, feats_t, feats_s = detached_taps(facd, lq)
    gate = torch.linspace(0.5, 1.0, lq.shape[0])  # a gate that keeps every patch, unequally weighted
    with torch.no_grad():
        adapted = [a.detach() for a in facd.net_adapter(feats_s)]
    leaves = [a.requires_grad_(True) for a in adapted]
    loss = facd.cri_feat
    cases = {
        'shipped (per tap)': lambda: loss(leaves, feats_t, weight=gate)[0],
        'fused, eager': lambda: fused_ratio_l2(leaves, feats_t, gate, loss.loss_weight, loss.eps),
    }
    if args.compile:
        compiled = torch.compile(fused_ratio_l2)
        cases['fused, torch.compile'] = lambda: compiled(leaves, feats_t, gate, loss.loss_weight, loss.eps)
        compiled_loss = torch.compile(loss)
        cases['shipped, torch.compile'] = lambda: compiled_loss(leaves, feats_t, weight=gate)[0]
    print(f'\nfeature loss forward + backward, 3 taps of {tuple(feats_t[0].shape)}:')
    for name, fn in list(cases.items())[1:]:
        d_loss, d_grad, value = max_grad_diff(cases['shipped (per tap)'], fn, leaves)
        print(f'  {name}: loss {value:.6g}, |d loss| {d_loss:.2e}, max |d grad| {d_grad:.2e}')
        if d_loss > 1e-5 * max(1.0, abs(value)) or d_grad > 1e-6:
            raise SystemExit(f'{name} does not match the shipped loss')

    def timed(fn):
        def run():
            for leaf in leaves:
                leaf.grad = None
            fn().backward()

        return run

    secs = {k: statistics.median(v) for k, v in round_robin({k: timed(f) for k, f in cases.items()}, 'cpu',
                                                            args.warmup, args.repeats).items()}
    for name, s in secs.items():
        print(f'  {name:<24}{s * 1e3:9.2f} ms  x{s / secs["shipped (per tap)"]:.3f}')


if __name__ == '__main__':
    main()
