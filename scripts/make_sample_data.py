"""Write datasets/sample/{train,val} (x2, folders + LMDB) from the photos inside scikit-image.

Usage (from the repository root): python scripts/make_sample_data.py [--root datasets/sample] [--scale 2]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import facd_basicsr  # noqa: E402,F401
from facd_study.sample_data import build_sample_sets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='datasets/sample')
    parser.add_argument('--scale', type=int, default=2)
    args = parser.parse_args()
    build_sample_sets(args.root, args.scale)


if __name__ == '__main__':
    main()
