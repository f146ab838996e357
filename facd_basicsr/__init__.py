"""FACD (Feature-domain Adaptive Contrastive Distillation) as a plugin for BasicSR.

Importing this package makes PyPI basicsr 1.4.2 importable on current torchvision and registers every
architecture, loss and model of the package into BasicSR's registries.
"""
# isort: off
from facd_basicsr import _compat  # noqa: F401  (must run before the first basicsr import)
from facd_basicsr import archs, losses, models  # noqa: F401
# isort: on

__version__ = '0.1.0'
