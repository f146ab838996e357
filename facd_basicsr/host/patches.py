"""What importing the plugin changes in BasicSR, in one place.

For every program (each item fixes a crash of stock BasicSR 1.4.2 on current torch or on CPUs and changes no API):

1. ``torchvision.transforms.functional_tensor`` alias (:mod:`facd_basicsr._compat`): BasicSR 1.4.2 imports a module
   that torchvision >= 0.17 removed, so ``import basicsr`` fails without it.
2. ``init_dist`` (``--launcher pytorch | slurm``) becomes :func:`facd_basicsr.host.dist.init_dist`: on a machine with
   CUDA it makes the same calls as BasicSR's (NCCL, the local GPU, torch's default timeout); without CUDA, where
   BasicSR's crashes in ``torch.cuda.set_device``, it joins with gloo.
3. ``--local-rank=N`` (what ``torch.distributed.launch`` passes since torch 2.0) is rewritten to BasicSR's
   ``--local_rank=N``, which its argument parser would otherwise reject.
4. ``--auto_resume`` / ``path.resume_state`` on a machine without CUDA: BasicSR's ``load_resume_state`` maps the
   state onto ``torch.cuda.current_device()`` and crashes; there it loads the same state onto the CPU
   (:func:`facd_basicsr.host.resume.cpu_capable`). With CUDA, BasicSR's own function runs.

For runs whose ``model_type`` is ours (RobustSRModel, FACDModel), around ``parse_options``: the start-up checks of
:mod:`facd_basicsr.host.startup` (safe option file, keys, devices, data, the folder's lock, the model built once in
a scratch folder: all before BasicSR creates or renames a folder), then the run guards of
:mod:`facd_basicsr.host.run_guards` (safe and CPU-capable resume, data errors that name the record).

The plugin is imported in two ways: by our ``facd_basicsr/train.py`` (after ``basicsr.train`` exists) and by the
drop-in shim of a BasicSR checkout (while ``basicsr.models`` is still importing, before ``basicsr.train`` exists and
before the checkout's ``basicsr/train.py``, running as ``__main__``, has defined its functions). So ``parse_options``
is wrapped now in whatever is loaded, and the module that runs it is patched when it calls it.
"""
import functools
import sys
from typing import Callable

import basicsr.utils.options as basicsr_options

from facd_basicsr.host.dist import init_dist, normalise_local_rank_flag
from facd_basicsr.host.run_guards import fix_cpu_resume, install_run_guards, is_our_model
from facd_basicsr.host.startup import check_after_parsing, check_before_parsing, option_arguments, peek_model_type

ENTRY_MODULES = ('basicsr.train', 'basicsr.test', '__main__')


def wrap_parse_options(parse_options: Callable) -> Callable:
    """``parse_options`` that normalises the local-rank flag and, for our models, checks the start and installs the
    run guards."""
    if getattr(parse_options, 'facd_patched', False):
        return parse_options

    @functools.wraps(parse_options)
    def patched(*args, **kwargs):
        sys.argv[1:] = normalise_local_rank_flag(sys.argv[1:])
        path, force_yml = option_arguments(sys.argv[1:])
        ours = is_our_model(peek_model_type(path))
        if ours:
            check_before_parsing(path, force_yml)  # the YAML read safely before BasicSR's loader sees it
        opt, parsed = parse_options(*args, **kwargs)
        if ours or is_our_model(opt.get('model_type')):
            check_after_parsing(opt)
            install_run_guards()
        else:
            fix_cpu_resume()
        return opt, parsed

    patched.facd_patched = True
    return patched


def install_host_patches() -> None:
    """Apply the global fixes and the ``parse_options`` hook; calling it again changes nothing."""
    basicsr_options.init_dist = init_dist
    basicsr_options.parse_options = wrap_parse_options(basicsr_options.parse_options)
    for name in ENTRY_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, 'parse_options'):
            module.parse_options = wrap_parse_options(module.parse_options)
