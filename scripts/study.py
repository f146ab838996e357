"""The FACD study (issue 10): does any FACD variant beat output KD and conventional FD? Several seeds per row.

Same machinery and runs as make mini-table (rows of facd_study/study_rows.py, runs abl_<row>_s<seed>):
every row trains the EDSR 2x16 student with the same data, batch, iterations and schedule. Choose on the SELECT
photos only; the REPORT photos are the held-out check. Writes results/study/<group>.md; stop it any time.

Two scales: x2 (default; EDSR 2x16 from 8x16, 1500 iterations) and x4 (EDSR 4x16 from 16x48, 5000 iterations,
runs x4_<row>_s<seed>, checkpoints every 1000 iterations so that an interrupted run continues where it stopped).

Usage (from the repository root):
    python scripts/study.py --group weights [--seeds 0 1 2] [--parallel 2]
    python scripts/study.py --rows fd_l1_w1e-1 facd_l1_w1e-2_always --seeds 0 1 2
    python scripts/study.py --scale x4 --teacher            # train (or continue) the x4 teacher, print its scores
    python scripts/study.py --scale x4 --group x4_baselines --versus scratch kd
    python scripts/study.py --negative-distance          # how near history negatives sit (picks their weights)
    python scripts/study.py --colour-probe --group colour --seeds 0 1 2   # flat colours, held-out photos (issue 32)
    python scripts/study.py --group screen --seeds 0 1 2 3 4 5 6 7 8 9         # issue 32: the x2 screen
    python scripts/study.py --scale x4 --group confirm --seeds 0 1 2 3 4 --keep-weights
    python scripts/study.py --scale x4 --group scratch_confirm --seeds 0 1 2 3 4 --start-before 23:10  # a session
    python scripts/study.py --scale x4 --group confirm --seeds 0 1 2 3 4 --score-only \
        --records docs/study_x4_runs/teacher_5c8fea63e4bf      # an earlier teacher's records

Tables give paired differences with 95 % t-intervals and say whether a row beats each versus row
(docs/ablation.md, "How we decide that a variant beats another").
"""
import argparse
import datetime
import functools
import os
import os.path as osp
import sys
import time
from typing import Optional

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import facd_basicsr  # noqa: E402,F401  (compat alias before basicsr)
from facd_basicsr.tools.common import build_arch, load_network  # noqa: E402
from facd_study.ablation import (SCALES, crop_luma_std, reference_scores, report_markdown,  # noqa: E402
                                 restore_teacher, score_rows, score_run, split_pairs, stored_record,
                                 teacher_fingerprint, teacher_weights, train_rows)
from facd_study.colour_probe import flat_summary, held_out_pairs, photo_summary  # noqa: E402
from facd_study.experiment import TrainJob, latest_weights, load_options, run_cache, run_jobs  # noqa: E402
from facd_study.kept_weights import keep_weights  # noqa: E402
from facd_study.negative_distance import negative_distances, random_lr_crops  # noqa: E402
from facd_study.study_rows import (GROUP_VERSUS, GROUPS, HISTORY, PREFIX, X4_GROUPS, X4_PREFIX, registry,  # noqa: E402
                                   x4_registry)
from facd_study.study_table import INTRO, bicubic_photo_scores, decision_table  # noqa: E402

OUT = 'results/study'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', choices=sorted(SCALES), default='x2', help='study scale (default x2)')
    parser.add_argument('--group', choices=sorted(GROUPS) + sorted(X4_GROUPS), help='a named group of rows')
    parser.add_argument('--teacher', action='store_true', help='only train the scale\'s teacher and score it')
    parser.add_argument('--texture', action='store_true',
                        help='print the luma std distribution of the training crops (the textured gate\'s min_std)')
    parser.add_argument('--negative-distance', action='store_true',
                        help='print how near same-patch noisy negatives (negatives: history) sit, against in-batch '
                        'negatives, in the teacher\'s tap features (random init until the teacher is trained)')
    parser.add_argument('--colour-probe', action='store_true',
                        help='do not train: render flat colours and held-out photos with the trained runs of the rows '
                        'and seeds (and the teacher), print per run and per row how far colours move '
                        '(facd_study/colour_probe.py)')
    parser.add_argument('--rows', nargs='+', default=[], help='row keys (added to the group)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--parallel', type=int, default=2, help='runs at once (default 2: one per core)')
    parser.add_argument('--versus', nargs='+', default=None,
                        help='rows to give paired (same-seed) PSNR differences to (default: the group\'s, see '
                        'GROUP_VERSUS; else scratch kd fd_l1_w1e-2)')
    parser.add_argument('--score-only', action='store_true', help='do not train; tabulate the runs that exist')
    parser.add_argument('--start-before', metavar='HH:MM', type=clock_time,
                        help='start no run after this time of day (runs in flight finish): a session that ends at a '
                        'known time does not start an x4 run (about 50 min) it would lose')
    parser.add_argument('--records', metavar='DIR',
                        help='with --score-only: tabulate the records in DIR instead (an earlier teacher\'s, e.g. '
                        'docs/study_x4_runs/teacher_5c8fea63e4bf), whatever teacher this machine has')
    parser.add_argument('--keep-weights', action='store_true',
                        help='copy the final student weights of every recorded run of the rows and seeds next to '
                        'its record (<run>.pth; for the decisive x4 rows, to be committed)')
    args = parser.parse_args()
    others = [flag for flag, on in (('--teacher', args.teacher), ('--texture', args.texture), ('--negative-distance',
              args.negative_distance), ('--colour-probe', args.colour_probe), ('--keep-weights', args.keep_weights))
              if on]
    if args.records and (not args.score_only or others):
        parser.error('--records only tabulates: give it with --score-only' +
                     (f' and without {", ".join(others)}' if others else ''))
    return args


def clock_time(text: str, now: Optional[datetime.datetime] = None) -> float:
    """``HH:MM`` on this machine's clock as ``time.time()`` seconds: the occurrence nearest to ``now`` (at most 12 h
    ago or ahead), so a time a few minutes past means "start nothing", never "tomorrow"."""
    try:
        hour, minute = (int(part) for part in text.split(':'))
        now = now or datetime.datetime.now()
        moment = datetime.datetime.combine(now.date(), datetime.time(hour, minute))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f'{text!r} is not a time of day HH:MM ({error})') from None
    if moment - now > datetime.timedelta(hours=12):
        moment -= datetime.timedelta(days=1)
    elif now - moment >= datetime.timedelta(hours=12):
        moment += datetime.timedelta(days=1)
    return moment.timestamp()


def train_teacher(scale, start_before: Optional[float] = None) -> None:
    """Train (or continue) the teacher of ``scale`` alone and print bicubic / teacher scores on both splits. With
    committed records, the teacher committed beside them is restored instead (:func:`restore_teacher`) and a newly
    trained one is recorded and kept there."""
    scale.build_data()
    teacher = load_options(scale.teacher_options)
    out = f'{OUT}/{scale.name}'
    folder = scale.record_dir(OUT)
    restore_teacher(scale, folder)  # raises rather than let another teacher replace a committed one
    run_jobs([TrainJob(teacher, f'{out}/options/teacher.yml', f'{out}/logs/teacher.log', 'teacher')], cache=run_cache(),
             start_before=start_before)
    if not osp.isfile(teacher_weights(scale)):
        return  # not started (--start-before)
    for name, scores in reference_scores(scale).items():
        print(name, ', '.join(f'{key} {value:.4f}' for key, value in scores.items()))
    sha = teacher_fingerprint(scale)
    earlier = stored_record(teacher, folder)
    print(f'teacher fingerprint {sha}')
    if earlier is not None and earlier['teacher'] == sha:
        return  # recorded (and, with committed records, kept) already
    if earlier is not None:
        print(f'WARNING: the recorded runs learnt from teacher {earlier["teacher"]}, this machine trained {sha}: '
              'runs distilled now are not paired with the recorded ones. On this machine the tables count only runs '
              'of this teacher; the distilled rows train again and their new records replace the old ones.')
    score_run(teacher, folder, split_pairs(scale), sha)  # this teacher's record
    if scale.records:  # committed records: commit the teacher's weights with them, or a fresh machine retrains it
        print(f'teacher weights kept at {keep_weights(teacher, folder)}')


def print_texture(scale) -> None:
    """Quantiles of the training crops' luma std, and the share of crops each min_std of the textured gate keeps."""
    scale.build_data()
    stds = crop_luma_std(scale)
    quantiles = np.quantile(stds, [0.1, 0.25, 0.5, 0.75, 0.9])
    print(f'luma std of {len(stds)} random training crops (8-bit levels): 10/25/50/75/90 % quantiles ' +
          ' / '.join(f'{q:.1f}' for q in quantiles))
    for min_std in (10, 20, round(quantiles[2]), 30, 40):
        print(f'textured min_std {min_std}: keeps {100 * (stds >= min_std).mean():.1f} % of the patches')


def keep_row_weights(rows: list, records: dict, seeds: list, prefix: str, scale) -> None:
    """Keep the weights of every recorded run of ``rows`` at ``seeds`` next to its record; say which could not be."""
    pairs = split_pairs(scale)
    recorded = {run['name'] for runs in records.values() for run in runs}
    for row in rows:
        for opt in (row.options(seed, prefix) for seed in seeds):
            if opt['name'] not in recorded:
                continue
            try:
                print(f'kept {keep_weights(opt, scale.record_dir(OUT), pairs, cache=run_cache())}')
            except (FileNotFoundError, ValueError) as err:
                print(f'NOT kept: {err}')


def print_negative_distance(scale) -> None:
    """d_noise / d_batch per teacher tap (facd_study/negative_distance.py) on 16 training LR crops of ``scale``."""
    scale.build_data()
    facd = load_options(scale.bases['facd'])
    teacher_opt = load_options(scale.teacher_options)
    trained = osp.isfile(teacher_weights(scale))
    net = load_network(teacher_opt['network_g'], teacher_weights(scale)) if trained else build_arch(
        dict(teacher_opt['network_g'])).eval()
    size = facd['datasets']['train']['gt_size'] // scale.scale
    x = random_lr_crops(osp.join(scale.data, 'train', f'lq_x{scale.scale}'), 16, size)
    history = HISTORY['noise_sigma']
    print(f'teacher {"trained" if trained else "at random init (not trained yet)"}, 16 LR crops of {size} px, '
          f'noise sigma {history[0]:g}-{history[1]:g}')
    for tap, (noise, batch) in negative_distances(net, facd['distill']['teacher_taps'], x, history).items():
        print(f'{tap}: d_noise {noise:.4g}, d_batch {batch:.4g}, d_noise / d_batch {noise / batch:.4f}')


def run_weights(name: str) -> str:
    """``experiments/<name>/models/net_g_latest.pth``, else the run cache's copy (it may not exist)."""
    local = latest_weights(name)
    return local if osp.isfile(local) else osp.join(run_cache(), name, 'models', 'net_g_latest.pth')


def print_colour_probe(scale, rows: list, seeds: list, prefix: str) -> None:
    """Per run and per row: flat-colour error and held-out photos against bicubic (facd_study/colour_probe.py)."""
    scale.build_data()
    pairs = held_out_pairs(scale.scale)
    print('bicubic PSNR-Y: ' + ', '.join(f'{name} {bicubic:.3f}' for name, (_, _, bicubic) in pairs.items()))
    teacher_opt = load_options(scale.teacher_options)
    runs = [('teacher', [(teacher_opt['name'], teacher_opt['network_g'])])]
    runs += [(row.key, [(opt['name'], opt['network_g']) for opt in (row.options(s, prefix) for s in seeds)])
             for row in rows]
    print('| row | runs | flat-colour MAE | dark-green G error per run | held-out photos below bicubic | worst photo '
          '(dB vs bicubic) | flower: dB vs bicubic, G offset per run |\n|:---|---:|---:|---:|---:|---:|---:|')
    for key, named in runs:
        found = [(load_network(network, run_weights(name)), name) for name, network in named
                 if osp.isfile(run_weights(name))]
        flats = [flat_summary(net) for net, _ in found]
        photos = [photo_summary(net, pairs, scale.scale) for net, _ in found]
        if not found:
            print(f'| `{key}` | 0 | | | | | |')
            continue
        deltas = [(p[name]['vs_bicubic'], name) for p in photos for name in p]
        worst = min(deltas)
        print(f'| `{key}` | {len(found)} | {np.mean([f["flat_mae"] for f in flats]):.2f} | '
              + ' / '.join(f'{f["dark_green_g"]:+.1f}' for f in flats)
              + f' | {sum(d < 0 for d, _ in deltas)} of {len(deltas)} | {worst[0]:+.2f} ({worst[1]}) | '
              + ' / '.join(f'{p["flower"]["vs_bicubic"]:+.2f}, {p["flower"]["g"]:+.1f}' for p in photos) + ' |',
              flush=True)


def main() -> None:
    args = parse_args()
    start = time.time()
    scale = SCALES[args.scale]
    if args.start_before is not None:
        print(f'No run starts after {time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(args.start_before))}.')
    if args.teacher:
        return train_teacher(scale, args.start_before)
    if args.texture:
        return print_texture(scale)
    if args.negative_distance:
        return print_negative_distance(scale)
    if scale.name == 'x4':
        table, groups, prefix = x4_registry(), X4_GROUPS, X4_PREFIX
    else:
        table, groups, prefix = registry(), GROUPS, PREFIX
    if args.group and args.group not in groups:
        raise KeyError(f'group {args.group} is not a group of scale {scale.name}: {", ".join(groups)}')
    keys = list(groups.get(args.group, ())) + [key for key in args.rows if key not in groups.get(args.group, ())]
    unknown = [key for key in keys if key not in table]
    if unknown or not keys:
        raise KeyError(f'unknown or no row(s) {unknown}. Known: {", ".join(table)}')
    rows = [table[key] for key in keys]
    if args.colour_probe:
        return print_colour_probe(scale, rows, args.seeds, prefix)
    if not args.score_only:  # committed records (x4): each run's weights land beside its record, ready to commit
        train_rows(rows, args.seeds, prefix, OUT, args.parallel, keep_weights if scale.records else None,
                   args.start_before)
    versus_keys = args.versus or list(GROUP_VERSUS.get(args.group, ('scratch', 'kd', 'fd_l1_w1e-2')))
    versus = [table[key] for key in versus_keys if key in table and key not in keys]
    if args.records:
        scale.build_data()  # the photos for bicubic's scores (seconds; a fresh clone has none)
    records = score_rows(rows + versus, args.seeds, prefix, OUT, args.records)
    if args.keep_weights:
        keep_row_weights(rows, records, args.seeds, prefix, scale)
    intro = (f'Seeds {args.seeds}; PSNR/SSIM on the Y channel, crop {scale.scale}, mean ± sample std over seeds. '
             + INTRO)
    references = reference_scores(scale)
    if args.records:  # the teacher here is not the one those runs learnt from: its record in DIR has its scores
        references.pop('teacher', None)
        recorded = stored_record(load_options(scale.teacher_options), args.records)
        if recorded is not None:
            references['teacher'] = {f'{split}_{metric}': value for split, scores in recorded['scores'].items()
                                     for metric, value in scores.items()}
        intro = f'Records of {args.records}. ' + intro
    title = f'FACD study ({scale.name}): {args.group or "selected rows"}'
    decide = functools.partial(decision_table, bicubic=bicubic_photo_scores(scale))
    text = report_markdown(title, intro, rows, records, references, 'scripts/study.py', versus_keys,
                           table=decide)
    os.makedirs(OUT, exist_ok=True)
    path = osp.join(OUT, f'{args.group or ("rows" if scale.name == "x2" else "x4_rows")}.md')
    with open(path, 'w') as f:
        f.write(text)
    print(text)
    print(f'Wrote {path}; wall time {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
