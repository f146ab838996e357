"""FACD (Feature-domain Adaptive Contrastive Distillation) as a plugin for BasicSR.

Importing this package makes PyPI basicsr 1.4.2 importable on current torchvision, registers every architecture,
loss and model of the package into BasicSR's registries, and makes BasicSR's training entry work without CUDA
(``--auto_resume`` and ``--launcher pytorch`` on CPUs; see :mod:`facd_basicsr.host.patches`), whichever
script imports it: our ``facd-train`` or a BasicSR checkout's own ``basicsr/train.py``.
"""
# isort: off
from facd_basicsr import _compat  # noqa: F401  (must run before the first basicsr import)
from facd_basicsr import archs, losses, models  # noqa: F401
from facd_basicsr.host.patches import install_host_patches
# isort: on

__version__ = '0.1.0'

install_host_patches()
