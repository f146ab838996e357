"""Published PSNR figures (dB, Y channel, crop = scale) that ``facd-eval`` prints beside matching runs.

Source: the table "Published figures to compare against" of docs/method.md — RCAN 10x6 student
distilled from the RCAN 10x20 teacher (FAKD protocol). Rows marked "FAKD paper" come from the FAKD paper,
"aggregator listing" rows (LSFD, FACD) from a results listing, not from the FACD paper itself.
"""
from typing import Any, Dict, List, Optional, Tuple

# (Set5 x2, x3, x4, Urban100 x2, x3, x4) per row, in this order.
_COLUMNS = (('Set5', 2), ('Set5', 3), ('Set5', 4), ('Urban100', 2), ('Urban100', 3), ('Urban100', 4))
_ROWS = (
    ('teacher', 'teacher (FAKD paper)', (38.271, 34.758, 32.638, 33.176, 29.014, 26.748)),
    ('student', 'student, no KD (FAKD paper)', (38.074, 34.557, 32.321, 32.317, 28.482, 26.340)),
    ('student', 'FAKD (FAKD paper)', (38.164, 34.653, 32.462, 32.533, 28.523, 26.422)),
    ('student', 'LSFD (aggregator listing)', (38.189, 34.666, 32.497, 32.704, 28.689, 26.547)),
    ('student', 'FACD (aggregator listing)', (38.242, 34.729, 32.540, 32.878, 28.818, 26.606)),
)
PUBLISHED_PSNR: Dict[str, Dict[Tuple[str, int], float]] = {
    label: dict(zip(_COLUMNS, values))
    for _, label, values in _ROWS
}

# Architecture options that identify the published networks (all other options as BasicSR's defaults / docs/method.md).
ROLE_ARCHS = {
    'teacher': {
        'type': 'RCAN',
        'num_feat': 64,
        'num_group': 10,
        'num_block': 20
    },
    'student': {
        'type': 'RCAN',
        'num_feat': 64,
        'num_group': 10,
        'num_block': 6
    },
}


def published_role(arch_opt: Dict[str, Any], scale: int) -> Optional[str]:
    """``'teacher'``, ``'student'`` or None: which published RCAN network ``arch_opt`` is, at ``scale``.

    Args:
        arch_opt (dict): architecture options with the constructor defaults filled in (``full_arch_opt``).
        scale (int): the evaluated up-scaling factor; must equal ``arch_opt['upscale']``.
    """
    if scale not in (2, 3, 4) or arch_opt.get('upscale') != scale:
        return None
    for role, wanted in ROLE_ARCHS.items():
        if all(arch_opt.get(key) == value for key, value in wanted.items()):
            return role
    return None


def canonical_set(name: str) -> Optional[str]:
    """``'Set5'`` or ``'Urban100'`` for a benchmark folder name matching one of them (case-insensitive)."""
    for known in ('Set5', 'Urban100'):
        if name.lower() == known.lower():
            return known
    return None


def published_rows(arch_opt: Dict[str, Any], scale: int, set_names: List[str]) -> List[Tuple[str, Dict[str, float]]]:
    """Published PSNR rows to print beside a run, or ``[]`` when the configuration matches none.

    A student run gets every row (the teacher row as the upper reference); a teacher run gets the teacher row.

    Args:
        arch_opt (dict): full architecture options of the evaluated network.
        scale (int): up-scaling factor.
        set_names (list[str]): benchmark set names of the run (folder names).

    Returns:
        list: ``(row label, {set name as given: PSNR dB})`` for the sets with a published figure.
    """
    role = published_role(arch_opt, scale)
    sets = [(name, canonical_set(name)) for name in set_names]
    sets = [(name, known) for name, known in sets if known is not None]
    if role is None or not sets:
        return []
    rows = []
    for row_role, label, _ in _ROWS:
        if role == 'student' or row_role == 'teacher':
            rows.append((label, {name: PUBLISHED_PSNR[label][(known, scale)] for name, known in sets}))
    return rows
