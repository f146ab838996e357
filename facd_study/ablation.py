"""Rows of the mini-table and of the FACD study: one base option file of ``options/demo/`` plus overrides per row.

Every row trains the same student (EDSR 2 x 16) on the same data, batch, iterations and schedule; only the loss (or
the initialisation) changes. Each run is scored on the SELECT photos (used to choose defaults) and on the REPORT
photos (held out), and its record is kept as JSON so that tables can be rebuilt and interrupted studies resumed.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from facd_basicsr.tools.bicubic import bicubic_upscale
from facd_basicsr.tools.common import load_network
from facd_study.demo_data import build_demo_sets
from facd_study.experiment import (DELETE, REPO_ROOT, TrainJob, is_trained, latest_weights, load_options, run_jobs,
                                   with_overrides)
from facd_study.scoring import (format_mean_std, markdown_table, mean_scores, read_pairs, score_outputs, seed_values,
                                split_scores)

BASES = {
    'scratch': osp.join(REPO_ROOT, 'options', 'demo', 'train_scratch_demo_x2.yml'),
    'facd': osp.join(REPO_ROOT, 'options', 'demo', 'train_FACD_demo_x2.yml'),
}
TEACHER_OPTIONS = osp.join(REPO_ROOT, 'options', 'demo', 'train_teacher_demo_x2.yml')
DATA = 'datasets/facd_demo'
SPLITS = ('select', 'report')
ALWAYS = {'distill.gate': {'mode': 'always'}}


@dataclass
class Row:
    """One table row.

    Attributes:
        key (str): short id, part of the run names (letters, digits, underscores).
        label (str): text of the table row.
        base (str): 'scratch' or 'facd' (a key of :data:`BASES`).
        overrides (dict): dotted key -> value applied to the base options (see ``with_overrides``).
    """
    key: str
    label: str
    base: str
    overrides: Dict = field(default_factory=dict)

    def options(self, seed: int, prefix: str) -> dict:
        """Complete options of this row's run with ``seed``, named ``{prefix}_{key}_s{seed}``."""
        if self.base not in BASES:
            raise ValueError(f'row {self.key}: base {self.base!r} is not one of {", ".join(BASES)}')
        extra = {'name': f'{prefix}_{self.key}_s{seed}', 'manual_seed': seed}
        return with_overrides(load_options(BASES[self.base]), dict(self.overrides, **extra))

    @property
    def needs_teacher(self) -> bool:
        return self.base == 'facd' or 'path.pretrain_network_g' in self.overrides

    def command(self, script: str, seeds: Sequence[int]) -> str:
        """The shell command that reproduces this row."""
        return f'python {script} --rows {self.key} --seeds {" ".join(str(s) for s in seeds)}'


def teacher_weights() -> str:
    return latest_weights(load_options(TEACHER_OPTIONS)['name'])


def feature_row(key: str, label: str, feature_opt: Mapping, gate: Mapping = None) -> Row:
    """A FACDModel row whose feature loss is ``feature_opt`` (gate 'always' unless ``gate`` is given)."""
    overrides = {'train.feature_opt': dict(feature_opt), 'distill.gate': dict(gate or {'mode': 'always'})}
    return Row(key, label, 'facd', overrides)


def baseline_rows() -> List[Row]:
    """Scratch, teacher-initialised scratch, and output KD only (no feature term, no gate)."""
    return [
        Row('scratch', 'student from scratch (L1 to GT)', 'scratch'),
        Row('tinit', 'student initialised from the teacher (L1 to GT)', 'scratch', {
            'path.pretrain_network_g': teacher_weights(),
            'path.strict_load_g': False
        }),
        Row('kd', 'output KD (0.5 L1 GT + 0.5 L1 teacher)', 'facd', dict(ALWAYS, **{'train.feature_opt': DELETE})),
    ]


def train_rows(rows: Sequence[Row], seeds: Sequence[int], prefix: str, out: str, parallel: int) -> None:
    """Train every (row, seed) run not trained yet, ``parallel`` at a time.

    When the teacher is missing it is trained first, and the runs that need no teacher (scratch) use the other
    slots meanwhile.
    """
    build_demo_sets(DATA)
    jobs, teacher_name = [], ''
    if any(row.needs_teacher for row in rows) and not osp.isfile(teacher_weights()):
        teacher = load_options(TEACHER_OPTIONS)
        jobs.append(TrainJob(teacher, f'{out}/options/teacher.yml', f'{out}/logs/teacher.log', 'teacher'))
        teacher_name = teacher['name']
    for seed in seeds:  # seed-major: an interrupted study has every row at the first seeds
        for row in rows:
            opt = row.options(seed, prefix)
            jobs.append(TrainJob(opt, f'{out}/options/{opt["name"]}.yml', f'{out}/logs/{opt["name"]}.log',
                                 f'{row.key} s{seed}', after=teacher_name if row.needs_teacher else ''))
    run_jobs(jobs, parallel=parallel)


def last_logged(log_path: str, key: str) -> float:
    """The last value of ``key: <number>`` in a training log (NaN if absent), e.g. the gate's ``gate_on``."""
    value = float('nan')
    if osp.isfile(log_path):
        for part in open(log_path, errors='replace').read().split(f' {key}: ')[1:]:
            value = float(part.split()[0])
    return value


def run_gate_on(name: str, root: str = '.') -> float:
    """The last logged ``gate_on`` of run ``name``: from BasicSR's newest ``train_*.log`` in its experiment folder,
    so a run trained by another table (study or mini-table) still reports its gate; NaN when not logged."""
    folder = osp.join(root, 'experiments', name)
    logs = sorted(f for f in os.listdir(folder) if f.startswith('train_') and f.endswith('.log')) if osp.isdir(
        folder) else []
    return last_logged(osp.join(folder, logs[-1]), 'gate_on') if logs else float('nan')


def score_run(opt: dict, out: str, pairs: Mapping[str, Mapping]) -> dict:
    """Score (or read the stored scores of) one trained run on every split; returns its record."""
    record_path = osp.join(out, 'runs', f'{opt["name"]}.json')
    if osp.isfile(record_path):
        with open(record_path) as f:
            record = json.load(f)
        if record['options'] == opt:
            if record['gate_on'] != record['gate_on']:  # NaN: stored before the gate was read from the run
                record['gate_on'] = run_gate_on(opt['name'])
            return record
    net = load_network(opt['network_g'], latest_weights(opt['name']))
    per_image = {split: split_scores(net, split_pairs, opt['scale'])[0] for split, split_pairs in pairs.items()}
    record = {
        'name': opt['name'], 'options': opt, 'per_image': per_image,
        'scores': {split: mean_scores(scores) for split, scores in per_image.items()},
        'gate_on': run_gate_on(opt['name']),
    }
    os.makedirs(osp.dirname(record_path), exist_ok=True)
    with open(record_path, 'w') as f:
        json.dump(record, f, indent=1)
    return record


def score_rows(rows: Sequence[Row], seeds: Sequence[int], prefix: str, out: str) -> Dict[str, List[dict]]:
    """``{row.key: [record per seed]}`` for every finished run of the current options (others are skipped)."""
    pairs = {split: read_pairs(osp.join(DATA, split), 2) for split in SPLITS}
    records = {}
    for row in rows:
        opts = [row.options(seed, prefix) for seed in seeds]
        records[row.key] = [score_run(opt, out, pairs) for opt in opts if is_trained(opt)]
    return records


def paired_deltas(runs: Sequence[dict], reference: Sequence[dict], split: str) -> List[float]:
    """PSNR differences to the reference row at equal seeds (same student init and data order), in dB."""
    ref = {run['options']['manual_seed']: run['scores'][split]['psnr'] for run in reference}
    return [run['scores'][split]['psnr'] - ref[run['options']['manual_seed']] for run in runs
            if run['options']['manual_seed'] in ref]


def table_row(row: Row, runs: Sequence[dict], references: Sequence[Sequence[dict]]) -> List[str]:
    """Cells: label, n, then per split PSNR, SSIM and the paired delta to each reference row; then the gate share."""
    cells = [row.label, str(len(runs))]
    for split in SPLITS:
        cells.append(format_mean_std(seed_values(runs, split, 'psnr'), 3))
        cells.append(format_mean_std(seed_values(runs, split, 'ssim'), 4))
        for reference in references:
            deltas = paired_deltas(runs, reference, split)
            cells.append(format_mean_std(deltas, 3) if deltas and runs is not reference else '—')
    gates = [run['gate_on'] for run in runs if run['gate_on'] == run['gate_on']]  # NaN: no FACDModel
    cells.append(f'{100 * sum(gates) / len(gates):.0f} %' if gates else '—')
    return cells


def results_table(rows: Sequence[Row], records: Mapping[str, List[dict]], reference_keys: Sequence[str] = ('scratch', ),
                  script: Optional[str] = None) -> str:
    """Markdown table of every row with at least one scored run.

    Args:
        rows (Sequence[Row]): rows in table order.
        records (Mapping[str, list[dict]]): run records by row key (:func:`score_rows`).
        reference_keys (Sequence[str]): rows to which paired (same seed) PSNR deltas are given. Default: scratch.
        script (str | None): with a script path, a last column holds the command that reproduces the row.
    """
    header = ['student (EDSR 2x16, x2)', 'n']
    for split in SPLITS:
        header += [f'{split} PSNR-Y', f'{split} SSIM-Y'] + [f'Δ{split} vs {key}' for key in reference_keys]
    header.append('gate on (last log)')
    references = [records.get(key, []) for key in reference_keys]
    lines = []
    for row in rows:
        if records.get(row.key):
            cells = table_row(row, records[row.key], references)
            if script:
                seeds = [run['options']['manual_seed'] for run in records[row.key]]
                cells.append(f'`{row.command(script, seeds)}`')
            lines.append(cells)
    return markdown_table(header + (['reproduce'] if script else []), lines)


def reference_scores() -> Dict[str, Dict[str, float]]:
    """Mean scores of bicubic and (once trained) of the teacher per split: ``{'bicubic': {'select_psnr': ...}}``."""
    result = {'bicubic': {}, 'teacher': {}}
    if not osp.isfile(teacher_weights()):
        del result['teacher']
    else:
        teacher = load_network(load_options(TEACHER_OPTIONS)['network_g'], teacher_weights())
    for split in SPLITS:
        pairs = read_pairs(osp.join(DATA, split), 2)
        bicubic = {stem: bicubic_upscale(lr, 2) for stem, (lr, _) in pairs.items()}
        per_method = {'bicubic': score_outputs(bicubic, pairs, 2)}
        if 'teacher' in result:
            per_method['teacher'] = split_scores(teacher, pairs, 2)[0]
        for name, scores in per_method.items():
            for metric, value in mean_scores(scores).items():
                result[name][f'{split}_{metric}'] = value
    return result


def report_markdown(title: str, intro: str, rows: Sequence[Row], records: Mapping[str, List[dict]],
                    references: Mapping[str, Mapping[str, float]], script: Optional[str] = None,
                    reference_keys: Sequence[str] = ('scratch', )) -> str:
    """A markdown section: title, intro, the results table, and the bicubic / teacher reference scores."""
    ref_lines = [f'- {name}: ' + ', '.join(f'{key} {value:.4f}' for key, value in scores.items())
                 for name, scores in references.items()]
    return (f'## {title}\n\n{intro}\n\n' + results_table(rows, records, reference_keys, script) +
            '\nReferences (bicubic, teacher EDSR 8x16):\n\n' + '\n'.join(ref_lines) + '\n')
