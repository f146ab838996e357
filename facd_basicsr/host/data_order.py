"""Resume in the straight run's data order: the position within the epoch and the random-number states.

BasicSR's ``train_pipeline`` restarts the epoch of a resumed state from its first batch, and the random crops and
flips of its datasets (``paired_random_crop`` / ``augment`` use Python's ``random``) continue from whatever state the
new process has. A straight run and a stopped-and-resumed run therefore see different batches. Here:

* The training loop's prefetcher (``CPUPrefetcher`` / ``CUDAPrefetcher`` looked up in the training module, replaced
  by :func:`install_tracked_prefetchers` with subclasses bound to the model's :class:`DataOrder`) records, per epoch,
  the random states when the epoch's iterator is created and how many batches it has handed out.
* ``RobustSRModel`` owns the :class:`DataOrder`, stores :meth:`DataOrder.snapshot` (those plus the states at the
  checkpoint) in ``<iter>.state`` and hands it back with :meth:`DataOrder.schedule` when resuming.
* At the first epoch after the resume the prefetcher restores the epoch-start states, creates the iterator (the
  sampler is seeded by the epoch, dataloader workers by ``manual_seed``), loads and discards the batches the
  stopped run had trained on, and restores the states of the checkpoint moment.

The replay loads those batches again (no training step): at most one epoch's worth. It is exact with
``num_worker_per_gpu: 0`` and with workers that are not persistent (``persistent_workers: true`` keeps worker
states across epochs, which the stopped process took with it). Under DDP every rank replays its position, and the
random states are restored only in single-process runs (the record holds rank 0's).
"""
import contextlib
import random
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from basicsr.utils import get_root_logger


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA when in use) random states, as types ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (np_state[0], [int(v) for v in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Random states restored on exit: what runs inside (validation) does not change the training's randomness."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


class DataOrder:
    """Where the training loop is in its epoch, and the pending replay of a resumed run (one per model)."""

    def __init__(self) -> None:
        self.epoch: Optional[int] = None
        self.consumed = 0
        self.epoch_start_rng: Optional[dict] = None
        self.pending: Optional[dict] = None
        self.restore_rng = True

    def snapshot(self) -> Optional[dict]:
        """``{epoch, consumed, epoch_start_rng, rng}`` now; None outside a tracked training loop."""
        if self.epoch is None:
            return None
        return {'epoch': self.epoch, 'consumed': self.consumed, 'epoch_start_rng': self.epoch_start_rng,
                'rng': rng_state()}

    def schedule(self, record: Optional[dict], restore_rng: bool = True) -> None:
        """Replay ``record`` (a :meth:`snapshot` of the stopped run) at the next epoch start; None: nothing to do."""
        self.pending, self.restore_rng = record, restore_rng

    def start_epoch(self, loader, reset: Callable[[], None], next_batch: Callable[[], Any]) -> None:
        """A prefetcher's ``reset`` with the bookkeeping and, once after a resume, the replay.

        Args:
            loader (DataLoader): the prefetcher's loader (its ``sampler.epoch`` is the epoch starting).
            reset (callable): BasicSR's ``reset`` of the prefetcher.
            next_batch (callable): BasicSR's ``next`` of the prefetcher (None at the end of the epoch).
        """
        epoch = getattr(getattr(loader, 'sampler', None), 'epoch', None)
        pending, self.pending = self.pending, None
        if pending is not None and pending['epoch'] != epoch:
            get_root_logger().warning(f'Data-order record of epoch {pending["epoch"]} does not match the resumed '
                                      f'epoch {epoch}: not replayed.')
            pending = None
        if pending is not None and self.restore_rng:
            set_rng_state(pending['epoch_start_rng'])
        self.epoch, self.consumed, self.epoch_start_rng = epoch, 0, rng_state()
        reset()
        if pending is None:
            return
        if getattr(loader, 'persistent_workers', False) and getattr(loader, 'num_workers', 0) > 0:
            get_root_logger().warning('persistent_workers: the workers\' random states of the stopped run are lost; '
                                      'the resumed batches match the straight run\'s indices, not their crops.')
        for _ in range(pending['consumed']):
            if next_batch() is None:
                break
            self.consumed += 1
        if self.restore_rng:
            set_rng_state(pending['rng'])
        get_root_logger().info(f'Resumed the data order: epoch {epoch}, {self.consumed} batches of it replayed.')


def tracked(prefetcher_cls: type, order: DataOrder) -> type:
    """A subclass of BasicSR's ``prefetcher_cls`` whose ``reset`` / ``next`` keep ``order`` up to date."""
    original = getattr(prefetcher_cls, 'facd_original', prefetcher_cls)

    class Tracked(original):
        facd_original = original

        def reset(self):
            order.start_epoch(self.ori_loader, super().reset, super().next)

        def next(self):
            batch = super().next()
            if batch is not None:
                order.consumed += 1
            return batch

    Tracked.__name__ = Tracked.__qualname__ = original.__name__
    return Tracked


def install_tracked_prefetchers(module, order: DataOrder) -> None:
    """Point ``module.CPUPrefetcher`` / ``module.CUDAPrefetcher`` (a training module's names) at ``order``."""
    for name in ('CPUPrefetcher', 'CUDAPrefetcher'):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            setattr(module, name, tracked(cls, order))
