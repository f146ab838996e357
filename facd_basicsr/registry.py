"""How the plugin fills BasicSR's registries: scan a sub-package as BasicSR does, register each name once.

``facd_basicsr`` can be imported both as the installed package and as a copy inside a BasicSR checkout. BasicSR's
``Registry.register`` asserts on duplicate names, so the second import would crash the registry scan. Registering
only the first definition of the same class keeps every name unique and makes a double import harmless. A name
taken by a *different* class (another plugin's ``FeatureDistillLoss``, say) is an error, as in BasicSR: otherwise an
option file could quietly build the other plugin's class.
"""
import importlib
import os.path as osp
from typing import Callable, List, TypeVar

from basicsr.utils import scandir

T = TypeVar('T')


def plugin_identity(obj: object) -> str:
    """``facd_basicsr.losses.x_loss.Name`` for ``obj``, whichever package copy defined it (installed or checkout)."""
    module = getattr(obj, '__module__', '') or ''
    parts = module.split('.')
    tail = '.'.join(parts[parts.index('facd_basicsr'):]) if 'facd_basicsr' in parts else module
    return f'{tail}.{getattr(obj, "__qualname__", obj.__name__)}'


def register_once(registry) -> Callable[[T], T]:
    """Decorator: register ``obj`` under its ``__name__``; the same class imported again is kept, not re-registered.

    Args:
        registry (basicsr.utils.registry.Registry): e.g. ``ARCH_REGISTRY``.

    Returns:
        Callable: a decorator that returns the decorated object unchanged.

    Raises:
        KeyError: the name is taken by a different class; the message names both modules.
    """

    def deco(obj: T) -> T:
        if obj.__name__ not in registry:
            registry.register(obj)
            return obj
        taken = registry.get(obj.__name__)
        if plugin_identity(taken) != plugin_identity(obj):
            raise KeyError(f'{obj.__name__!r} is already registered in BasicSR\'s {registry._name} registry by '
                           f'{taken.__module__}; {obj.__module__} cannot register a different class under the same '
                           'name. Rename one of them.')
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
