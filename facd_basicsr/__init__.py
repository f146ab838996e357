"""FACD (Feature-domain Adaptive Contrastive Distillation) as a plugin for BasicSR.

Importing this package makes PyPI basicsr 1.4.2 importable on current torchvision, registers every architecture,
dataset, loss and model of the package into BasicSR's registries (FACDModel, RobustSRModel, FACDAdapter,
ChannelPermutedPairedImageDataset, the feature losses),
and fixes two crashes of BasicSR's distributed entry (``--launcher pytorch`` without CUDA, torch's ``--local-rank``
flag). Nothing else of BasicSR changes for programs that do not run our models; runs of our models get their run
guards when they start. The full list, with the reason for each: :mod:`facd_basicsr.host.patches`.
"""
# isort: off
from facd_basicsr import _compat  # noqa: F401  (must run before the first basicsr import)
from facd_basicsr import archs, data, losses, models  # noqa: F401
from facd_basicsr.host.patches import install_host_patches
# isort: on

__version__ = '0.1.0'

install_host_patches()
