"""Rows of the mini-table and of the FACD study: one base option file of ``options/demo/`` plus overrides per row.

Every row trains the same student (EDSR 2 x 16) on the same data, batch, iterations and schedule; only the loss (or
the initialisation) changes. Each run is scored on the SELECT photos (used to choose defaults) and on the REPORT
photos (held out), and its record is kept as JSON so that tables can be rebuilt and interrupted studies resumed.
"""
import json
import os
import os.path as osp
import platform
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from basicsr.archs import build_network

from facd_basicsr.distill.gate import patch_luma_std
from facd_basicsr.distill.gate_log import read_gate_log
from facd_basicsr.distill.teacher_init import sliced_state
from facd_basicsr.host.checkpoint import fingerprint, read_state_dict
from facd_basicsr.tools.bicubic import bicubic_upscale
from facd_basicsr.tools.common import load_network
from facd_study.demo_data import TRAIN_PHOTOS, build_demo_sets
from facd_study.experiment import (DELETE, REPO_ROOT, TrainJob, is_trained, latest_weights, load_options, restore_kept,
                                   restore_run, run_cache, run_jobs, with_overrides)
from facd_study.sample_data import GREY_PHOTOS, SKLEARN_PHOTOS
from facd_study.scoring import (colour_offsets, format_mean_std, markdown_table, mean_scores, read_pairs, score_outputs,
                                seed_values, split_scores)

SPLITS = ('select', 'report')
ALWAYS = {'distill.gate': {'mode': 'always'}}


@dataclass(frozen=True)
class StudyScale:
    """One scale of the study: its option files, its data set and the labels of its networks.

    Attributes:
        name (str): 'x2' (the tiny scale of make demo / make mini-table) or 'x4' (the second, larger scale).
        scale (int): SR factor.
        data (str): data folder written by :func:`facd_study.demo_data.build_demo_sets`.
        bases (dict): 'scratch' and 'facd' -> option file of the rows' base runs.
        teacher_options (str): option file of the teacher.
        train_photos (tuple): the photos tiled for training (select and report photos are never trained on).
        tile (int): GT tile side in px. max_side (int): training photos are shrunk to this longer side first.
        student (str), teacher (str): network labels for the tables.
        records (str): folder of the run records (scores, options, gate summary, teacher fingerprint). '' keeps them
            in the study's output folder (not committed); a committed folder lets a study that spans sessions on
            fresh machines skip, and still tabulate, every run an earlier session finished.
    """
    name: str
    scale: int
    data: str
    bases: Mapping[str, str]
    teacher_options: str
    train_photos: tuple
    tile: int
    max_side: int
    student: str
    teacher: str
    records: str = ''

    def record_dir(self, out: str) -> str:
        """Folder of this scale's run records: :attr:`records`, else ``out/runs``."""
        return self.records or osp.join(out, 'runs')

    def build_data(self) -> Dict[str, str]:
        """Build (or reuse) this scale's train / select / report sets."""
        return build_demo_sets(self.data, self.scale, self.tile, self.train_photos, self.max_side)


def _options(folder: str, name: str) -> str:
    return osp.join(REPO_ROOT, 'options', folder, name)


TINY = StudyScale('x2', 2, 'datasets/facd_demo',
                  {'scratch': _options('demo', 'train_scratch_demo_x2.yml'),
                   'facd': _options('demo', 'train_FACD_demo_x2.yml')},
                  _options('demo', 'train_teacher_demo_x2.yml'), TRAIN_PHOTOS, 96, 640, 'EDSR 2x16, x2', 'EDSR 8x16')
# x4 trains on every photo our dependencies ship except the select and report photos: the demo's five, matplotlib's
# grace_hopper, scikit-learn's two, and scikit-image's grey photos and textures; GT tiles of 128 px (LR 32) hold the
# 96 px random crops of the option files and cover a 512 px photo without a gap
X4_TRAIN_PHOTOS = TRAIN_PHOTOS + ('grace_hopper', ) + SKLEARN_PHOTOS + GREY_PHOTOS
X4 = StudyScale('x4', 4, 'datasets/facd_study_x4',
                {'scratch': _options('study_x4', 'train_scratch_study_x4.yml'),
                 'facd': _options('study_x4', 'train_FACD_study_x4.yml')},
                _options('study_x4', 'train_teacher_study_x4.yml'), X4_TRAIN_PHOTOS, 128, 1024, 'EDSR 4x16, x4',
                'EDSR 16x48', osp.join(REPO_ROOT, 'docs', 'study_x4_runs'))
SCALES = {scale.name: scale for scale in (TINY, X4)}


@dataclass
class Row:
    """One table row.

    Attributes:
        key (str): short id, part of the run names (letters, digits, underscores).
        label (str): text of the table row.
        base (str): 'scratch' or 'facd' (a key of ``scale.bases``).
        overrides (dict): dotted key -> value applied to the base options (see ``with_overrides``).
        scale (StudyScale): the study scale whose option files and data the row uses. Default: :data:`TINY`.
    """
    key: str
    label: str
    base: str
    overrides: Dict = field(default_factory=dict)
    scale: StudyScale = TINY

    def options(self, seed: int, prefix: str) -> dict:
        """Complete options of this row's run with ``seed``, named ``{prefix}_{key}_s{seed}``."""
        bases = self.scale.bases
        if self.base not in bases:
            raise ValueError(f'row {self.key}: base {self.base!r} is not one of {", ".join(bases)}')
        extra = {'name': f'{prefix}_{self.key}_s{seed}', 'manual_seed': seed}
        return with_overrides(load_options(bases[self.base]), dict(self.overrides, **extra))

    @property
    def needs_teacher(self) -> bool:
        return self.base == 'facd' or 'path.pretrain_network_g' in self.overrides

    def command(self, script: str, seeds: Sequence[int]) -> str:
        """The shell command that reproduces this row."""
        scale = '' if self.scale is TINY else f' --scale {self.scale.name}'
        return f'python {script}{scale} --rows {self.key} --seeds {" ".join(str(s) for s in seeds)}'


def teacher_weights(scale: StudyScale = TINY) -> str:
    return latest_weights(load_options(scale.teacher_options)['name'])


def feature_row(key: str, label: str, feature_opt: Mapping, gate: Mapping = None, scale: StudyScale = TINY) -> Row:
    """A FACDModel row whose feature loss is ``feature_opt`` (gate 'always' unless ``gate`` is given)."""
    overrides = {'train.feature_opt': dict(feature_opt), 'distill.gate': dict(gate or {'mode': 'always'})}
    return Row(key, label, 'facd', overrides, scale)


def baseline_rows(scale: StudyScale = TINY) -> List[Row]:
    """Scratch, teacher-initialised scratch, and output KD only (no feature term, no gate)."""
    return [
        Row('scratch', 'student from scratch (L1 to GT)', 'scratch', scale=scale),
        Row('tinit', 'student initialised from the teacher (L1 to GT)', 'scratch', {
            'path.pretrain_network_g': teacher_weights(scale),
            'path.strict_load_g': False
        }, scale),
        Row('kd', 'output KD (0.5 L1 GT + 0.5 L1 teacher)', 'facd', dict(ALWAYS, **{'train.feature_opt': DELETE}),
            scale),
    ]


def common_scale(rows: Sequence[Row]) -> StudyScale:
    """The one study scale of ``rows`` (a table never mixes scales)."""
    scales = {row.scale.name for row in rows}
    if len(scales) != 1:
        raise ValueError(f'rows of several study scales {sorted(scales)} cannot share a table')
    return rows[0].scale


def train_rows(rows: Sequence[Row],
               seeds: Sequence[int],
               prefix: str,
               out: str,
               parallel: int,
               on_record: Optional[Callable[[dict, str], object]] = None,
               start_before: Optional[float] = None) -> None:
    """Train every (row, seed) run that has neither a record of the same options nor a finished run, ``parallel`` at
    a time, and record each run (:func:`score_run`) as soon as it finishes: a session may end before the others.

    The teacher comes from ``experiments/`` or the run cache. When neither has it, it is trained first, the runs
    that need no teacher (scratch) using the other slots meanwhile, and only then is it decided which distilled runs
    are due, against the teacher just trained (a record of another teacher does not count, even when it was
    committed before this machine had one). That first call ends with its slowest run, and a failed scratch run
    stops the study before any distilled run starts. ``on_record(opt, folder)`` is called after each record is
    written (the teacher's too); ``study.py`` keeps the weights of committed records with it. No run starts after
    ``start_before`` (``time.time()``; :func:`run_jobs`).
    """
    scale = common_scale(rows)
    scale.build_data()
    folder = scale.record_dir(out)
    pairs = split_pairs(scale)
    teacher_opt = load_options(scale.teacher_options)
    restore_teacher(scale, folder)
    todo = due_runs(rows, seeds, prefix, folder, present_teacher(scale))
    if any(row.needs_teacher for row, _ in todo) and present_teacher(scale) is None:
        scratch = [(row, opt) for row, opt in todo if not row.needs_teacher]
        jobs = [TrainJob(teacher_opt, f'{out}/options/teacher.yml', f'{out}/logs/teacher.log', 'teacher')]
        run_row_jobs(jobs + row_jobs(scratch, out), scratch, folder, pairs, scale, parallel, on_record, start_before)
        todo = due_runs(rows, seeds, prefix, folder, present_teacher(scale))
    if any(row.overrides.get('path.pretrain_network_g') == sliced_teacher_weights(scale) for row, _ in todo):
        write_sliced_teacher(scale)  # always from the present teacher: a file cut from an earlier one is stale
    run_row_jobs(row_jobs(todo, out), todo, folder, pairs, scale, parallel, on_record, start_before)


def restore_teacher(scale: StudyScale, folder: str) -> None:
    """Make sure ``experiments/`` has the teacher of ``scale`` when it can without training. The teacher committed
    beside its record in ``folder`` (``study.py --teacher`` keeps it) comes first: a fresh machine gets it back. Without
    a committed file, the run cache's copy (a new work tree on a kept machine) is restored. Nothing happens when
    neither has it, and the call then trains a new teacher.

    Raises:
        ValueError: a teacher file is committed in ``folder`` but this machine ends up with another teacher (one
            already in ``experiments/`` or the run cache), or the file is not the network its record scored: training
            on would retrain every distilled row and overwrite the committed records.
    """
    opt = load_options(scale.teacher_options)
    kept = osp.join(folder, f'{opt["name"]}.pth')
    record = stored_record(opt, folder)
    if not is_trained(opt) and not (osp.isfile(kept) and restore_kept(opt, record, kept)):
        restore_run(opt, '.', run_cache())
    if not osp.isfile(kept):
        return
    committed, present = (record or {}).get('student'), present_teacher(scale)
    if present != committed:
        raise ValueError(
            f'{kept} is the committed x4 teacher ({committed[:12] if committed else "no record of these options"}, '
            f'file {file_fingerprint(opt, kept)}), but this machine has teacher '
            f'{present[:12] if present else "none"} (experiments/{opt["name"]} or the run cache). To continue the '
            f'committed study, move that teacher away; to start another study, move the committed records of '
            f'{folder} into a folder of their own (docs/ablation.md 11.4).')


def file_fingerprint(opt: dict, path: str) -> str:
    """The first 12 hex digits of the weights fingerprint of ``path`` in ``opt['network_g']``, or why it does not
    load (for messages)."""
    try:
        return fingerprint(load_network(opt['network_g'], path))[:12]
    except (RuntimeError, KeyError, ValueError) as error:
        return f'does not load: {str(error).splitlines()[0]}'


def due_runs(rows: Sequence[Row], seeds: Sequence[int], prefix: str, folder: str,
             teacher: Optional[str]) -> List[tuple]:
    """``[(row, options)]`` of the runs without a record of the same options (and, for distilled rows, of the
    ``teacher`` fingerprint when not None), seed-major: an interrupted study has every row at the first seeds."""
    todo = [(row, row.options(seed, prefix)) for seed in seeds for row in rows]
    return [(row, opt) for row, opt in todo
            if stored_record(opt, folder, teacher if row.needs_teacher else None) is None]


def row_jobs(todo: Sequence[tuple], out: str) -> List[TrainJob]:
    """One :class:`TrainJob` per due run of ``todo``."""
    return [
        TrainJob(opt, f'{out}/options/{opt["name"]}.yml', f'{out}/logs/{opt["name"]}.log',
                 f'{row.key} s{opt["manual_seed"]}') for row, opt in todo
    ]


def run_row_jobs(jobs: List[TrainJob],
                 todo: Sequence[tuple],
                 folder: str,
                 pairs,
                 scale: StudyScale,
                 parallel: int,
                 on_record: Optional[Callable[[dict, str], object]] = None,
                 start_before: Optional[float] = None) -> None:
    """Train ``jobs`` and record each as soon as it finishes (a session may end before the others): the runs of
    ``todo`` with the teacher they learnt from, the teacher with its scores and fingerprint; then ``on_record(opt,
    folder)`` when given."""
    by_name = {opt['name']: row for row, opt in todo}
    teacher_name = load_options(scale.teacher_options)['name']

    def record(job: TrainJob) -> None:
        if job.name == teacher_name:
            score_run(job.opt, folder, pairs, teacher_fingerprint(scale))
        elif job.name in by_name:
            score_run(job.opt, folder, pairs, teacher_fingerprint(scale) if by_name[job.name].needs_teacher else None)
        else:
            return
        if on_record is not None:
            try:  # the runs still training must not stop because one file could not be kept
                on_record(job.opt, folder)
            except (OSError, ValueError) as error:
                print(f'NOT kept: {error}', flush=True)

    if jobs:
        run_jobs(jobs, parallel=parallel, cache=run_cache(), on_finish=record, start_before=start_before)


def split_pairs(scale: StudyScale) -> Dict[str, Mapping]:
    """The (LR, GT) photo pairs of the select and report splits of ``scale``."""
    return {split: read_pairs(osp.join(scale.data, split), scale.scale) for split in SPLITS}


def teacher_fingerprint(scale: StudyScale) -> str:
    """SHA-256 of the trained teacher's weights (names, shapes, bytes): which teacher a distilled run learnt from."""
    return fingerprint(load_network(load_options(scale.teacher_options)['network_g'], teacher_weights(scale)))


def present_teacher(scale: StudyScale) -> Optional[str]:
    """:func:`teacher_fingerprint` when this machine has the trained teacher of ``scale``; None when it has not."""
    return teacher_fingerprint(scale) if osp.isfile(teacher_weights(scale)) else None


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


def stored_record(opt: dict, folder: str, teacher: Optional[str] = None) -> Optional[dict]:
    """The record of run ``opt['name']`` in ``folder`` when it was made from exactly ``opt`` and, with ``teacher``
    (a weights fingerprint), learnt from that teacher; else None. A run of a retrained teacher has the same options
    as the recorded one, so without ``teacher`` the record of the other teacher's run would stand in for it."""
    path = osp.join(folder, f'{opt["name"]}.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    if record['options'] != opt:
        return None
    if teacher is not None and record.get('teacher') != teacher:
        return None
    if record['gate_on'] != record['gate_on']:  # NaN: stored before the gate was read from the run
        record['gate_on'] = run_gate_on(opt['name'])
    return record


def gate_summary(name: str, root: str = '.', bins: int = 10) -> Optional[dict]:
    """What the gate did in run ``name``, from its ``gate_log.csv`` (None without one): per tenth of the run, the
    mean share of patches kept and the mean 10 / 50 / 90 % quantiles of the teacher's advantage over the batch (dB).

    Returns:
        dict | None: ``{'iters': n, 'bins': [{'first', 'last', 'gate_on', 'adv_p10', 'adv_p50', 'adv_p90'}, ...]}``
        (advantage keys only where the run logged it).
    """
    path = osp.join(root, 'experiments', name, 'gate_log.csv')
    if not osp.isfile(path):
        return None
    rows = read_gate_log(path)
    size = max(1, -(-len(rows) // bins))
    summary = []
    for start in range(0, len(rows), size):
        part = rows[start:start + size]
        cell = {'first': int(part[0]['iter']), 'last': int(part[-1]['iter'])}
        for key in ('gate_on', 'adv_p10', 'adv_p50', 'adv_p90'):
            values = [row[key] for row in part if key in row]
            if values:
                cell[key] = round(sum(values) / len(values), 4)
        summary.append(cell)
    return {'iters': len(rows), 'bins': summary}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else the platform's): CPU runs repeat bit for bit on one model only."""
    if osp.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def score_run(opt: dict, folder: str, pairs: Mapping[str, Mapping], teacher: Optional[str] = None) -> dict:
    """Score (or read the stored record of) one trained run on every split; returns its record.

    A record holds the options, per-photo and mean scores, per-photo colour offsets (``colour_offset``: split ->
    photo -> {'r', 'g', 'b'}, output - GT on the 0-255 scale), the fingerprint of the scored weights (``student``),
    the gate summary, the teacher's fingerprint and the host. Records written before ``colour_offset`` and
    ``student`` existed lack them; the tables show '—' there.

    Args:
        opt (dict): the run's complete options.
        folder (str): where records are kept (``StudyScale.record_dir``), one ``<run name>.json`` each.
        pairs (Mapping): split -> (LR, GT) pairs (:func:`split_pairs`).
        teacher (str | None): fingerprint of the teacher the run learnt from (:func:`teacher_fingerprint`).
    """
    record = stored_record(opt, folder, teacher)
    if record is not None:
        return record
    net = load_network(opt['network_g'], latest_weights(opt['name']))
    per_image, offsets = {}, {}
    for split, split_pairs in pairs.items():
        per_image[split], outputs = split_scores(net, split_pairs, opt['scale'])
        offsets[split] = colour_offsets(outputs, split_pairs, opt['scale'])
    record = {
        'name': opt['name'], 'options': opt, 'per_image': per_image,
        'scores': {split: mean_scores(scores) for split, scores in per_image.items()},
        'colour_offset': offsets, 'student': fingerprint(net),
        'gate_on': run_gate_on(opt['name']), 'gate_log': gate_summary(opt['name']), 'teacher': teacher,
        'host': f'{cpu_model()}, torch {torch.__version__}',
    }
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, f'{opt["name"]}.json.partial'), 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(osp.join(folder, f'{opt["name"]}.json.partial'), osp.join(folder, f'{opt["name"]}.json'))
    return record


def score_rows(rows: Sequence[Row],
               seeds: Sequence[int],
               prefix: str,
               out: str,
               folder: Optional[str] = None) -> Dict[str, List[dict]]:
    """``{row.key: [record per seed]}`` for every run of the current options that has a record or is trained (the
    others are skipped); runs trained but not recorded are scored now, a distilled one only where this machine has
    the teacher it learnt from (:func:`is_trained` checks the teacher file). Where this machine has the teacher, only
    records of runs that learnt from it count (a retrained teacher starts the distilled rows afresh).

    With ``folder`` (the records of an earlier teacher, e.g. ``docs/study_x4_runs/teacher_5c8fea63e4bf``), only the
    records there count, whatever teacher this machine has, and nothing is scored.

    Raises:
        ValueError: ``folder`` holds distilled records of more than one teacher (they would pair across teachers).
    """
    scale = common_scale(rows)
    frozen = folder is not None
    folder = folder if frozen else scale.record_dir(out)
    pairs = None if frozen else split_pairs(scale)
    present = None if frozen else present_teacher(scale)
    records = {}
    for row in rows:
        records[row.key] = []
        for opt in (row.options(seed, prefix) for seed in seeds):
            teacher = present if row.needs_teacher else None
            record = stored_record(opt, folder, teacher)
            # a distilled run is recorded only with the fingerprint of the teacher it learnt from
            if record is None and not frozen and is_trained(opt) and (teacher is not None or not row.needs_teacher):
                record = score_run(opt, folder, pairs, teacher)
            if record is not None:
                records[row.key].append(record)
    teachers = {run['teacher'][:12] for row in rows if row.needs_teacher for run in records[row.key]
                if run.get('teacher')}
    if frozen and len(teachers) > 1:  # elsewhere the table's note names the mix (teacher_note)
        raise ValueError(f'{folder} holds distilled records of {len(teachers)} teachers ({", ".join(sorted(teachers))})'
                         ': their runs do not pair; keep each teacher\'s records in a folder of their own')
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
    header = [f'student ({common_scale(rows).student})', 'n']
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


def reference_scores(scale: StudyScale = TINY) -> Dict[str, Dict[str, float]]:
    """Mean scores of bicubic and (once trained) of the teacher per split: ``{'bicubic': {'select_psnr': ...}}``."""
    result = {'bicubic': {}, 'teacher': {}}
    s = scale.scale
    if not osp.isfile(teacher_weights(scale)):
        del result['teacher']
    else:
        teacher = load_network(load_options(scale.teacher_options)['network_g'], teacher_weights(scale))
    for split in SPLITS:
        pairs = read_pairs(osp.join(scale.data, split), s)
        bicubic = {stem: bicubic_upscale(lr, s) for stem, (lr, _) in pairs.items()}
        per_method = {'bicubic': score_outputs(bicubic, pairs, s)}
        if 'teacher' in result:
            per_method['teacher'] = split_scores(teacher, pairs, s)[0]
        for name, scores in per_method.items():
            for metric, value in mean_scores(scores).items():
                result[name][f'{split}_{metric}'] = value
    return result


def report_markdown(title: str, intro: str, rows: Sequence[Row], records: Mapping[str, List[dict]],
                    references: Mapping[str, Mapping[str, float]], script: Optional[str] = None,
                    reference_keys: Sequence[str] = ('scratch', ), table: Optional[Callable] = None) -> str:
    """A markdown section: title, intro, the results table, and the bicubic / teacher reference scores.

    ``table`` builds the table from ``(rows, records, reference_keys, script)``; default :func:`results_table`
    (the study uses :func:`facd_study.study_table.decision_table`).
    """
    ref_lines = [f'- {name}: ' + ', '.join(f'{key} {value:.4f}' for key, value in scores.items())
                 for name, scores in references.items()]
    return (f'## {title}\n\n{intro}\n\n' + (table or results_table)(rows, records, reference_keys, script) +
            f'\nReferences (bicubic, teacher {common_scale(rows).teacher}):\n\n' + '\n'.join(ref_lines) + '\n' +
            teacher_note(records))


def teacher_note(records: Mapping[str, List[dict]]) -> str:
    """A line naming the teacher fingerprint(s) the table's distilled runs learnt from ('' when none is recorded);
    runs of different teachers (a teacher retrained on another machine) are not paired comparisons, and it says so."""
    counts = Counter(run['teacher'] for runs in records.values() for run in runs if run.get('teacher'))
    if not counts:
        return ''
    listed = ', '.join(f'`{sha[:12]}` ({n} runs)' for sha, n in counts.most_common())
    if len(counts) == 1:
        return f'\nEvery distilled run learnt from the same teacher: {listed}.\n'
    return f'\n**The distilled runs learnt from {len(counts)} different teachers**: {listed}.\n'


def crop_luma_std(scale: StudyScale, crops: int = 4000, seed: int = 0) -> np.ndarray:
    """Luma standard deviation (8-bit levels, as the ``textured`` gate measures it) of ``crops`` random GT crops of
    the option files' ``gt_size`` from the training tiles of ``scale``, each tile equally likely (as BasicSR's
    paired dataset draws them); shape (crops,). The distribution the ``textured`` gate's ``min_std`` is read from."""
    size = load_options(scale.bases['scratch'])['datasets']['train']['gt_size']
    tiles = [gt for _, gt in read_pairs(osp.join(scale.data, 'train'), scale.scale).values()]
    rng = np.random.default_rng(seed)
    values = np.empty(crops)
    for k in range(crops):
        tile = tiles[rng.integers(len(tiles))]
        top, left = (rng.integers(0, side - size + 1) for side in tile.shape[:2])
        rgb = tile[top:top + size, left:left + size, ::-1].astype(np.float32) / 255.
        values[k] = patch_luma_std(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]).item()
    return values


def sliced_teacher_weights(scale: StudyScale) -> str:
    """Where the x4 'tinit' row's student initialisation (slices of the trained teacher) is written."""
    return osp.join(osp.dirname(teacher_weights(scale)), 'net_g_sliced_for_student.pth')


def write_sliced_teacher(scale: StudyScale) -> str:
    """Cut the student's initial weights out of the trained teacher of ``scale`` (distill/teacher_init.py)."""
    path = sliced_teacher_weights(scale)
    if not osp.isfile(teacher_weights(scale)):
        raise FileNotFoundError(f'{teacher_weights(scale)} is missing: train the teacher first '
                                f'(python scripts/study.py --scale {scale.name} --teacher)')
    teacher_opt = load_options(scale.teacher_options)['network_g']
    student_opt = load_options(scale.bases['scratch'])['network_g']
    teacher_state = read_state_dict(teacher_weights(scale), 'params', f'the {scale.name} study teacher')
    student_state = build_network(dict(student_opt)).state_dict()
    state = sliced_state(teacher_state, student_state, student_opt, teacher_opt)
    torch.save({'params': state}, f'{path}.partial')
    os.replace(f'{path}.partial', path)  # a run of another study process may be reading it
    return path
