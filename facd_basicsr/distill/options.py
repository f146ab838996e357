"""Every ``distill:`` key of a FACD option file: its default, its type check, read once at start-up.

A bad value is one error naming the key; booleans must be YAML booleans (``'false'``, a string, is refused, not read
as true); an unknown key is refused with the close matches. FACDModel reads the options through
:class:`DistillOptions` only.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from facd_basicsr.distill.gate import gate_options
from facd_basicsr.distill.history import history_options
from facd_basicsr.distill.teacher_runtime import check_teacher_options
from facd_basicsr.host.startup import unknown_key_error

DEFAULT_ADAPTER = {'type': 'FACDAdapter', 'kind': 'conv1x1'}
BOOLEAN_KEYS = ('teacher_check', 'gate_log', 'init_from_teacher', 'teacher_channels_last', 'teacher_compile')
COUNT_KEYS = {'teacher_check_images': 1, 'dry_run_size': 1, 'feature_ramp_iters': 0}  # key -> minimum
KNOWN_KEYS = ('teacher_taps', 'student_taps', 'adapter', 'gate', 'gate_log', 'teacher_check', 'teacher_check_images',
              'dry_run_size', 'teacher_amp', 'teacher_channels_last', 'teacher_compile', 'teacher_fp32_modules',
              'feature_ramp_iters', 'init_from_teacher', 'history')


def _boolean(distill: dict, key: str, default: bool) -> bool:
    value = distill.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f'distill.{key} must be true or false, got {value!r}')
    return value


def _count(distill: dict, key: str, default: int) -> int:
    value = distill.get(key, default)
    minimum = COUNT_KEYS[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'distill.{key} must be an integer >= {minimum}, got {value!r}')
    return value


def _paths(distill: dict, key: str) -> List[str]:
    value = distill.get(key) or []
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValueError(f'distill.{key} must be a list of module paths, got {value!r}')
    return list(value)


@dataclass
class DistillOptions:
    """The ``distill:`` section, checked. Build it with :meth:`from_opt`."""

    teacher_taps: List[str] = field(default_factory=list)
    student_taps: List[str] = field(default_factory=list)
    adapter: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ADAPTER))
    gate: Dict[str, Any] = field(default_factory=lambda: gate_options(None))
    gate_log: bool = False
    teacher_check: bool = True
    teacher_check_images: int = 2
    dry_run_size: int = 16
    teacher_runtime: Dict[str, Any] = field(default_factory=dict)  # TeacherRunner's amp, channels_last, compile, ...
    feature_ramp_iters: int = 0
    init_from_teacher: bool = False
    history: Optional[Dict[str, Any]] = None  # history_options(...) when distill.history is given

    @classmethod
    def from_opt(cls, opt: dict) -> 'DistillOptions':
        """Read and check ``opt['distill']`` (and its one cross-check with ``path``)."""
        distill = opt.get('distill') or {}
        unknown = sorted(set(distill) - set(KNOWN_KEYS))
        if unknown:
            raise KeyError(unknown_key_error('distill', unknown, KNOWN_KEYS))
        flags = {key: _boolean(distill, key, key == 'teacher_check') for key in BOOLEAN_KEYS}
        teacher_amp = distill.get('teacher_amp')
        check_teacher_options(teacher_amp, flags['teacher_channels_last'], flags['teacher_compile'])
        adapter = distill.get('adapter') or dict(DEFAULT_ADAPTER)
        if not isinstance(adapter, dict) or 'type' not in adapter:
            raise ValueError(f'distill.adapter must be a mapping with a type (e.g. {DEFAULT_ADAPTER}), got {adapter!r}')
        options = cls(
            teacher_taps=_paths(distill, 'teacher_taps'),
            student_taps=_paths(distill, 'student_taps'),
            adapter=dict(adapter),
            gate=gate_options(distill.get('gate')),
            gate_log=flags['gate_log'],
            teacher_check=flags['teacher_check'],
            teacher_check_images=_count(distill, 'teacher_check_images', 2),
            dry_run_size=_count(distill, 'dry_run_size', 16),
            teacher_runtime={'amp': teacher_amp, 'channels_last': flags['teacher_channels_last'],
                             'compile': flags['teacher_compile'],
                             'fp32_modules': _paths(distill, 'teacher_fp32_modules')},
            feature_ramp_iters=_count(distill, 'feature_ramp_iters', 0),
            init_from_teacher=flags['init_from_teacher'],
            history=None if distill.get('history') is None else history_options(distill['history']),
        )
        path = opt.get('path') or {}
        # on resume BasicSR's check_resume points pretrain_network_g at the run's own checkpoint: not a second start
        if options.init_from_teacher and path.get('pretrain_network_g') and not path.get('resume_state'):
            raise ValueError('distill.init_from_teacher and path.pretrain_network_g both set the student\'s first '
                             'weights: keep one of them')
        return options

    def check_against_feature_loss(self, feature_loss, opt: dict) -> None:
        """The keys that depend on ``train.feature_opt``: taps (needed and paired), history (used), negatives."""
        if feature_loss is None:
            if self.history is not None:
                raise ValueError('distill.history is set, but there is no train.feature_opt to use it')
            return
        if not self.teacher_taps or not self.student_taps:
            raise KeyError('train.feature_opt is set, so distill.teacher_taps and distill.student_taps are needed')
        if len(self.teacher_taps) != len(self.student_taps):
            raise ValueError(f'distill.teacher_taps has {len(self.teacher_taps)} paths but distill.student_taps has '
                             f'{len(self.student_taps)}: they pair up one to one')
        wants_history = getattr(feature_loss, 'needs_history_features', False)
        if self.history is not None and not wants_history:
            raise ValueError('distill.history is set, but train.feature_opt does not use negatives: history')
        if wants_history and self.history is None:
            self.history = history_options(None)
        if getattr(feature_loss, 'needs_degraded_features', False) and int(opt.get('scale', 1)) < 2:
            raise ValueError(f'train.feature_opt negatives: degraded needs scale >= 2 (a bicubic round trip by the '
                             f'scale), got scale {opt.get("scale")}')
