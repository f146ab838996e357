"""Same as ``facd-install``; the installer uses only the standard library, so this runs before anything is installed."""
import os.path as osp
import runpy

runpy.run_path(osp.join(osp.dirname(__file__), '..', 'facd_basicsr', 'tools', 'install_into_basicsr.py'),
               run_name='__main__')
