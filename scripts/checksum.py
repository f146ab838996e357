#!/usr/bin/env python
"""Run ``facd-checksum`` from a checkout: ``python scripts/checksum.py FILE [FILE...]``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from facd_basicsr.tools.checksum import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
