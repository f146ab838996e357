#!/usr/bin/env python
"""Run ``facd-convert-teacher`` from a checkout: ``python scripts/convert_teacher.py RCAN_BIX4.pt -o ...``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from facd_basicsr.tools.convert_teacher import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
