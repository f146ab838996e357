"""Test with BasicSR's pipeline and the FACD plugin: ``python facd_basicsr/test.py -opt options/X.yml``.

Results go to ``results/<name>/`` under the current working directory.
"""
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a file: make the package importable and stop the folder shadowing modules
    _here = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != _here]
    sys.path.insert(0, osp.dirname(_here))

import facd_basicsr  # noqa: E402,F401  (compat alias + registration before basicsr.test)


def main() -> None:
    """BasicSR's test_pipeline with our start-up checks (one ``error:`` line and exit status 2 when one fails)."""
    from basicsr.test import test_pipeline

    from facd_basicsr.host.startup import run_checked
    run_checked(test_pipeline)


if __name__ == '__main__':
    main()
