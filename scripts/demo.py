"""make demo: FACD end to end on real photos that ship with scikit-image, on the CPU, in minutes.

1. builds datasets/facd_demo (x2 tiles of 5 training photos; 2 other photos to validate on; LMDB via BasicSR);
2. trains the teacher of options/demo/train_teacher_demo_x2.yml (reused when experiments/ already holds it) and,
   beside it, the student from scratch; then the same student with FACD (options/demo/train_{scratch,FACD}_demo_x2.yml);
3. prints bicubic / teacher / scratch / FACD PSNR and SSIM (Y channel) on the validation photos and writes
   results/demo/scores.md and results/demo/comparison.png (one crop of every output next to the ground truth).

Usage (from the repository root): python scripts/demo.py [--retrain] [--parallel 2]
"""
import argparse
import contextlib
import io
import os.path as osp
import resource
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import facd_basicsr  # noqa: E402,F401  (compat alias before basicsr)
from facd_basicsr.tools.bicubic import bicubic_upscale  # noqa: E402
from facd_basicsr.tools.common import load_network  # noqa: E402
from facd_basicsr.tools.scoring import image_scores, upscale  # noqa: E402
from facd_study.demo_data import build_demo_sets  # noqa: E402
from facd_study.experiment import REPO_ROOT, TrainJob, latest_weights, load_options, run_jobs  # noqa: E402
from facd_study.figures import comparison_image, pick_crop, save_png  # noqa: E402
from facd_study.scoring import markdown_table, mean_scores, read_pairs, score_outputs  # noqa: E402

OPTIONS = osp.join(REPO_ROOT, 'options', 'demo')
DATA = 'datasets/facd_demo'
OUT = 'results/demo'
CROP = 64  # px of GT shown per panel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--retrain', action='store_true', help='train the two students again even if they exist')
    parser.add_argument('--parallel', type=int, default=2, help='student runs at once (default 2, one per core)')
    return parser.parse_args()


def train_all(retrain: bool, parallel: int) -> dict:
    """Train the teacher (unless reused), the scratch student beside it, then the FACD student; ``{label: options}``."""
    opts = {label: load_options(osp.join(OPTIONS, f'train_{name}_demo_x2.yml'))
            for label, name in (('teacher', 'teacher'), ('scratch', 'scratch'), ('FACD', 'FACD'))}
    jobs, teacher_name = [], ''
    if osp.isfile(latest_weights(opts['teacher']['name'])):
        print(f'      teacher: reusing {latest_weights(opts["teacher"]["name"])}')
    else:
        teacher_name = opts['teacher']['name']
        jobs.append(TrainJob(opts['teacher'], f'{OUT}/options/teacher.yml', f'{OUT}/logs/teacher.log', 'teacher'))
    for label in ('scratch', 'FACD'):
        jobs.append(TrainJob(opts[label], f'{OUT}/options/{label}.yml', f'{OUT}/logs/{label}.log', label,
                             after=teacher_name if label == 'FACD' else ''))
    trained = run_jobs(jobs, parallel=parallel, force=retrain)
    for label in ('scratch', 'FACD'):
        if opts[label]['name'] not in trained:
            print(f'      {label}: reusing {latest_weights(opts[label]["name"])}')
    return opts


def evaluate(networks: dict) -> tuple:
    """Outputs and mean scores of bicubic and of each network on the validation photos."""
    pairs = read_pairs(osp.join(DATA, 'select'), 2)
    outputs = {'bicubic': {stem: bicubic_upscale(lr, 2) for stem, (lr, _) in pairs.items()}}
    for label, opt in networks.items():
        net = load_network(opt['network_g'], latest_weights(opt['name']))
        outputs[label] = {stem: upscale(net, lr) for stem, (lr, _) in pairs.items()}
    scores = {label: mean_scores(score_outputs(out, pairs, 2)) for label, out in outputs.items()}
    return pairs, outputs, scores


def write_results(pairs: dict, outputs: dict, scores: dict, networks: dict) -> str:
    """Print and save the score table; write the crop comparison; returns the table."""
    names = {'bicubic': 'bicubic (MATLAB)', 'teacher': 'teacher EDSR 8x16', 'scratch': 'student EDSR 2x16, scratch',
             'FACD': 'student EDSR 2x16, FACD'}
    rows = [[names[k], f'{scores[k]["psnr"]:.3f}', f'{scores[k]["ssim"]:.4f}'] for k in names]
    table = markdown_table(['x2, photos ' + ' + '.join(pairs), 'PSNR-Y (dB)', 'SSIM-Y'], rows)
    stem = next(iter(pairs))
    gt = pairs[stem][1]
    box = (*pick_crop(gt, CROP), CROP)
    panels = [(f'{k} {image_scores(outputs[k][stem], gt, 2)["psnr"]:.2f} dB', outputs[k][stem])
              for k in ('bicubic', 'scratch', 'FACD', 'teacher')]
    save_png(comparison_image(panels + [('ground truth', gt)], box), f'{OUT}/comparison.png')
    with open(f'{OUT}/scores.md', 'w') as f:
        f.write(table + f'\nComparison crop: {stem}, GT box (top, left, size) = {box}\n')
    return table


def main() -> None:
    args = parse_args()
    start = time.time()
    print(f'[1/3] data: {DATA} (train tiles / validation photos, folders + LMDB)')
    build_quietly(DATA)
    print('[2/3] training, one core per run: the teacher EDSR 8x16 (2 min 38 s on an idle 2-core machine, as in '
          'README; reused when present) beside the student EDSR 2x16 from scratch, then the same student with FACD')
    networks = train_all(args.retrain, args.parallel)
    print('[3/3] scoring on the validation photos')
    pairs, outputs, scores = evaluate(networks)
    print('\n' + write_results(pairs, outputs, scores, networks))
    print(f'Wrote {OUT}/scores.md and {OUT}/comparison.png; wall time {time.time() - start:.0f} s, '
          f'CPU time {cpu_seconds():.0f} s (this script and its training runs)')


def build_quietly(root: str) -> None:
    """``build_demo_sets(root)`` with one line of output instead of BasicSR's per-image LMDB lines and bars.

    What BasicSR's ``make_lmdb_from_imgs`` prints is kept and shown only when the build fails.
    """
    captured = io.StringIO()
    start = time.time()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            folders = build_demo_sets(root)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    made = 'built' if captured.getvalue() else 'reused'
    print(f'      {made} {", ".join(sorted(folders))} in {time.time() - start:.0f} s')


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == '__main__':
    main()
