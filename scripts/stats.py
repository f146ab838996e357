#!/usr/bin/env python
"""Same as ``facd-stats``: parameters, FLOPs and CPU latency of teacher vs student. See ``--help``."""
import os.path as osp
import sys

_here = osp.dirname(osp.abspath(__file__))
sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != _here]  # scripts/ must not shadow modules
sys.path.insert(0, osp.dirname(_here))

from facd_basicsr.tools.stats import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
