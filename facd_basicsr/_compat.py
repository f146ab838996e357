"""Compatibility shims that must run before the first ``import basicsr``.

PyPI ``basicsr`` 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module that torchvision removed in
0.17. BasicSR master replaced the import with ``torchvision.transforms.functional`` (which provides the same
``rgb_to_grayscale``); we alias the old name to that module so 1.4.2 imports on current torchvision.
"""
import importlib
import sys

_OLD_MODULE = 'torchvision.transforms.functional_tensor'


def alias_functional_tensor() -> bool:
    """Alias ``torchvision.transforms.functional_tensor`` when torchvision lacks it.

    Returns:
        bool: True when the alias was installed, False when torchvision still ships the module.
    """
    if _OLD_MODULE in sys.modules:
        return False
    try:
        importlib.import_module(_OLD_MODULE)
        return False
    except ImportError:
        sys.modules[_OLD_MODULE] = importlib.import_module('torchvision.transforms.functional')
        return True


alias_functional_tensor()
