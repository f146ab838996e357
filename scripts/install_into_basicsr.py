#!/usr/bin/env python
"""Drop the FACD plugin into a BasicSR checkout: ``python scripts/install_into_basicsr.py PATH [--copy] [--uninstall]``.

Same as the ``facd-install`` console script. It loads the installer module straight from this repository's file,
without importing the ``facd_basicsr`` package (which imports torch and basicsr), so it also works where our package
is not installed and basicsr is not importable yet.
"""
import importlib.util
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_installer():
    """The module ``facd_basicsr/tools/install_into_basicsr.py`` (standard library only), loaded from its file."""
    path = osp.join(REPO_ROOT, 'facd_basicsr', 'tools', 'install_into_basicsr.py')
    spec = importlib.util.spec_from_file_location('facd_install_into_basicsr', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == '__main__':
    sys.exit(load_installer().main())
