"""FACDModel: BasicSR's SRModel trained with a frozen teacher by output KD and feature-domain distillation.

Paper: Moon et al., "Feature-domain Adaptive Contrastive Distillation for Efficient Single Image Super-Resolution",
IEEE Access 2023 (arXiv 2211.15951). What we implement and which parts are our reading: ../README.md and METHOD.md.

Options (besides SRModel's)::

    network_t: {type: RCAN, num_feat: 64, num_group: 10, num_block: 20, upscale: 4, ...}   # teacher
    path: {pretrain_network_t: ..., param_key_t: params, strict_load_t: true}
    distill:
      teacher_taps: [body.2, body.6, conv_after_body]     # module paths, hooked
      student_taps: [body.2, body.6, conv_after_body]
      adapter: {type: FACDAdapter, kind: conv1x1}         # channels come from a dry run
      gate: {mode: teacher_better, margin: 0.0}           # or top_fraction, advantage_ramp, textured, always
      gate_log: false                                     # true: gate_log.csv, share kept + advantage per iter
      teacher_check: true                                 # teacher must beat bicubic on the first val images
      feature_ramp_iters: 0                               # feature-loss weight x min(1, iter / N); 0 = off
      init_from_teacher: false                            # student starts from slices of the teacher (EDSR, RCAN)
      history: {decay: 0.999, num_degraded: 4}            # with feature_opt negatives: history (EMA student pool)
    train:
      pixel_opt: {type: L1Loss, loss_weight: 0.5}         # student vs ground truth
      perceptual_opt: ~                                   # optional, used as SRModel uses it (student vs GT)
      kd_opt: {type: L1Loss, loss_weight: 0.5}            # student vs teacher output, gated
      feature_opt: {type: FACDContrastiveLoss, loss_weight: 0.3}    # gated
      amp: ~                     # student: ~ | bf16 | fp16 (grad scaler); also channels_last, compile, tf32,
                                 # grad_clip_norm, grad_scaler: see facd_basicsr/host/student_runtime.py
"""
import os.path as osp
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from typing import Dict, Optional

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from facd_basicsr.archs.facd_adapter_arch import FACDAdapterBank
from facd_basicsr.distill.degrade import bicubic_round_trip
from facd_basicsr.distill.feature_taps import FeatureTaps
from facd_basicsr.distill.gate import AdaptiveGate, gate_options
from facd_basicsr.distill.gate_log import GateLog, advantage_quantiles
from facd_basicsr.distill.history import HistoryPool, history_options
from facd_basicsr.distill.teacher_init import sliced_state
from facd_basicsr.distill.teacher_runtime import TeacherRunner
from facd_basicsr.host.checkpoint import (CheckpointWriteError, atomic_torch_save, fingerprint, load_strictly,
                                          network_state, read_state_dict, safe_torch_load)
from facd_basicsr.host.data_order import TRACKER, preserved_rng
from facd_basicsr.host.nonfinite import check_finite_state, check_step, check_weights, newest_checkpoint
from facd_basicsr.host.resume import read_training_state
from facd_basicsr.host.student_runtime import StudentRuntime, channels_last_option
from facd_basicsr.host.train_options import check_training_options, nonfinite_mode
from facd_basicsr.losses.feature_loss_base import check_feature_loss
from facd_basicsr.registry import register_once

DISTILL_KEYS = ('teacher_taps', 'student_taps', 'adapter', 'gate', 'teacher_check', 'teacher_check_images',
                'dry_run_size', 'teacher_amp', 'teacher_channels_last', 'teacher_compile', 'teacher_fp32_modules',
                'feature_ramp_iters', 'gate_log', 'init_from_teacher', 'history')
DEFAULT_ADAPTER = {'type': 'FACDAdapter', 'kind': 'conv1x1'}


def distill_options(opt: dict) -> dict:
    """``opt['distill']`` with unknown keys rejected (a typo must not silently fall back to a default)."""
    distill = opt.get('distill') or {}
    unknown = sorted(set(distill) - set(DISTILL_KEYS))
    if unknown:
        raise KeyError(f'distill: unknown option(s) {unknown}. Known: {", ".join(DISTILL_KEYS)}')
    ramp = distill.get('feature_ramp_iters', 0)
    if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
        raise ValueError(f'distill.feature_ramp_iters must be an integer >= 0 (0 = no ramp), got {ramp!r}')
    init = distill.get('init_from_teacher', False)
    if not isinstance(init, bool):
        raise ValueError(f'distill.init_from_teacher must be true or false, got {init!r}')
    if init and (opt.get('path') or {}).get('pretrain_network_g'):
        raise ValueError('distill.init_from_teacher and path.pretrain_network_g both set the student\'s first '
                         'weights: keep one of them')
    return distill


def ramp_factor(current_iter: int, ramp_iters: int) -> float:
    """Linear warm-up of the feature term: ``min(1, current_iter / ramp_iters)``; 1 when ``ramp_iters`` is 0.

    BasicSR counts iterations from 1, so the first step already gets ``1 / ramp_iters``.
    """
    return 1.0 if ramp_iters <= 0 else min(1.0, current_iter / ramp_iters)


@register_once(MODEL_REGISTRY)
class FACDModel(SRModel):
    """SRModel whose student learns from a frozen teacher: pixel + gated output KD + gated feature loss.

    The teacher is built only in training (test option files need no ``network_t``), moved to the device without
    DDP, frozen, run without autograd, never saved. DR adapters are trained with the student and saved to
    ``models/net_adapter_<iter>.pth`` together with the teacher's identity, which a resume uses to reload exactly
    the same teacher whatever BasicSR's ``check_resume`` did to ``path.pretrain_network_t`` / ``param_key_t``.
    The saved ``net_g`` is a plain BasicSR network.
    """

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self) -> None:
        self.distill_opt = distill_options(self.opt)
        check_training_options(self.opt)  # gt_size vs scale, loss weights >= 0, train.nonfinite
        train_opt = self.opt['train']
        self.nonfinite_mode = nonfinite_mode(train_opt)
        self.cri_kd = build_loss(train_opt['kd_opt']).to(self.device) if train_opt.get('kd_opt') else None
        self.cri_feat = None
        if train_opt.get('feature_opt'):  # a FeatureLoss: uses_adapter, needs_degraded_features, validate_batch_size
            self.cri_feat = check_feature_loss(build_loss(train_opt['feature_opt'])).to(self.device)
        gate_log = self.distill_opt.get('gate_log', False)
        self.gate = AdaptiveGate(**gate_options(self.distill_opt.get('gate')), track_advantage=bool(gate_log))
        self.gate_log = GateLog(osp.join(self.opt['path']['log'], 'gate_log.csv')) if gate_log and self.opt.get(
            'rank', 0) == 0 else None
        self.student_runtime = StudentRuntime(train_opt, self.device)  # train.amp, compile, ...: checked here
        self.student_runtime.prepare_feature_loss(self.cri_feat)  # train.compile_feature_loss
        resume = self._read_resume_record()
        self.net_t = self._build_teacher(resume.get('teacher'))
        if self.distill_opt.get('init_from_teacher', False) and not resume:
            self._init_student_from_teacher()
        self.run_teacher = TeacherRunner(
            self.net_t,
            amp=self.distill_opt.get('teacher_amp'),
            channels_last=self.distill_opt.get('teacher_channels_last', False),
            compile=self.distill_opt.get('teacher_compile', False),
            fp32_modules=self.distill_opt.get('teacher_fp32_modules') or ())
        self.teacher_taps = self.student_taps = None
        self.net_adapter = None
        if self.cri_feat is not None:
            self._build_taps_and_adapters()
            self.cri_feat.validate_batch_size(self._batch_size())
            if self.cri_feat.needs_degraded_features and int(self.opt.get('scale', 1)) < 2:
                raise ValueError(f'train.feature_opt negatives: degraded needs scale >= 2 (a bicubic round trip by '
                                 f'the scale), got scale {self.opt.get("scale")}')
        else:
            self._dry_run()
        self.history = self._build_history()
        if resume.get('params') is not None and self.net_adapter is not None:
            load_strictly(self.get_bare_model(self.net_adapter), resume['params'], True, 'net_adapter (resume)')
        if resume and self.history is not None:
            self._load_history(resume['iter'])
        self.student_runtime.load_state_dict(resume.get('student_runtime'))  # the fp16 grad scaler
        if self.distill_opt.get('teacher_check', True) and not resume:
            self._check_teacher()
        super().init_training_settings()

    def _read_resume_record(self) -> dict:
        """``{'teacher': ..., 'params': ...}`` saved next to the checkpoint being resumed; {} when not resuming."""
        state_path = self.opt['path'].get('resume_state')
        if not state_path:
            return {}
        resume_iter = read_training_state(state_path)['iter']
        record_path = osp.join(self.opt['path']['models'], f'net_adapter_{resume_iter}.pth')
        if not osp.isfile(record_path):
            raise FileNotFoundError(f'cannot resume FACD from {state_path}: {record_path} (adapters and teacher '
                                    'identity) is missing')
        record = safe_torch_load(record_path, f'the checkpoint of {state_path}', 'adapter record')
        TRACKER.schedule(record.get('data_order'), restore_rng=self.opt.get('world_size', 1) == 1)
        return dict(record, iter=resume_iter)

    def _init_student_from_teacher(self) -> None:
        """``distill.init_from_teacher``: the student's weights become slices of the teacher's (teacher_init.py)."""
        net_g = self.get_bare_model(self.net_g)
        state = sliced_state(self.net_t.state_dict(), net_g.state_dict(), self.opt['network_g'], self.opt['network_t'])
        load_strictly(net_g, state, True, 'distill.init_from_teacher')
        get_root_logger().info('Student initialised from slices of the teacher (distill.init_from_teacher).')

    def _build_history(self) -> Optional[HistoryPool]:
        """The EMA history pool when ``train.feature_opt`` takes ``negatives: history``; else None."""
        wants = self.cri_feat is not None and getattr(self.cri_feat, 'needs_history_features', False)
        if not wants:
            if self.distill_opt.get('history') is not None:
                raise ValueError('distill.history is set, but train.feature_opt does not use negatives: history')
            return None
        options = history_options(self.distill_opt.get('history'))
        adapter = None if self.net_adapter is None else self.get_bare_model(self.net_adapter)
        pool = HistoryPool(self.get_bare_model(self.net_g), adapter, self._tap_paths()[1], **options)
        return pool.to(self.device)

    def _load_history(self, resume_iter: int) -> None:
        path = osp.join(self.opt['path']['models'], f'net_history_{resume_iter}.pth')
        state = read_state_dict(path, 'params', 'the history pool (resume)')
        load_strictly(self.history, state, True, 'net_history (resume)')

    def _build_teacher(self, record: Optional[dict]) -> torch.nn.Module:
        if 'network_t' not in self.opt:
            raise KeyError('FACDModel needs network_t (the teacher architecture) in the option file')
        path_opt = self.opt['path']
        if record is None:
            record = {
                'path': path_opt.get('pretrain_network_t'),
                'param_key': path_opt.get('param_key_t', 'params'),
                'strict': path_opt.get('strict_load_t', True)
            }
        net_t = build_network(self.opt['network_t'])
        state = read_state_dict(record['path'], record['param_key'], 'path.pretrain_network_t')
        check_finite_state(state, record['path'], 'path.pretrain_network_t')
        load_strictly(net_t, state, record['strict'], 'path.pretrain_network_t')
        weights_id = fingerprint(net_t)
        if record.get('sha256', weights_id) != weights_id:
            raise ValueError(f'the teacher file {record["path"]} changed since this experiment started: its weights '
                             'differ from the ones the saved students were distilled from')
        self.teacher_record = dict(record, sha256=weights_id)
        get_root_logger().info(f'Teacher {type(net_t).__name__} loaded from {record["path"]} '
                               f'[{record["param_key"]}], weights sha256 {weights_id[:12]}')
        net_t = net_t.to(self.device).eval().requires_grad_(False)
        return net_t

    def _batch_size(self) -> int:
        train_set = self.opt.get('datasets', {}).get('train', {})
        return int(train_set.get('batch_size_per_gpu', 2))

    def _tap_paths(self) -> tuple:
        teacher = list(self.distill_opt.get('teacher_taps') or [])
        student = list(self.distill_opt.get('student_taps') or [])
        if not teacher or not student:
            raise KeyError('train.feature_opt is set, so distill.teacher_taps and distill.student_taps are needed')
        if len(teacher) != len(student):
            raise ValueError(f'distill.teacher_taps has {len(teacher)} paths but distill.student_taps has '
                             f'{len(student)}: they pair up one to one')
        return teacher, student

    def _build_taps_and_adapters(self) -> None:
        teacher_paths, student_paths = self._tap_paths()
        # a compiled teacher traces its hooks when it compiles: they must be there from the start
        self.teacher_taps = FeatureTaps(self.net_t, teacher_paths, 'distill.teacher_taps',
                                        persistent=bool(self.distill_opt.get('teacher_compile', False)))
        self.student_taps = FeatureTaps(self.get_bare_model(self.net_g), student_paths, 'distill.student_taps',
                                        persistent=self.student_runtime.compiled)
        feats_t, feats_s = self._dry_run()
        for j, (ft, fs) in enumerate(zip(feats_t, feats_s)):
            if ft.shape[-2:] != fs.shape[-2:]:
                raise ValueError(f'tap {j}: teacher {teacher_paths[j]} gives {tuple(ft.shape[-2:])} maps but student '
                                 f'{student_paths[j]} gives {tuple(fs.shape[-2:])}; taps must share a spatial size')
        if not self.cri_feat.uses_adapter:
            return
        adapter_opt = dict(self.distill_opt.get('adapter') or DEFAULT_ADAPTER)
        adapters = []
        for ft, fs in zip(feats_t, feats_s):
            adapters.append(build_network(dict(adapter_opt, in_channels=fs.shape[1], out_channels=ft.shape[1])))
        self.net_adapter = self.model_to_device(FACDAdapterBank(adapters))
        self.net_adapter.train()

    @torch.no_grad()
    def _dry_run(self) -> tuple:
        """Run teacher and student once on a small random input: check scales, return the tapped maps."""
        size = int(self.distill_opt.get('dry_run_size', 16))
        num_in_ch = int(self.opt['network_g'].get('num_in_ch', 3))
        lq = torch.rand(2, num_in_ch, size, size, device=self.device)
        net_g = self.get_bare_model(self.net_g)
        was_training = net_g.training
        net_g.eval()
        with self._recording():
            out_t, out_s = self.net_t(lq), net_g(lq)
            feats = (self.teacher_taps.pop(), self.student_taps.pop()) if self.teacher_taps else ((), ())
        net_g.train(was_training)
        self._compare_scales(out_t.shape[-1] / size, out_s.shape[-1] / size)
        return feats

    def _compare_scales(self, teacher_scale: float, student_scale: float) -> None:
        expected = self.opt.get('scale')
        if teacher_scale != student_scale:
            raise ValueError(f'teacher and student scales differ: network_t upscales x{teacher_scale:g}, '
                             f'network_g x{student_scale:g}')
        if expected is not None and student_scale != expected:
            raise ValueError(f'network_g and network_t upscale x{student_scale:g} but the option scale is {expected}')

    def _check_teacher(self) -> None:
        from facd_basicsr.distill.teacher_check import check_teacher
        check_teacher(self.net_t, self.opt, num_images=int(self.distill_opt.get('teacher_check_images', 2)))

    def setup_optimizers(self) -> None:
        """One optimizer over the student and the adapters (adapters get the student's learning rate)."""
        train_opt = self.opt['train']
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        if self.net_adapter is not None:
            params += list(self.net_adapter.parameters())
        optim_opt = dict(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    # ------------------------------------------------------------------ training step
    @contextmanager
    def _recording(self):
        """Record the taps' maps in the forward passes inside; the taps' hooks exist only there (unless persistent)."""
        with ExitStack() as stack:
            for taps in (self.teacher_taps, self.student_taps):
                if taps is not None:
                    stack.enter_context(taps)
            yield

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad()
        with self._recording():
            sr_t = self.run_teacher(self.lq)  # no autograd, float32 out
            self.output = self.student_runtime.forward(self.net_g, self.lq)  # float32 out, autocast inside
        loss_dict = OrderedDict()
        l_total = self.cri_pix(self.output, self.gt) if self.cri_pix else self.output.new_zeros(())
        loss_dict['l_pix'] = l_total.detach() if self.cri_pix else None
        if self.cri_perceptual:  # as SRModel: perceptual and style terms of the student against the ground truth
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for key, term in (('l_percep', l_percep), ('l_style', l_style)):
                if term is not None:
                    l_total = l_total + term
                    loss_dict[key] = term
        gate = self.gate(self.output, sr_t, self.gt)
        loss_dict['gate_on'] = gate.mean()
        if self.gate.advantage is not None:
            quantiles = advantage_quantiles(self.gate.advantage)  # stays on the device: the log reduces it
            loss_dict.update((f'gate_adv_p{q}', value) for q, value in zip((10, 50, 90), quantiles))
        if self.gate_log is not None:
            self.gate_log.write(current_iter, gate, self.gate.advantage)
        if self.cri_kd is not None:
            l_kd = self._kd_loss(sr_t, gate)
            l_total = l_total + l_kd
            loss_dict['l_kd'] = l_kd
        if self.cri_feat is not None:
            l_feat, terms = self._feature_loss(gate)
            ramp = ramp_factor(current_iter, self.distill_opt.get('feature_ramp_iters', 0))
            if ramp < 1.0:
                l_feat = l_feat * ramp
                loss_dict['feat_ramp'] = l_feat.new_tensor(ramp)
            l_total = l_total + l_feat
            loss_dict['l_feat'] = l_feat
            loss_dict.update(terms)
        if self._skip_nonfinite(loss_dict, l_total, current_iter):  # NaN / Inf: stop, or skip (train.nonfinite)
            return
        grad_norm = self.student_runtime.backward_and_step(l_total, self.optimizer_g)  # scaler, clipping
        if grad_norm is not None:
            loss_dict['grad_norm'] = grad_norm.detach()
        if self.student_runtime.scaler is not None:
            loss_dict['amp_scale'] = l_total.new_tensor(self.student_runtime.scale)
        self.log_dict = self.reduce_loss_dict(OrderedDict((k, v) for k, v in loss_dict.items() if v is not None))
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        if self.history is not None:
            adapter = None if self.net_adapter is None else self.get_bare_model(self.net_adapter)
            self.history.update(self.get_bare_model(self.net_g), adapter)

    def _kd_loss(self, sr_t: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Gated output KD: with L1/MSE criteria, masking both sides gives (1/N) sum_i g_i L(SR^S_i, SR^T_i).

        For a soft gate (``advantage_ramp``) this holds for L1; under MSE the weight enters squared (g_i^2).

        Gated-out patches are multiplied by zero, never skipped: every parameter then gets a gradient each step, which
        DDP needs (no find_unused_parameters), even when a rank's gate is all zero.
        """
        if self.gate.always_on:
            return self.cri_kd(self.output, sr_t)
        mask = gate.view(-1, 1, 1, 1)
        return self.cri_kd(self.output * mask, sr_t * mask)

    def _feature_loss(self, gate: torch.Tensor) -> tuple:
        feats_t = self.teacher_taps.pop()
        feats_s = self.student_taps.pop()
        if self.net_adapter is not None:
            feats_s = self.net_adapter(feats_s)
        negatives = None
        if self.cri_feat.needs_degraded_features:
            negatives = self._degraded_teacher_features()
        elif self.history is not None:
            negatives = self.history.negatives(self.lq)
        l_feat, terms = self.cri_feat(feats_s, feats_t, weight=None if self.gate.always_on else gate,
                                      negative_feats=negatives)
        renamed: Dict[str, torch.Tensor] = OrderedDict()
        for key, value in terms.items():
            renamed[f'l_feat_{key}' if key.startswith('tap') else key] = value
        return l_feat, renamed

    def _degraded_teacher_features(self) -> list:
        """Teacher tap maps of the LR batch after a bicubic round trip by the scale: one more no-grad teacher pass."""
        with self.teacher_taps:
            self.run_teacher(bicubic_round_trip(self.lq, int(self.opt['scale'])))
        return self.teacher_taps.pop()

    def feed_data(self, data: dict) -> None:
        """SRModel's, keeping the batch's ``lq_path`` / ``gt_path`` (files or LMDB keys) for error messages."""
        self.batch_keys = {key: data[key] for key in ('lq_path', 'gt_path') if key in data}
        super().feed_data(data)

    def _skip_nonfinite(self, loss_dict: dict, l_total: torch.Tensor, current_iter: int) -> bool:
        """True when a loss term is NaN / Inf and ``train.nonfinite`` is ``skip``; raises when it is ``stop``."""
        return check_step(loss_dict, l_total, current_iter, self.nonfinite_mode, getattr(self, 'batch_keys', {}),
                          self.opt, output=self.output)

    def validation(self, dataloader, current_iter: int, tb_logger, save_img: bool) -> None:
        """SRModel's, with the random states restored after it: validating does not change the training's batches."""
        with preserved_rng():
            super().validation(dataloader, current_iter, tb_logger, save_img)

    # ------------------------------------------------------------------ checkpoints
    def load_network(self, net, load_path: str, strict: bool = True, param_key='params') -> None:
        """BasicSR's ``load_network`` (student, EMA), after a safe read whose errors name the file and the option."""
        safe_torch_load(load_path, 'path.pretrain_network_g', 'student checkpoint')
        super().load_network(net, load_path, strict, param_key)

    def save(self, epoch: int, current_iter: int) -> None:
        """Adapters and teacher identity, then net_g (+ EMA), then the training state: the ``.state`` last.

        Each file is written atomically (a resume trusts a checkpoint by its ``.state``, so a killed run resumes from
        the last complete one); nothing is written when a weight is not finite; a failed write (full disk) stops the
        run with a message naming the file and the newest complete checkpoint.
        """
        nets = {'net_g': self.net_g, 'net_adapter': self.net_adapter, 'net_g_ema': getattr(self, 'net_g_ema', None)}
        check_weights({k: self.get_bare_model(v) for k, v in nets.items() if v is not None}, current_iter, self.opt)
        previous = newest_checkpoint(self.opt)
        try:
            self._save_adapters(current_iter)
            if self.history is not None:
                self.save_network(self.history, 'net_history', current_iter)
            super().save(epoch, current_iter)
        except CheckpointWriteError as err:
            raise CheckpointWriteError(err.errno, f'{err.strerror}. Training stopped; the newest complete checkpoint '
                                       f'is {previous}: free space, then resume with --auto_resume') from None

    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """BasicSR's ``save_network`` written atomically; a failed write raises (BasicSR logs it and goes on)."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        label = 'latest' if current_iter == -1 else current_iter
        atomic_torch_save({key: network_state(self.get_bare_model(n)) for n, key in zip(nets, keys)},
                          osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'), 'network')

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's ``save_training_state`` (none for the final 'latest' save), written atomically."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                          'training state')

    def _save_adapters(self, current_iter: int) -> None:
        if self.opt.get('rank', 0) != 0:
            return
        label = 'latest' if current_iter == -1 else current_iter
        params = {} if self.net_adapter is None else self.get_bare_model(self.net_adapter).state_dict()
        record = {'params': {k: v.detach().cpu() for k, v in params.items()}, 'teacher': self.teacher_record,
                  'student_runtime': self.student_runtime.state_dict(), 'data_order': TRACKER.snapshot()}
        path = osp.join(self.opt['path']['models'], f'net_adapter_{label}.pth')
        atomic_torch_save(record, path, 'adapter record')  # never a half-written file that a resume would trust

    # ------------------------------------------------------------------ devices
    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """BasicSR's ``model_to_device``, except that under ``opt['dist']`` DDP gets no ``device_ids`` on the CPU.

        BasicSR always passes ``device_ids=[torch.cuda.current_device()]``, which fails without CUDA (gloo runs).
        Used for the student and the adapter bank; the teacher is never given to it. With ``train.channels_last``
        they are converted to channels-last first (before DDP sees their parameters).
        """
        if self.is_train and channels_last_option(self.opt.get('train')):
            net = net.to(memory_format=torch.channels_last)
        if not self.opt['dist']:
            return super().model_to_device(net)
        from facd_basicsr.host.dist import wrap_ddp
        return wrap_ddp(net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False))
