"""Distillation only: feature taps, the adaptive gate and its log, the teacher runner and its start-up check, and the
degradations of negatives. The generic hardening the models share lives in :mod:`facd_basicsr.host`."""
