"""The FACD study (issue 10): does any FACD variant beat output KD and conventional FD? Several seeds per row.

Same machinery and runs as make mini-table (rows of facd_study/study_rows.py, runs abl_<row>_s<seed>):
every row trains the EDSR 2x16 student with the same data, batch, iterations and schedule. Choose on the SELECT
photos only; the REPORT photos are the held-out check. Writes results/study/<group>.md; stop it any time.

Usage (from the repository root):
    python scripts/study.py --group weights [--seeds 0 1 2] [--parallel 2]
    python scripts/study.py --rows fd_l1_w1e-1 facd_l1_w1e-2_always --seeds 0 1 2
"""
import argparse
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import facd_basicsr  # noqa: E402,F401  (compat alias before basicsr)
from facd_study.ablation import reference_scores, report_markdown, score_rows, train_rows  # noqa: E402
from facd_study.study_rows import GROUPS, PREFIX, registry  # noqa: E402

OUT = 'results/study'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--group', choices=sorted(GROUPS), help='a named group of rows')
    parser.add_argument('--rows', nargs='+', default=[], help='row keys (added to the group)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--parallel', type=int, default=2, help='runs at once (default 2: one per core)')
    parser.add_argument('--versus', nargs='+', default=['scratch', 'kd', 'fd_l1_w1e-2'],
                        help='rows to give paired (same-seed) PSNR differences to')
    parser.add_argument('--score-only', action='store_true', help='do not train; tabulate the runs that exist')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    start = time.time()
    table = registry()
    keys = list(GROUPS.get(args.group, ())) + [key for key in args.rows if key not in GROUPS.get(args.group, ())]
    unknown = [key for key in keys if key not in table]
    if unknown or not keys:
        raise KeyError(f'unknown or no row(s) {unknown}. Known: {", ".join(table)}')
    rows = [table[key] for key in keys]
    if not args.score_only:
        train_rows(rows, args.seeds, PREFIX, OUT, args.parallel)
    versus = [table[key] for key in args.versus if key in table and key not in keys]
    records = score_rows(rows + versus, args.seeds, PREFIX, OUT)
    intro = (f'Seeds {args.seeds}; PSNR/SSIM on the Y channel, crop 2, mean ± sample std over seeds; Δ = paired '
             'PSNR difference to the run of the named row with the same seed (same initialisation and data order).')
    text = report_markdown(f'FACD study: {args.group or "selected rows"}', intro, rows, records, reference_scores(),
                           'scripts/study.py', args.versus)
    os.makedirs(OUT, exist_ok=True)
    path = osp.join(OUT, f'{args.group or "rows"}.md')
    with open(path, 'w') as f:
        f.write(text)
    print(text)
    print(f'Wrote {path}; wall time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
