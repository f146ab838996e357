"""How the plugin fills BasicSR's registries: scan a sub-package as BasicSR does, register each name once.

``facd_basicsr`` can be imported both as the installed package and as a copy inside a BasicSR checkout. BasicSR's
``Registry.register`` asserts on duplicate names, so the second import would crash the registry scan. Registering
only the first definition keeps every name unique and makes a double import harmless.
"""
import importlib
import os.path as osp
from typing import Callable, List, TypeVar

from basicsr.utils import scandir

T = TypeVar('T')


def register_once(registry) -> Callable[[T], T]:
    """Decorator: register ``obj`` under its ``__name__`` unless that name is already taken.

    Args:
        registry (basicsr.utils.registry.Registry): e.g. ``ARCH_REGISTRY``.

    Returns:
        Callable: a decorator that returns the decorated object unchanged.
    """

    def deco(obj: T) -> T:
        if obj.__name__ not in registry:
            registry.register(obj)
        return obj

    return deco


def import_modules_with_suffix(package_file: str, package_name: str, suffix: str) -> List[object]:
    """Import the modules of ``package_name`` whose file names end with ``suffix``, as BasicSR's ``__init__`` files do.

    Args:
        package_file (str): ``__file__`` of the package's ``__init__.py``.
        package_name (str): dotted name of the package, e.g. ``'facd_basicsr.archs'``.
        suffix (str): file-name ending, e.g. ``'_arch.py'``.

    Returns:
        list: the imported modules, sorted by file name so registration order is stable.
    """
    folder = osp.dirname(osp.abspath(package_file))
    names = sorted(osp.splitext(osp.basename(v))[0] for v in scandir(folder) if v.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]
