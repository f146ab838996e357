"""BasicSR's training log line with an ETA that ends at ``0:00:00``.

Stock ``MessageLogger`` estimates the time left as ``mean iteration time * (total_iter - iter - 1)``, one iteration
fewer than remain, so the line of the last iteration reads ``eta: -1 day, 23:59:5x`` whenever an iteration takes a
second or more. Runs of our models log through :class:`FinalEtaMessageLogger` (installed by
:mod:`facd_basicsr.host.run_guards`); every other field of the line is BasicSR's.
"""
from basicsr.utils import MessageLogger


class FinalEtaMessageLogger(MessageLogger):
    """``MessageLogger`` whose ETA is never negative: at ``iter == total_iter`` it prints ``eta: 0:00:00``."""

    def __call__(self, log_vars: dict) -> None:
        total = self.max_iters
        self.max_iters = max(total, int(log_vars.get('iter', 0)) + 1)
        try:
            super().__call__(log_vars)
        finally:
            self.max_iters = total
