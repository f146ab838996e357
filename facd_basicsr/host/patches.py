"""Host patches of BasicSR 1.4.2's training entry and data loading, applied when the plugin is imported.

* ``basicsr.utils.options.parse_options`` calls ``init_dist`` (``--launcher pytorch|slurm``), which assumes NCCL and
  ``torch.cuda.set_device``: it now calls :func:`facd_basicsr.host.dist.init_dist` (gloo on CPUs).
* ``train_pipeline`` calls its module's ``load_resume_state``, which maps the state onto
  ``torch.cuda.current_device()`` and crashes ``--auto_resume`` without CUDA: it now calls
  :func:`facd_basicsr.host.resume.load_resume_state`, which also loads the state with ``weights_only=True`` and
  never resumes from an incomplete checkpoint.
* ``train_pipeline`` builds its ``CPUPrefetcher`` / ``CUDAPrefetcher`` from its module's names: they become the
  tracked subclasses of :mod:`facd_basicsr.host.data_order` (resume in the straight run's data order).
* Dataset errors name the dataset, the key and the file (:mod:`facd_basicsr.host.data_errors`).

The plugin is imported in two ways: by our ``facd_basicsr/train.py`` (after ``basicsr.train`` exists) and by the
drop-in shim of a BasicSR checkout (while ``basicsr.models`` is still importing, before ``basicsr.train`` exists and
before the checkout's ``basicsr/train.py``, running as ``__main__``, has defined its functions). So the patches are
applied twice: now to whatever is loaded, and again when ``parse_options`` runs, the first call of
``train_pipeline``, to the module that runs it. A ``--local-rank=N`` flag (``torch.distributed.launch``) is rewritten
to BasicSR's ``--local_rank=N`` at that moment too.
"""
import functools
import sys
from typing import Callable

import basicsr.utils.options as basicsr_options

from facd_basicsr.host.data_errors import install_dataset_guards
from facd_basicsr.host.data_order import install_tracked_prefetchers
from facd_basicsr.host.dist import init_dist, normalise_local_rank_flag
from facd_basicsr.host.resume import load_resume_state


def patch_training_modules() -> None:
    """Point every loaded module that defines ``train_pipeline`` at our ``load_resume_state`` and prefetchers."""
    for name in ('basicsr.train', '__main__'):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, 'train_pipeline') and hasattr(module, 'load_resume_state'):
            module.load_resume_state = load_resume_state
            install_tracked_prefetchers(module)


def wrap_parse_options(parse_options: Callable) -> Callable:
    """``parse_options`` that first normalises the local-rank flag and patches the calling training module."""
    if getattr(parse_options, 'facd_patched', False):
        return parse_options

    @functools.wraps(parse_options)
    def patched(*args, **kwargs):
        sys.argv[1:] = normalise_local_rank_flag(sys.argv[1:])
        patch_training_modules()
        install_dataset_guards()  # datasets registered since the plugin's import too
        return parse_options(*args, **kwargs)

    patched.facd_patched = True
    return patched


def install_host_patches() -> None:
    """Apply the patches to BasicSR's modules; calling it again changes nothing."""
    basicsr_options.init_dist = init_dist
    basicsr_options.parse_options = wrap_parse_options(basicsr_options.parse_options)
    for name in ('basicsr.train', 'basicsr.test'):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, 'parse_options'):
            module.parse_options = wrap_parse_options(module.parse_options)
    patch_training_modules()
    install_dataset_guards()
