"""The ``history`` negative pool: an EMA copy of the student and its adapters, run on degraded copies of the LR batch.

OUR READING of DCKD (Zhou et al., "Dynamic Contrastive Knowledge Distillation for Efficient Image Restoration",
AAAI 2025), carried into FACD's feature domain: the hard negatives of a patch are the features that the student's
own past (an exponential moving average of its weights) gives for degraded copies of the same LR patch, plus the
past's features of the clean patch. DCKD applies its ratio to images; here the negatives are the history's tapped
and adapted feature maps, compared with the student's adapted maps at the same taps.

The history is never optimised (no gradient, not in the optimizer), never DDP-wrapped, saved with every checkpoint
(``net_history_<iter>.pth``) and restored on resume; it never enters the exported student.
"""
import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from facd_basicsr.distill.feature_taps import FeatureTaps

HISTORY_KEYS = ('decay', 'num_degraded', 'noise_sigma', 'include_clean', 'chunk')
HISTORY_DEFAULTS = {'decay': 0.999, 'num_degraded': 4, 'noise_sigma': (1., 30.), 'include_clean': True, 'chunk': 0}


def history_options(opt: Optional[dict]) -> dict:
    """``distill.history`` with defaults filled in and every value checked; a bad value names its key.

    Keys: ``decay`` (float in [0, 1)), ``num_degraded`` (K >= 0 noisy copies), ``noise_sigma`` ([low, high] on the
    0-255 scale, 0 <= low <= high), ``include_clean`` (bool: the history's features of the clean patch are a
    negative too), ``chunk`` (copies per history forward; 0 = all K (+1) copies in one forward).
    """
    opt = dict(opt or {})
    unknown = sorted(set(opt) - set(HISTORY_KEYS))
    if unknown:
        raise KeyError(f'distill.history: unknown option(s) {unknown}. Known: {", ".join(HISTORY_KEYS)}')
    out = dict(HISTORY_DEFAULTS, **opt)
    decay = out['decay']
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ValueError(f'distill.history.decay must be a number in [0, 1), got {decay!r}')
    for key in ('num_degraded', 'chunk'):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f'distill.history.{key} must be an integer >= 0, got {value!r}')
    sigma = out['noise_sigma']
    if (not isinstance(sigma, (list, tuple)) or len(sigma) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in sigma)
            or not 0 <= sigma[0] <= sigma[1]):
        raise ValueError(f'distill.history.noise_sigma must be [low, high] with 0 <= low <= high (0-255 scale), '
                         f'got {sigma!r}')
    if not isinstance(out['include_clean'], bool):
        raise ValueError(f'distill.history.include_clean must be true or false, got {out["include_clean"]!r}')
    if out['num_degraded'] == 0 and not out['include_clean']:
        raise ValueError('distill.history: num_degraded is 0 and include_clean is false, so there is no negative')
    out['decay'], out['noise_sigma'] = float(decay), (float(sigma[0]), float(sigma[1]))
    return out


def noisy_copies(lq: Tensor, num_copies: int, sigma_range: Sequence[float]) -> Tensor:
    """``num_copies`` copies of ``lq`` (B, C, H, W; 0-1 range) with Gaussian noise, (K, B, C, H, W).

    Every (copy, patch) draws its own sigma uniformly from ``sigma_range`` (0-255 scale) from torch's global random
    state, which the checkpoint's data-order record saves, so a resumed run draws the same noise.
    """
    low, high = sigma_range
    sigma = torch.rand(num_copies, lq.shape[0], 1, 1, 1, device=lq.device, dtype=lq.dtype) * (high - low) + low
    return lq.unsqueeze(0) + torch.randn((num_copies, *lq.shape), device=lq.device, dtype=lq.dtype) * sigma / 255.


class HistoryPool(nn.Module):
    """EMA copy of the student (``net``) and of its adapter bank (``adapter``), frozen; makes same-patch negatives.

    Args:
        student (nn.Module): the bare student (not the DDP wrapper); copied.
        adapter (nn.Module | None): the bare adapter bank; copied (None: the losses compare raw maps).
        tap_paths (Sequence[str]): the student's tap module paths (``distill.student_taps``).
        decay (float): EMA decay per training step: ``h <- decay * h + (1 - decay) * w``.
        num_degraded (int): K noisy copies per patch.
        noise_sigma (tuple[float, float]): noise sigma range, 0-255 scale.
        include_clean (bool): also the history's features of the clean patch.
        chunk (int): copies per forward (0: all in one), to bound the memory of one forward.
    """

    def __init__(self, student: nn.Module, adapter: Optional[nn.Module], tap_paths: Sequence[str], decay: float,
                 num_degraded: int, noise_sigma: Sequence[float], include_clean: bool, chunk: int = 0) -> None:
        super().__init__()
        self.net = copy.deepcopy(student).eval().requires_grad_(False)
        for module in self.net.modules():  # a compiled student keeps its taps' hooks: they must not be copied
            module._forward_hooks.clear()
        self.adapter = None if adapter is None else copy.deepcopy(adapter).eval().requires_grad_(False)
        self.taps = FeatureTaps(self.net, list(tap_paths), 'distill.student_taps')
        self.decay, self.num_degraded, self.noise_sigma = decay, num_degraded, tuple(noise_sigma)
        self.include_clean, self.chunk = include_clean, chunk

    @property
    def num_negatives(self) -> int:
        """M = K noisy copies (+ 1 clean) per patch."""
        return self.num_degraded + int(self.include_clean)

    def train(self, mode: bool = True) -> 'HistoryPool':
        """Always in eval mode (BasicSR's model calls ``train()`` on what it holds)."""
        return super().train(False)

    @torch.no_grad()
    def update(self, student: nn.Module, adapter: Optional[nn.Module]) -> None:
        """One EMA step towards the current (bare) student and adapter bank; buffers are copied."""
        pairs = [(self.net, student)] + ([] if self.adapter is None else [(self.adapter, adapter)])
        for mine, theirs in pairs:
            current = dict(theirs.named_parameters())
            for name, param in mine.named_parameters():
                param.mul_(self.decay).add_(current[name].detach(), alpha=1 - self.decay)
            current_buffers = dict(theirs.named_buffers())
            for name, buf in mine.named_buffers():
                buf.copy_(current_buffers[name])

    def _inputs(self, lq: Tensor) -> Tensor:
        """(M, B, C, H, W): the K noisy copies, then the clean patch."""
        parts = [noisy_copies(lq, self.num_degraded, self.noise_sigma)] if self.num_degraded else []
        if self.include_clean:
            parts.append(lq.unsqueeze(0))
        return torch.cat(parts, 0)

    @torch.no_grad()
    def negatives(self, lq: Tensor) -> List[Tensor]:
        """The history's adapted tap maps for the M inputs of every patch: one (M, B, C_t, H, W) tensor per tap."""
        inputs = self._inputs(lq)
        num, batch = inputs.shape[:2]
        step = num if self.chunk <= 0 else self.chunk
        per_tap: List[List[Tensor]] = []
        for start in range(0, num, step):
            flat = inputs[start:start + step].flatten(0, 1)
            with self.taps:
                self.net(flat)
            feats = self.taps.pop()
            if self.adapter is not None:
                feats = self.adapter(feats)
            per_tap.append([f.float().view(-1, batch, *f.shape[1:]) for f in feats])
        return [torch.cat(parts, 0) for parts in zip(*per_tap)]

    def state_for_checkpoint(self) -> Dict[str, Dict[str, Tensor]]:
        """``{'net': ..., 'adapter': ...}`` state dicts on the CPU (what ``net_history_<iter>.pth`` holds)."""
        state = {'net': {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}
        if self.adapter is not None:
            state['adapter'] = {k: v.detach().cpu() for k, v in self.adapter.state_dict().items()}
        return state
