"""FACDModel: a student trained with a frozen teacher by output KD and feature-domain distillation.

It extends :class:`~facd_basicsr.models.robust_sr_model.RobustSRModel` (safe checkpoints, exact resume, non-finite
guards, student runtime options) with distillation only: teacher, taps, adapters, gate, history pool, KD and
feature terms.

Paper: Moon et al., "Feature-domain Adaptive Contrastive Distillation for Efficient Single Image Super-Resolution",
IEEE Access 2023 (arXiv 2211.15951). What we implement and which parts are our reading: docs/method.md.

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
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from facd_basicsr.archs.facd_adapter_arch import FACDAdapterBank
from facd_basicsr.distill.degrade import bicubic_round_trip
from facd_basicsr.distill.feature_taps import FeatureTaps
from facd_basicsr.distill.gate import AdaptiveGate
from facd_basicsr.distill.gate_log import GateLog, advantage_quantiles
from facd_basicsr.distill.history import HistoryPool
from facd_basicsr.distill.options import DistillOptions
from facd_basicsr.distill.teacher_init import sliced_state
from facd_basicsr.distill.teacher_runtime import TeacherRunner
from facd_basicsr.host.checkpoint import fingerprint, load_strictly, read_state_dict, safe_torch_load
from facd_basicsr.host.nonfinite import check_finite_state
from facd_basicsr.losses.feature_loss_base import check_feature_loss
from facd_basicsr.models.robust_sr_model import RobustSRModel
from facd_basicsr.registry import register_once


def ramp_factor(current_iter: int, ramp_iters: int) -> float:
    """Linear warm-up of the feature term: ``min(1, current_iter / ramp_iters)``; 1 when ``ramp_iters`` is 0.

    BasicSR counts iterations from 1, so the first step already gets ``1 / ramp_iters``.
    """
    return 1.0 if ramp_iters <= 0 else min(1.0, current_iter / ramp_iters)


@register_once(MODEL_REGISTRY)
class FACDModel(RobustSRModel):
    """RobustSRModel whose student learns from a frozen teacher: pixel + gated output KD + gated feature loss.

    The teacher is built only in training (test option files need no ``network_t``), moved to the device without
    DDP, frozen, run without autograd, never saved. DR adapters are trained with the student and saved to
    ``models/net_adapter_<iter>.pth``; the ``history`` pool (EMA of student + adapters) to ``net_history_<iter>.pth``.
    The teacher's identity travels in ``<iter>.state``: a resume reloads exactly the same teacher whatever BasicSR's
    ``check_resume`` did to ``path.pretrain_network_t`` / ``param_key_t``. The saved ``net_g`` is a plain BasicSR
    network.
    """

    # ------------------------------------------------------------------ set-up
    def setup_extra_training(self) -> None:
        """Teacher, student initialisation, criteria, gate, taps, adapters and history: before the optimizer."""
        self.distill = DistillOptions.from_opt(self.opt)  # every distill: key, checked once
        train_opt = self.opt['train']
        self.cri_kd = build_loss(train_opt['kd_opt']).to(self.device) if train_opt.get('kd_opt') else None
        self.cri_feat = None
        if train_opt.get('feature_opt'):  # a FeatureLoss: uses_adapter, needs_*_features, validate_batch_size
            self.cri_feat = check_feature_loss(build_loss(train_opt['feature_opt'])).to(self.device)
        self.distill.check_against_feature_loss(self.cri_feat, self.opt)
        self.gate = AdaptiveGate(**self.distill.gate, track_advantage=self.distill.gate_log)
        log_gate = self.distill.gate_log and self.opt.get('rank', 0) == 0
        self.gate_log = GateLog(osp.join(self.opt['path']['log'], 'gate_log.csv')) if log_gate else None
        self.student_runtime.prepare_feature_loss(self.cri_feat)  # train.compile_feature_loss
        self.net_t = self._build_teacher(self.resume_record.get('teacher'))
        self.run_teacher = TeacherRunner(self.net_t, **self.distill.teacher_runtime)
        if self.distill.init_from_teacher and not self.resume_record:
            self._init_student_from_teacher()
        self.teacher_taps = self.student_taps = None
        self.net_adapter = None
        if self.cri_feat is not None:
            self._build_taps_and_adapters()
            self.cri_feat.validate_batch_size(self._batch_size())
        else:
            self._dry_run()
        self.history = self._build_history()
        if self.resume_record:
            self._load_resumed_networks(self.resume_record['iter'])
        elif self.distill.teacher_check:
            self._check_teacher()

    def legacy_run_state(self, resume_iter: int) -> dict:
        """Checkpoints of the layout before ``<iter>.state`` held the run state: it was in the adapter record."""
        record_path = osp.join(self.opt['path']['models'], f'net_adapter_{resume_iter}.pth')
        if not osp.isfile(record_path):
            raise FileNotFoundError(f'cannot resume FACD from {self.opt["path"]["resume_state"]}: it has no run_state '
                                    f'and {record_path} (the earlier layout\'s teacher identity) is missing')
        record = safe_torch_load(record_path, f'the checkpoint of {self.opt["path"]["resume_state"]}',
                                 'adapter record')
        return {key: record.get(key) for key in ('teacher', 'student_runtime', 'data_order')}

    def run_state(self) -> dict:
        """RobustSRModel's, plus the teacher's identity (file, key, strictness, weights fingerprint)."""
        return dict(super().run_state(), teacher=self.teacher_record)

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
        return net_t.to(self.device).eval().requires_grad_(False)

    def _init_student_from_teacher(self) -> None:
        """``distill.init_from_teacher``: the student's weights become slices of the teacher's (teacher_init.py)."""
        net_g = self.get_bare_model(self.net_g)
        state = sliced_state(self.net_t.state_dict(), net_g.state_dict(), self.opt['network_g'], self.opt['network_t'])
        load_strictly(net_g, state, True, 'distill.init_from_teacher')
        get_root_logger().info('Student initialised from slices of the teacher (distill.init_from_teacher).')

    def _batch_size(self) -> int:
        train_set = self.opt.get('datasets', {}).get('train', {})
        return int(train_set.get('batch_size_per_gpu', 2))

    def _build_taps_and_adapters(self) -> None:
        teacher_paths, student_paths = self.distill.teacher_taps, self.distill.student_taps
        # a compiled teacher traces its hooks when it compiles: they must be there from the start
        self.teacher_taps = FeatureTaps(self.net_t, teacher_paths, 'distill.teacher_taps',
                                        persistent=self.distill.teacher_runtime['compile'])
        self.student_taps = FeatureTaps(self.get_bare_model(self.net_g), student_paths, 'distill.student_taps',
                                        persistent=self.student_runtime.compiled)
        feats_t, feats_s = self._dry_run()
        for j, (ft, fs) in enumerate(zip(feats_t, feats_s)):
            if ft.shape[-2:] != fs.shape[-2:]:
                raise ValueError(f'tap {j}: teacher {teacher_paths[j]} gives {tuple(ft.shape[-2:])} maps but student '
                                 f'{student_paths[j]} gives {tuple(fs.shape[-2:])}; taps must share a spatial size')
        if not self.cri_feat.uses_adapter:
            return
        adapters = [
            build_network(dict(self.distill.adapter, in_channels=fs.shape[1], out_channels=ft.shape[1]))
            for ft, fs in zip(feats_t, feats_s)
        ]
        self.net_adapter = self.model_to_device(FACDAdapterBank(adapters))
        self.net_adapter.train()

    def _build_history(self) -> Optional[HistoryPool]:
        """The EMA history pool when ``train.feature_opt`` takes ``negatives: history``; else None."""
        if self.cri_feat is None or not self.cri_feat.needs_history_features:
            return None
        adapter = None if self.net_adapter is None else self.get_bare_model(self.net_adapter)
        pool = HistoryPool(self.get_bare_model(self.net_g), adapter, self.distill.student_taps, **self.distill.history)
        return pool.to(self.device)

    def _load_resumed_networks(self, resume_iter: int) -> None:
        """Adapters and history pool of the checkpoint being resumed (the student comes through BasicSR)."""
        models = self.opt['path']['models']
        for net, label in ((self.net_adapter, 'net_adapter'), (self.history, 'net_history')):
            if net is not None:
                path = osp.join(models, f'{label}_{resume_iter}.pth')
                state = read_state_dict(path, 'params', f'the checkpoint of {self.opt["path"]["resume_state"]}')
                load_strictly(self.get_bare_model(net), state, True, f'{label} (resume)')

    @torch.no_grad()
    def _dry_run(self) -> tuple:
        """Run teacher and student once on a small random input: check scales, return the tapped maps."""
        size = self.distill.dry_run_size
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
        check_teacher(self.net_t, self.opt, num_images=self.distill.teacher_check_images)

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
        l_total = self.ground_truth_loss(loss_dict)
        gate = self._gate(sr_t, current_iter, loss_dict)
        if self.cri_kd is not None:
            loss_dict['l_kd'] = self._kd_loss(sr_t, gate)
            l_total = l_total + loss_dict['l_kd']
        if self.cri_feat is not None:
            l_feat, terms = self._feature_loss(gate, current_iter, loss_dict)
            loss_dict['l_feat'] = l_feat
            loss_dict.update(terms)
            l_total = l_total + l_feat
        if self.take_step(l_total, loss_dict, current_iter) and self.history is not None:
            self.history.update(self.get_bare_model(self.net_g), self._bare_adapter())

    def _bare_adapter(self) -> Optional[torch.nn.Module]:
        return None if self.net_adapter is None else self.get_bare_model(self.net_adapter)

    def _gate(self, sr_t: torch.Tensor, current_iter: int, loss_dict: OrderedDict) -> torch.Tensor:
        """The per-patch gate g (N, ); logs the share kept (``gate_on``) and, if asked, the advantage quantiles."""
        gate = self.gate(self.output, sr_t, self.gt)
        loss_dict['gate_on'] = gate.mean()
        if self.gate.advantage is not None:
            quantiles = advantage_quantiles(self.gate.advantage)  # stays on the device: the log reduces it
            loss_dict.update((f'gate_adv_p{q}', value) for q, value in zip((10, 50, 90), quantiles))
        if self.gate_log is not None:
            self.gate_log.write(current_iter, gate, self.gate.advantage)
        return gate

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

    def _feature_loss(self, gate: torch.Tensor, current_iter: int, loss_dict: OrderedDict) -> tuple:
        """The gated feature term (ramped by ``distill.feature_ramp_iters``, logged as ``feat_ramp``) and its logged
        terms (``l_feat_tap{j}``, ``d_pos``, ``d_neg``)."""
        feats_t = self.teacher_taps.pop()
        feats_s = self.student_taps.pop()
        if self.net_adapter is not None:
            feats_s = self.net_adapter(feats_s)
        l_feat, terms = self.cri_feat(feats_s, feats_t, weight=None if self.gate.always_on else gate,
                                      negative_feats=self._negatives())
        ramp = ramp_factor(current_iter, self.distill.feature_ramp_iters)
        if ramp < 1.0:
            loss_dict['feat_ramp'] = l_feat.new_tensor(ramp)
            l_feat = l_feat * ramp
        return l_feat, OrderedDict((f'l_feat_{k}' if k.startswith('tap') else k, v) for k, v in terms.items())

    def _negatives(self) -> Optional[list]:
        """What the feature loss takes as ``negative_feats``: degraded-input teacher maps, history maps, or None."""
        if self.cri_feat.needs_degraded_features:
            with self.teacher_taps:  # one more no-grad teacher pass, on the bicubic round trip of the LR batch
                self.run_teacher(bicubic_round_trip(self.lq, int(self.opt['scale'])))
            return self.teacher_taps.pop()
        if self.history is not None:
            return self.history.negatives(self.lq)
        return None

    # ------------------------------------------------------------------ checkpoints
    def networks_to_save(self) -> Dict[str, torch.nn.Module]:
        nets = dict(super().networks_to_save())
        for label, net in (('net_adapter', self.net_adapter), ('net_history', self.history)):
            if net is not None:
                nets[label] = self.get_bare_model(net)
        return nets

    def save_extra_networks(self, current_iter: int) -> None:
        """The adapters and the history pool, each only when the run has it."""
        if self.net_adapter is not None:
            self.save_network(self.net_adapter, 'net_adapter', current_iter)
        if self.history is not None:
            self.save_network(self.history, 'net_history', current_iter)
