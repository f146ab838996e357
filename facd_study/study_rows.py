"""The named rows of ``make mini-table`` and of the FACD study (scripts/study.py): one registry, shared run names.

A row's run is ``{prefix}_{key}_s{seed}``; the mini-table and the study use the same prefix, so a row that appears in
both is trained once. Row keys encode the knobs (``facd_l1_w1e-2_always``), so a key never changes meaning: when the
base option file changes, the stored options differ and the run is trained again.
"""
from typing import Dict, Mapping, Optional

from facd_study.ablation import ALWAYS, TINY, X4, Row, StudyScale, baseline_rows, feature_row, sliced_teacher_weights
from facd_study.experiment import DELETE

PREFIX = 'abl'
FACD_LOSS = {'type': 'FACDContrastiveLoss', 'form': 'ratio', 'distance': 'l1', 'num_negatives': None,
             'normalize': False}


def tag(weight: float) -> str:
    """Compact weight tag for run names: 0.01 -> '1e-2', 3e-3 -> '3e-3', 10 -> '1e1'."""
    mantissa, exponent = f'{weight:.0e}'.split('e')
    return f'{mantissa}e{int(exponent)}'


def fd_row(weight: float, criterion: str = 'l1', scale: StudyScale = TINY) -> Row:
    return feature_row(f'fd_{criterion}_w{tag(weight)}', f'output KD + conventional FD ({criterion}), w {weight:g}',
                       {'type': 'FeatureDistillLoss', 'loss_weight': weight, 'criterion': criterion}, scale=scale)


def fakd_row(weight: float) -> Row:
    return feature_row(f'fakd_w{tag(weight)}', f'output KD + FAKD affinity, w {weight:g}',
                       {'type': 'FAKDAffinityLoss', 'loss_weight': weight})


def gate_name(gate: Optional[Mapping]) -> str:
    """'always', 'teacher_better' (margin 0), 'teacher_better_m0.5', 'top0.5' (fraction), 'ramp0_2' (margin,
    width) or 'textured8' (min_std)."""
    if gate is None or gate['mode'] == 'always':
        return 'always'
    if gate['mode'] == 'top_fraction':
        return f'top{gate["fraction"]:g}'
    if gate['mode'] == 'advantage_ramp':
        return f'ramp{gate.get("margin", 0.):g}_{gate.get("width", 1.):g}'
    if gate['mode'] == 'textured':
        return f'textured{gate.get("min_std", 10.):g}'
    margin = gate.get('margin', 0.)
    return 'teacher_better' if margin == 0 else f'teacher_better_m{margin:g}'


def facd_row(weight: float, gate: Optional[Mapping] = None, suffix: str = '', note: str = '',
             scale: StudyScale = TINY, **loss) -> Row:
    """An output KD + FACD contrastive row; ``loss`` overrides :data:`FACD_LOSS`; gate 'always' unless given.

    ``form='infonce'`` builds the InfoNCE loss, its own class ``FACDInfoNCELoss`` (no form, distance or normalize).
    """
    opt = dict(FACD_LOSS, loss_weight=weight, **loss)
    # each loss refuses keys it does not read: form, distance and normalize under InfoNCE, normalize under the
    # cosine distance (the run keys and labels still name them)
    unread = ('form', 'distance', 'normalize') if opt['form'] == 'infonce' else ()
    unread += ('normalize', ) if opt['distance'] == 'cosine' else ()
    gate_tag = gate_name(gate)
    key = f'facd_{opt["distance"]}_w{tag(weight)}{suffix}_{gate_tag}'
    if opt['form'] == 'infonce':
        key = f'facd_infonce_t{tag(opt.get("temperature", 0.1))}_w{tag(weight)}{suffix}_{gate_tag}'
    form = f'InfoNCE tau {opt.get("temperature", 0.1):g}' if opt['form'] == 'infonce' else f'ratio-{opt["distance"]}'
    label = f'output KD + FACD {form}{note}, w {weight:g}, gate {gate_tag}'
    feature = {k: v for k, v in opt.items() if k not in unread}
    if opt['form'] == 'infonce':
        feature['type'] = 'FACDInfoNCELoss'
    return feature_row(key, label, feature, gate, scale)


def knob_rows(weight: float) -> list:
    """FACD variants at one feature weight: distance, normalisation, negatives, gate; and InfoNCE at its own weights
    (its loss is about log(B) per tap, not a ratio near 0.2, so the ratio weight does not carry over)."""
    return [
        facd_row(weight, distance='l2'),
        facd_row(weight, distance='cosine'),
        facd_row(weight, suffix='_norm', note=' on unit C-vectors', normalize=True),
        facd_row(weight, suffix='_k1', note=', K=1 negative', num_negatives=1),
        facd_row(weight, suffix='_k4', note=', K=4 negatives', num_negatives=4),
        facd_row(weight, {'mode': 'teacher_better', 'margin': 0.}),
        facd_row(weight, {'mode': 'teacher_better', 'margin': 1.}),
        facd_row(weight, {'mode': 'top_fraction', 'fraction': 0.5}),
    ] + [facd_row(w, form='infonce', temperature=t) for w, t in ((1e-2, 0.1), (1e-1, 0.1), (1e-2, 0.5))]


def negative_rows(weight: float) -> list:
    """Where the negatives come from: detached student features of the other patches, or the teacher's features of
    the same patch's LR after a bicubic round trip (K = 1, one more teacher pass per step)."""
    return [
        facd_row(weight, suffix='_student', note=', student negatives', negatives='student'),
        facd_row(weight, suffix='_degraded', note=', degraded-input negatives (K=1)', negatives='degraded'),
    ]


def ramp_rows(weight: float) -> list:
    """The contrastive term ramped in linearly over the first third or two thirds of the 1500 iterations."""
    return [
        variant(facd_row(weight), f'_ramp{n}', f', ramped in over {n} iterations', {'distill.feature_ramp_iters': n})
        for n in (500, 1000)
    ]


LAST_TAP = {'distill.teacher_taps': ['conv_after_body'], 'distill.student_taps': ['conv_after_body']}


def variant(row: Row, suffix: str, note: str, overrides: Mapping) -> Row:
    """``row`` with more overrides; key ``row.key + suffix``, label ``row.label + note``; same scale."""
    return Row(row.key + suffix, row.label + note, row.base, dict(row.overrides, **overrides), row.scale)


def tap_rows() -> list:
    """FD and FACD on the last tap only (just before the global residual add) instead of three taps."""
    return [variant(row, '_lasttap', ', last tap only', LAST_TAP) for row in (fd_row(1e-2), facd_row(KNOB_WEIGHT))]


def budget_rows() -> list:
    """The scratch student with a longer schedule: how much of the teacher's lead is its longer training?"""
    return [Row(f'scratch_it{n}', f'student from scratch, {n} iterations (diagnostic, not equal budget)', 'scratch',
                {'train.total_iter': n, 'train.scheduler.periods': [n]}) for n in (3000, 4500)]


def long_rows() -> list:
    """KD, FD and FACD with 3000 iterations: the l1 pair at their best l1 weights and the l2 pair as adopted; the
    scratch row of the same budget is in :func:`budget_rows`."""
    longer = {'train.total_iter': 3000, 'train.scheduler.periods': [3000]}
    rows = [Row('kd', 'output KD', 'facd', dict(ALWAYS, **{'train.feature_opt': DELETE})), fd_row(1e-2),
            facd_row(KNOB_WEIGHT), fd_row(3e-4, 'l2'), facd_row(KNOB_WEIGHT, distance='l2')]
    return [variant(row, '_it3000', ', 3000 iterations', longer) for row in rows]


# The history negative pool (issue 32): an EMA copy of the student and its adapters, run without gradients on
# num_degraded noisy copies of each LR patch (Gaussian noise, sigma drawn from noise_sigma on the 0-255 scale) and on
# the clean patch; its adapted features are the negatives of that patch (DCKD's defaults, carried into the feature
# domain). The lead's code reads these keys.
HISTORY = {'decay': 0.999, 'num_degraded': 4, 'noise_sigma': [1., 30.], 'include_clean': True}
# Weights of the x2 screen. Our ratio divides by the MEAN distance over the negatives, not the sum (DCKD's form), so
# 5 negatives instead of 15 leave its size unchanged; what moves it is how near the negatives are. Ratio-L2 at w
# pulls like FD-L2 at w / d_neg; with in-batch negatives d_neg ~ 745 at the end of an x2 run, so the shipped 0.3
# pulls like FD-L2's best, 3e-4 (docs/ablation.md section 3). History negatives are the same patch seen by the
# student's own past: `scripts/study.py --negative-distance` puts the noisy copies at d_noise / d_batch = 0.03-0.04
# of the in-batch distance (teacher taps at random init, x2 and x4; the clean copy's EMA lag comes on top). At a
# ratio r the pull of FD-L2's best needs w ~ 0.22 r, so r from 0.03 (noise alone) to about 0.45 (a large EMA lag)
# asks for 0.007-0.1: 0.01 / 0.03 / 0.1, 3x apart. At r 0.035, 0.1 / 0.3 / 1 would pull like FD-L2 at 4e-3 /
# 1e-2 / 4e-2, 13-130x FD's best (FD-L2 at 1e-2 lost 0.066 dB). Re-measure on the trained x2 teacher before the
# history rows run, and move the sweep if r falls outside 0.03-0.45.
HISTORY_WEIGHTS = (1e-2, 3e-2, 1e-1)
TEACHER_BETTER = {'mode': 'teacher_better', 'margin': 0.}


def history_row(weight: float, scale: StudyScale = TINY) -> Row:
    """Output KD + FACD ratio-L2 with ``history`` negatives (:data:`HISTORY`), gate teacher_better."""
    row = facd_row(weight, TEACHER_BETTER, suffix='_history', note=', history negatives (EMA student: 4 noisy + clean)',
                   scale=scale, distance='l2', negatives='history')
    return Row(row.key, row.label, row.base, dict(row.overrides, **{'distill.history': dict(HISTORY)}), scale)


def centred_rows() -> list:
    """FD-L2 at its best x2 weight and FACD as shipped with ``centre: true``: the feature loss compares maps after
    removing each one's per-channel spatial mean, so it never pulls on a patch's flat colour (issue 32, item 4: FD and
    FACD students render flat saturated colours worse than KD students, ``scripts/study.py --colour-probe``)."""
    centre = {'train.feature_opt.centre': True}
    return [variant(fd_row(3e-4, 'l2'), '_centred', ', centred maps', centre),
            variant(facd_row(KNOB_WEIGHT, TEACHER_BETTER, distance='l2'), '_centred', ', centred maps', centre)]


def body_tap_rows() -> list:
    """FD-L2 at its best x2 weight on the two body taps only, without conv_after_body: that tap is the residual
    branch before EDSR's global skip, whose other input (conv_first) differs between student and teacher, so
    matching it may leave the student's colour to be repaired after the skip (issue 32, item 4)."""
    body = {'distill.teacher_taps': ['body.3', 'body.7'], 'distill.student_taps': ['body.0', 'body.1']}
    return [variant(fd_row(3e-4, 'l2'), '_bodytaps', ', body taps only (no conv_after_body)', body)]


def no_bias_rows() -> list:
    """FD-L2 at its best x2 weight with adapters without bias: a linear adapter cannot absorb a constant offset
    between student and teacher features (issue 32, item 4, the issue's first hypothesis)."""
    return [variant(fd_row(3e-4, 'l2'), '_nobias', ', adapters without bias', {'distill.adapter.bias': False})]


def channel_permute_rows() -> list:
    """Output KD, FD-L2 at its best x2 weight and centred FACD trained on patches whose RGB channels are permuted
    (``ChannelPermutedPairedImageDataset``): do feature losses miscolour what the five training photos lack (issue 32,
    item 4: a permutation turns the retina's dark reds into dark greens)?"""
    permute = {'datasets.train.type': 'ChannelPermutedPairedImageDataset'}
    rows = [Row('kd', 'output KD', 'facd', dict(ALWAYS, **{'train.feature_opt': DELETE})), fd_row(3e-4, 'l2'),
            centred_rows()[1]]
    return [variant(row, '_chperm', ', channel-permuted patches', permute) for row in rows]


def registry() -> Dict[str, Row]:
    """Every row by key."""
    rows = baseline_rows()
    rows += [fd_row(w) for w in (1e-3, 1e-2, 1e-1, 1.)] + [fd_row(w, 'l2') for w in L2_WEIGHTS['fd']]
    rows += [fakd_row(w) for w in (1., 10.)]
    rows += [facd_row(w) for w in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1., 3.)]
    rows += [facd_row(w, distance='l2') for w in L2_WEIGHTS['facd'] if w != KNOB_WEIGHT]
    rows += [facd_row(KNOB_WEIGHT, {'mode': 'teacher_better', 'margin': 0.}, distance='l2')]  # the adopted FACD
    rows += knob_rows(KNOB_WEIGHT) + negative_rows(KNOB_WEIGHT) + ramp_rows(KNOB_WEIGHT)
    rows += tap_rows() + budget_rows() + long_rows() + [history_row(w) for w in HISTORY_WEIGHTS]
    rows += centred_rows() + body_tap_rows() + no_bias_rows() + channel_permute_rows()
    return {row.key: row for row in rows}


def _keys(rows: list) -> tuple:
    return tuple(row.key for row in rows)


# The weight at which the other FACD knobs are explored: the best ratio-l1 weight of the 'weights' group.
KNOB_WEIGHT = 3e-1
# ratio-l2 scored best in the 'knobs' group, so both l2 losses get a weight sweep (FD with the same effort; ratio-l2
# at w pulls like FD-l2 at w / d_neg, d_neg ~ 745 at the end of training, so FD-l2 3e-4 matches FACD-l2 0.3).
L2_WEIGHTS = {'fd': (3e-4, 1e-3, 1e-2), 'facd': (1e-1, 3e-1, 1.)}
GROUPS = {
    'weights': ('scratch', 'kd', 'fd_l1_w1e-3', 'fd_l1_w1e-2', 'fd_l1_w1e-1', 'fd_l1_w1e0', 'facd_l1_w1e-3_always',
                'facd_l1_w3e-3_always', 'facd_l1_w1e-2_always', 'facd_l1_w3e-2_always', 'facd_l1_w1e-1_always',
                'facd_l1_w3e-1_always', 'facd_l1_w1e0_always', 'facd_l1_w3e0_always'),
    'baselines': ('scratch', 'tinit', 'kd', 'fd_l2_w1e-2', 'fakd_w1e0', 'fakd_w1e1'),
    # teacher_better with margin 0 is left out: the teacher is better on every patch, so it is bit-identical to
    # 'always' (measured at w 1e-2: 33.6365 dB both).
    'knobs': ('scratch', 'kd', f'facd_l1_w{tag(KNOB_WEIGHT)}_always') + tuple(
        key for key in _keys(knob_rows(KNOB_WEIGHT)) if not key.endswith('_teacher_better')),
    'negatives': ('scratch', 'kd', 'fd_l1_w1e-2', f'facd_l1_w{tag(KNOB_WEIGHT)}_always',
                  f'facd_l1_w{tag(KNOB_WEIGHT)}_k1_always', f'facd_l1_w{tag(KNOB_WEIGHT)}_k4_always') + _keys(
                      negative_rows(KNOB_WEIGHT)),
    'ramp': ('scratch', 'kd', 'fd_l1_w1e-2', f'facd_l1_w{tag(KNOB_WEIGHT)}_always') + _keys(ramp_rows(KNOB_WEIGHT)),
    'l2': ('scratch', 'kd', 'fd_l1_w1e-2') + tuple(f'fd_l2_w{tag(w)}' for w in L2_WEIGHTS['fd']) + tuple(
        f'facd_l2_w{tag(w)}_always' for w in L2_WEIGHTS['facd']),
    'budget': ('scratch', 'tinit') + _keys(budget_rows()),
    'long': ('scratch_it3000', ) + _keys(long_rows()),
    'taps': ('scratch', 'kd', 'fd_l1_w1e-2', f'facd_l1_w{tag(KNOB_WEIGHT)}_always') + _keys(tap_rows()),
    # issue 32: output KD, FD-L2 at its best x2 weight, FACD as shipped, FACD with history negatives; 10 seeds.
    # Teacher-slice init is left out at x2: tinit already reaches the teacher there.
    'screen': ('kd', 'fd_l2_w3e-4', 'facd_l2_w3e-1_teacher_better') + tuple(
        f'facd_l2_w{tag(w)}_history_teacher_better' for w in HISTORY_WEIGHTS),
    # issue 32, item 4: candidate causes of the colour shift (centred maps, last tap, adapter bias, too few colours)
    'colour': ('kd', 'fd_l2_w3e-4', 'facd_l2_w3e-1_teacher_better') + _keys(centred_rows() + body_tap_rows() +
                                                                            no_bias_rows() + channel_permute_rows()),
}


# ---------------------------------------------------------------------------------------------- the x4 scale
X4_PREFIX = 'x4'
GATE_LOG = {'distill.gate_log': True}  # every distilling x4 run logs the gate's share and the teacher's advantage
# 1e-4 ... 1e-3 and 0.1 ... 1 first; on seed 0 FD fell with its weight and FACD rose with it (docs/ablation.md,
# section 10.3), so each sweep got one more value past the edge it was best at (3e-5, 3)
# FACD 10 was added once every other row had 3 seeds: FACD's select PSNR still rose at the sweep's upper end (3).
X4_WEIGHTS = {'fd': (3e-5, 1e-4, 3e-4, 1e-3), 'facd': (1e-1, 3e-1, 1., 3., 10.)}
SHIPPED_GATE = {'mode': 'teacher_better', 'margin': 0.}
# adaptive gates that select at this scale (docs/ablation.md, section 10). textured: min_std 27 is the median luma std
# of the 96 px training crops (27.2 over 4000 random crops of the training tiles: it keeps half the patches; chosen
# from the training data alone). advantage_ramp: width 4 dB is the 90 % quantile of the teacher's advantage in the
# last tenth of the x4 KD run, seed 0 (4.32 dB; median 1.63, 10 % 0.36): the weight grows with the advantage up to
# the patches where the teacher leads most
X4_GATES = ({'mode': 'advantage_ramp', 'margin': 0., 'width': 4.}, {'mode': 'textured', 'min_std': 27.})


# issue 32 at x4. The shipped FACD's best weight here is 10 x the x2 one (3 against 0.3, docs/ablation.md 10.7), so
# the history rows are registered at 10 x the x2 screen's weights; the confirmation runs the one at 10 x the screen's
# best: w 0.01, the least harmful of three that all lose to FD (docs/ablation.md 11.1), so 0.1 here.
X4_HISTORY_WEIGHTS = (1e-1, 3e-1, 1.)
X4_HISTORY_WEIGHT = 1e-1
# FACD on centred maps on top of teacher-slice init at weights below the w 3 chosen for students trained from
# scratch: with init, w 3 lost 0.08 dB to init + KD at seeds 0 and 1 (docs/ablation.md 11.3)
X4_INIT_WEIGHTS = (3e-1, 1.)
# The same at w 0.3 with adapters that start as the leading-channel identity (the map a student cut from the
# teacher's leading channels already fits; a random adapter pulls its features elsewhere), on three taps and on the
# last tap only (where the sliced student is closest to the teacher: relative gap 0.16 against 0.97 / 1.95 at the
# two body taps, one batch of training patches)
LEADING_IDENTITY = {'distill.adapter.leading_identity': True}
# the best FACD on top of teacher-slice init: it beats init + KD over seeds 0-4 (+0.025 [+0.019, +0.031] dB, report
# +0.047; docs/ablation.md 11.3) and is the EDSR / RCAN FACD recipe; init + centred FACD at w 3 stopped at 2 seeds
X4_INIT_FACD = 'tinit_facd_l2_w3e-1_teacher_better_centred_lead_lasttap'
# distill.init_from_teacher, as the plugin reads it: under path, BasicSR's make_exp_dirs would makedirs(True)
INIT_FROM_TEACHER = {'distill.init_from_teacher': True}


def init_row(row: Row) -> Row:
    """``row`` with the student initialised from slices of the teacher by the plugin (``distill.init_from_teacher``);
    key ``tinit_<row key>``. The older ``tinit`` row loads a sliced file instead and stays as it is."""
    return Row(f'tinit_{row.key}', f'teacher-slice init + {row.label}', row.base,
               dict(row.overrides, **INIT_FROM_TEACHER), row.scale)


def logged(row: Row) -> Row:
    return Row(row.key, row.label, row.base, dict(row.overrides, **GATE_LOG), row.scale)


def x4_registry() -> Dict[str, Row]:
    """Every row of the x4 scale by key (runs ``x4_<key>_s<seed>``)."""
    scratch, _, kd = baseline_rows(X4)  # no tensor shape is shared: the teacher-init row loads teacher slices
    tinit = Row('tinit', 'student initialised from slices of the teacher (L1 to GT)', 'scratch', {
        'path.pretrain_network_g': sliced_teacher_weights(X4),
        'path.strict_load_g': True
    }, X4)
    rows = [scratch, tinit, logged(kd)]
    rows += [logged(fd_row(w, 'l2', X4)) for w in X4_WEIGHTS['fd']]
    rows += [logged(facd_row(w, SHIPPED_GATE, scale=X4, distance='l2')) for w in X4_WEIGHTS['facd']]
    rows += [logged(facd_row(3e-1, scale=X4, distance='l2'))]  # FACD without the gate
    rows += [logged(facd_row(3e-1, gate, scale=X4, distance='l2')) for gate in X4_GATES]
    history = {w: logged(history_row(w, X4)) for w in X4_HISTORY_WEIGHTS}
    rows += list(history.values())
    facd = logged(facd_row(3., SHIPPED_GATE, scale=X4, distance='l2'))
    centred = variant(facd, '_centred', ', centred maps', {'train.feature_opt.centre': True})  # x2: 11.2
    rows += [centred]
    rows += [init_row(row) for row in (logged(kd), facd, history[X4_HISTORY_WEIGHT], centred)]
    lighter = [
        variant(logged(facd_row(w, SHIPPED_GATE, scale=X4, distance='l2')), '_centred', ', centred maps',
                {'train.feature_opt.centre': True}) for w in X4_INIT_WEIGHTS
    ]
    rows += lighter + [init_row(row) for row in lighter]
    lead = [variant(init_row(row), '_lead', ', adapters start as the leading-channel identity', LEADING_IDENTITY)
            for row in lighter]
    rows += [lead[0]] + [variant(row, '_lasttap', ', last tap only', LAST_TAP) for row in lead]
    rows += [variant(init_row(lighter[0]), '_lasttap', ', last tap only', LAST_TAP)]  # which of the two changes helps
    return {row.key: row for row in rows}


X4_GROUPS = {
    'x4_baselines': ('scratch', 'tinit', 'kd'),
    'x4_fd': ('scratch', 'kd') + tuple(f'fd_l2_w{tag(w)}' for w in X4_WEIGHTS['fd']),
    'x4_facd': ('scratch', 'kd') + tuple(f'facd_l2_w{tag(w)}_teacher_better' for w in X4_WEIGHTS['facd']) +
    ('facd_l2_w3e-1_always', ),
    'x4_gate': ('kd', 'facd_l2_w3e-1_always', 'facd_l2_w3e-1_teacher_better') + tuple(
        f'facd_l2_w3e-1_{gate_name(g)}' for g in X4_GATES),
    # issue 32: 5 seeds, all on the retrained teacher (docs/ablation.md 11.3). FACD on centred maps beat KD, FD and
    # the shipped FACD in the x2 screen (11.2), so teacher-slice init is paired with it; history with init is left
    # out: the history pool lost to plain KD at every x2 weight (11.1).
    'confirm': ('kd', 'fd_l2_w3e-5', 'facd_l2_w3e0_teacher_better', 'facd_l2_w3e0_teacher_better_centred',
                f'facd_l2_w{tag(X4_HISTORY_WEIGHT)}_history_teacher_better', 'tinit', 'tinit_kd',
                'tinit_facd_l2_w3e0_teacher_better_centred', X4_INIT_FACD),
    # the third x4 teacher (11.4): the rows that answer "does FACD beat KD / FD" at five seeds, seed-major, then the
    # history row (its own call). Init + KD against init + FACD has its five seeds on the second teacher (11.3).
    'scratch_confirm': ('kd', 'fd_l2_w3e-5', 'facd_l2_w3e0_teacher_better', 'facd_l2_w3e0_teacher_better_centred',
                        'tinit'),
    # does FACD add anything on top of teacher-slice init at a lighter weight? (11.3)
    'init_weight': ('tinit_kd', ) + tuple(f'tinit_facd_l2_w{tag(w)}_teacher_better_centred' for w in X4_INIT_WEIGHTS) +
    ('tinit_facd_l2_w3e0_teacher_better_centred', 'tinit_facd_l2_w3e-1_teacher_better_centred_lead', X4_INIT_FACD,
     'tinit_facd_l2_w3e-1_teacher_better_centred_lasttap', 'tinit_facd_l2_w1e0_teacher_better_centred_lead_lasttap'),
}
# The rows a group's table gives paired differences to when --versus is not given (scripts/study.py).
GROUP_VERSUS = {
    'screen': ('kd', 'fd_l2_w3e-4', 'facd_l2_w3e-1_teacher_better'),
    'colour': ('kd', 'fd_l2_w3e-4', 'facd_l2_w3e-1_teacher_better'),
    'confirm': ('kd', 'fd_l2_w3e-5', 'facd_l2_w3e0_teacher_better', 'tinit', 'tinit_kd'),
    'scratch_confirm': ('kd', 'fd_l2_w3e-5', 'facd_l2_w3e0_teacher_better'),
    'init_weight': ('tinit_kd', ),
}
