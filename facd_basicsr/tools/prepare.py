"""``facd-prepare``: from the DIV2K and benchmark downloads to the tree every shipped recipe reads.

Run it from the folder you train in (or pass ``--root``); everything goes to ``<root>/datasets/``::

    facd-prepare --div2k ~/Downloads         # DIV2K_train_HR(.zip), DIV2K_train_LR_bicubic(_X4.zip) ...
    facd-prepare --benchmark ~/Downloads/benchmark   # Set5/ Set14/ B100/ Urban100/ Manga109/ (HR images or HR/)
    facd-prepare --check                     # every shipped option file: what is missing; exit 1 unless every file but
                                             # the optional Manga109 ones is ready

DIV2K: 480x480 sub-images, step 240 (LR: divided by the scale) in ``datasets/DIV2K/DIV2K_train_HR_sub.lmdb`` and
``DIV2K_train_LR_bicubic_X{s}_sub.lmdb``. Benchmarks: ``datasets/<Set>/GTmod12`` and ``LRbicx{2,3,4}`` (MATLAB-style
bicubic). Interrupted runs resume where they stopped when run again; nothing that exists is overwritten without
``--overwrite``. See docs/prepare.md.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

import facd_basicsr  # noqa: F401  (compat shim: must precede the first basicsr import)
from facd_basicsr.tools.common import check_output_location
from facd_basicsr.tools.prepare_bench import prepare_benchmark
from facd_basicsr.tools.prepare_check import run_check, shipped_options
from facd_basicsr.tools.prepare_div2k import prepare_div2k
from facd_basicsr.tools.prepare_io import PrepareError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='facd-prepare', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--div2k', metavar='DIR', help='folder holding the official DIV2K folders or zip archives')
    parser.add_argument('--benchmark', metavar='DIR', help='folder of benchmark set folders (or one set folder)')
    parser.add_argument('--check', action='store_true', help='verify the tree against option files (after any '
                        'preparation asked for in the same call)')
    parser.add_argument('--root', default='.', help='folder the recipes run from: outputs go to ROOT/datasets/, '
                        '--check resolves dataroots against it. Default: .')
    parser.add_argument('--scales', type=int, nargs='+', help='LR scales. Default: DIV2K every one downloaded of '
                        '2 3 4; benchmarks 2 3 4')
    parser.add_argument('--sets', nargs='+', help='benchmark sets to prepare. Default: every one found')
    parser.add_argument('--opt', nargs='+', help='option files or folders for --check. Default: the shipped '
                        f'options/ ({shipped_options()})')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='processes. Default: min(8, CPU count)')
    parser.add_argument('--overwrite', action='store_true', help='rebuild LMDBs and folders that already exist')
    parser.add_argument('--crop-size', type=int, default=480, help='DIV2K HR crop side. Default: 480 (BasicSR)')
    parser.add_argument('--step', type=int, default=240, help='DIV2K HR crop step. Default: 240 (BasicSR)')
    parser.add_argument('--thresh-size', type=int, default=0,
                        help='leftover border above which a last, flush crop is added. Default: 0 (BasicSR)')
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not (args.div2k or args.benchmark or args.check):
        parser.error('nothing to do: give --div2k DIR, --benchmark DIR and/or --check')
    if args.workers < 1:
        parser.error(f'--workers must be at least 1, got {args.workers}')
    if args.scales and any(s < 2 or s > 8 for s in args.scales):
        parser.error(f'--scales must be integers from 2 to 8, got {args.scales}')
    if args.crop_size < 1 or args.step < 1 or args.thresh_size < 0:
        parser.error('--crop-size and --step must be positive, --thresh-size non-negative')


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    try:
        if args.div2k or args.benchmark:
            check_output_location('--root', args.root)
            check_output_location('--root', osp.join(args.root, 'datasets'))
        if args.div2k:
            prepare_div2k(args.div2k, args.root, args.scales, args.workers, args.overwrite, print,
                          crop_size=args.crop_size, step=args.step, thresh_size=args.thresh_size)
        if args.benchmark:
            prepare_benchmark(args.benchmark, args.root, args.sets, args.scales, args.workers, args.overwrite, print)
    except (PrepareError, ValueError) as err:
        print(f'facd-prepare: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('facd-prepare: interrupted; run the same command again to resume', file=sys.stderr)
        return 130
    return run_check(args.root, args.opt) if args.check else 0


if __name__ == '__main__':
    sys.exit(main())
