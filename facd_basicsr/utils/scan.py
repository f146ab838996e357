"""Import every ``*<suffix>.py`` module of a sub-package, as BasicSR's own ``__init__`` files do."""
import importlib
import os.path as osp
from typing import List

from basicsr.utils import scandir


def import_modules_with_suffix(package_file: str, package_name: str, suffix: str) -> List[object]:
    """Import the modules of ``package_name`` whose file names end with ``suffix``.

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
