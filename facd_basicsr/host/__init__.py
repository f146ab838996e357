"""What BasicSR 1.4.2 lacks, each module something that could be an upstream pull request: safe checkpoint reads and
atomic saves, resume in the straight run's data order, non-finite guards, CPU / gloo distributed set-up, dataset
errors that name the record, and the student runtime options (amp, compile, channels_last, clipping).

:class:`facd_basicsr.models.robust_sr_model.RobustSRModel` uses them; nothing here knows about distillation.
"""
