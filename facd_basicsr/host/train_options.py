"""Start-up checks of training options that BasicSR only trips over once training has started (or never).

* ``datasets.train.gt_size`` not a multiple of ``scale``: ``paired_random_crop`` cuts an LR patch of
  ``gt_size // scale`` and a GT patch of ``gt_size``, and the loss fails at the first step with
  ``The size of tensor a (32) must match the size of tensor b (33)``.
* A negative ``loss_weight`` of ``pixel_opt`` / ``kd_opt`` / ``feature_opt``: BasicSR's L1/MSE losses accept it
  and the run then maximises the error, silently.
* ``train.nonfinite``: what to do with a NaN / Inf loss (``stop``, the default, or ``skip`` the step), and
  ``train.nonfinite_skip_limit``: how many skipped steps in a row stop the run.
"""
import numbers

NONFINITE_MODES = ('stop', 'skip')
DEFAULT_SKIP_LIMIT = 100
WEIGHTED_LOSSES = ('pixel_opt', 'kd_opt', 'feature_opt')


def check_gt_size(opt: dict) -> None:
    """``datasets.train.gt_size`` must be a positive multiple of ``scale``."""
    train_set = (opt.get('datasets') or {}).get('train') or {}
    gt_size, scale = train_set.get('gt_size'), opt.get('scale')
    if gt_size is None or scale is None:
        return
    valid_int = isinstance(gt_size, int) and not isinstance(gt_size, bool) and gt_size > 0
    if not valid_int or gt_size % int(scale):
        hint = f' (e.g. {max(1, gt_size // int(scale)) * int(scale)})' if valid_int else ''
        raise ValueError(f'datasets.train.gt_size must be a positive multiple of the scale {scale} (the LR patch is '
                         f'gt_size / scale pixels), got {gt_size!r}{hint}')


def check_loss_weights(train_opt: dict) -> None:
    """``loss_weight`` of each loss in :data:`WEIGHTED_LOSSES` must be a number >= 0 (0 switches the term off)."""
    for key in WEIGHTED_LOSSES:
        loss_opt = train_opt.get(key)
        if not loss_opt or 'loss_weight' not in loss_opt:
            continue
        weight = loss_opt['loss_weight']
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not weight >= 0:
            hint = ' (write !!float 1e-4: a bare 1e-4 is a string in YAML)' if isinstance(weight, str) else ''
            raise ValueError(f'train.{key}.loss_weight must be a number >= 0, got {weight!r}{hint}')


def nonfinite_mode(train_opt: dict) -> str:
    """``train.nonfinite``: ``stop`` (default) or ``skip``."""
    mode = train_opt.get('nonfinite', 'stop')
    if mode not in NONFINITE_MODES:
        raise ValueError(f'train.nonfinite must be one of {", ".join(NONFINITE_MODES)}, got {mode!r}')
    return mode


def nonfinite_options(train_opt: dict) -> tuple:
    """(``train.nonfinite``, ``train.nonfinite_skip_limit``): the mode, and how many skipped steps in a row stop the
    run (an integer >= 1, default 100)."""
    limit = train_opt.get('nonfinite_skip_limit', DEFAULT_SKIP_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f'train.nonfinite_skip_limit must be an integer >= 1, got {limit!r}')
    return nonfinite_mode(train_opt), limit


def check_training_options(opt: dict) -> None:
    """All start-up checks of this module; each failure is one ``ValueError`` naming the option."""
    check_gt_size(opt)
    check_loss_weights(opt.get('train') or {})
    nonfinite_options(opt.get('train') or {})
