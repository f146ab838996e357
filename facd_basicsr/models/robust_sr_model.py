"""RobustSRModel: BasicSR's SRModel with what BasicSR 1.4.2 lacks, and nothing about distillation.

Train any BasicSR network with it by changing one line of a stock option file: ``model_type: RobustSRModel``. The
checkpoints are SRModel's (``net_g_<iter>.pth`` with ``params`` / ``params_ema``, ``<iter>.state``), so a student
trained with it loads anywhere SRModel's do. What it adds (each piece lives in :mod:`facd_basicsr.host`):

* safe checkpoint reads (``weights_only``; errors name the file and the option) and atomic saves (a killed run
  always resumes from its last complete checkpoint; a full disk stops the run naming the newest complete one);
* resume in the straight run's data order and random states, bit for bit (:mod:`facd_basicsr.host.data_order`),
  with the run's extra state in ``<iter>.state`` (key ``run_state``), where BasicSR keeps its own;
* non-finite guards: ``train.nonfinite: stop | skip`` at the step a loss turns NaN / Inf,
  ``train.nonfinite_skip_limit`` consecutive skips at most, and no checkpoint whose weights or output on the current
  batch are not finite;
* the student runtime options of ``train:`` (amp, compile, channels_last, tf32, grad_clip_norm;
  :mod:`facd_basicsr.host.student_runtime`) and DDP without CUDA (gloo on CPUs);
* validation that does not change the training's random states;
* one live run per experiment folder (:mod:`facd_basicsr.host.run_lock`), and every start-up check made before
  BasicSR creates or renames a folder (:mod:`facd_basicsr.host.startup`).

A run of this model (or of a subclass, e.g. FACDModel) also gets the run guards of
:mod:`facd_basicsr.host.run_guards`: data errors that name the dataset, the key and the file.
"""
import os.path as osp
from collections import OrderedDict
from typing import Optional

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from facd_basicsr.host.checkpoint import CheckpointWriteError, atomic_torch_save, network_state, safe_torch_load
from facd_basicsr.host.data_order import DataOrder, install_tracked_prefetchers, preserved_rng
from facd_basicsr.host.nonfinite import NonFiniteSkips, check_output, check_step, check_weights, newest_checkpoint
from facd_basicsr.host.resume import read_training_state
from facd_basicsr.host.run_guards import training_modules
from facd_basicsr.host.run_lock import RunLock
from facd_basicsr.host.student_runtime import StudentRuntime, channels_last_option
from facd_basicsr.host.train_options import check_training_options, nonfinite_options
from facd_basicsr.host.window_pad import pad_to_multiple, window_multiple
from facd_basicsr.registry import register_once


@register_once(MODEL_REGISTRY)
class RobustSRModel(SRModel):
    """SRModel with safe, atomic checkpoints, exact resume, non-finite guards and the student runtime options.

    Subclasses add their own training settings in :meth:`setup_extra_training` (before the optimizer and the EMA
    copy are made), their state in :meth:`run_state`, and their loss terms in ``optimize_parameters``, which ends in
    :meth:`take_step`.
    """

    # ------------------------------------------------------------------ set-up
    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.run_lock = self._lock_run_folder()

    def _lock_run_folder(self) -> Optional[RunLock]:
        """Hold ``experiments/<name>`` (``results/<name>`` when testing) for this run's life (rank 0, once BasicSR
        has made the folder); see :mod:`facd_basicsr.host.run_lock`."""
        folder = self.opt['path'].get('experiments_root' if self.is_train else 'results_root')
        if self.opt.get('rank', 0) != 0 or not folder or not osp.isdir(folder):
            return None
        return RunLock(folder).acquire()

    def init_training_settings(self) -> None:
        check_training_options(self.opt)  # gt_size vs scale, loss weights >= 0, train.nonfinite*
        train_opt = self.opt['train']
        self.nonfinite_mode, skip_limit = nonfinite_options(train_opt)
        self.nonfinite_skips = NonFiniteSkips(skip_limit)
        self.student_runtime = StudentRuntime(train_opt, self.device)  # train.amp, compile, ...: checked here
        self.resume_record = self.read_run_state()
        self.data_order = DataOrder()
        for module in training_modules():
            install_tracked_prefetchers(module, self.data_order)
        self.data_order.schedule(self.resume_record.get('data_order'), restore_rng=self.opt.get('world_size', 1) == 1)
        self.nonfinite_skips.load_state_dict(self.resume_record.get('nonfinite_skips'))
        self.setup_extra_training()
        self.student_runtime.load_state_dict(self.resume_record.get('student_runtime'))  # the fp16 grad scaler
        super().init_training_settings()

    def setup_extra_training(self) -> None:
        """Hook for subclasses: build what the optimizer and the EMA copy need. Nothing here."""

    def read_run_state(self) -> dict:
        """The ``run_state`` saved in the ``.state`` being resumed ({} when not resuming); see :meth:`run_state`."""
        state_path = self.opt['path'].get('resume_state')
        if not state_path:
            return {}
        state = read_training_state(state_path)
        record = state.get('run_state')
        if record is None:
            record = self.legacy_run_state(state['iter'])
        return dict(record, iter=state['iter'])

    def legacy_run_state(self, resume_iter: int) -> dict:
        """The run state of a checkpoint written before ``.state`` held it; subclasses that wrote it elsewhere read
        it there. Default: none (the data order then restarts the epoch, as BasicSR does)."""
        return {}

    def run_state(self) -> dict:
        """What a resume needs besides the networks, optimizers and schedulers; saved in ``<iter>.state``."""
        return {'data_order': self.data_order.snapshot(), 'student_runtime': self.student_runtime.state_dict(),
                'nonfinite_skips': self.nonfinite_skips.state_dict()}

    # ------------------------------------------------------------------ training step
    def feed_data(self, data: dict) -> None:
        """SRModel's, keeping the batch's ``lq_path`` / ``gt_path`` (files or LMDB keys) for error messages."""
        self.batch_keys = {key: data[key] for key in ('lq_path', 'gt_path') if key in data}
        super().feed_data(data)

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad()
        self.output = self.student_runtime.forward(self.net_g, self.lq)  # float32 out, autocast inside
        loss_dict = OrderedDict()
        l_total = self.ground_truth_loss(loss_dict)
        self.take_step(l_total, loss_dict, current_iter)

    def ground_truth_loss(self, loss_dict: OrderedDict) -> torch.Tensor:
        """SRModel's terms of the student against the ground truth: ``l_pix``, ``l_percep``, ``l_style``; their sum."""
        l_total = self.output.new_zeros(())
        if self.cri_pix:
            l_pix = self.cri_pix(self.output, self.gt)
            l_total = l_total + l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for key, term in (('l_percep', l_percep), ('l_style', l_style)):
                if term is not None:
                    l_total = l_total + term
                    loss_dict[key] = term
        return l_total

    def take_step(self, l_total: torch.Tensor, loss_dict: OrderedDict, current_iter: int) -> bool:
        """Non-finite check, backward, optimizer step, logs and EMA; False when the step was skipped."""
        skipped = check_step(loss_dict, l_total, current_iter, self.nonfinite_mode, getattr(self, 'batch_keys', {}),
                             self.opt, output=self.output)  # NaN / Inf: stop, or skip (train.nonfinite)
        self.nonfinite_skips.record(skipped, current_iter, self.opt)
        if skipped:
            return False
        grad_norm = self.student_runtime.backward_and_step(l_total, self.optimizer_g)  # scaler, clipping
        if grad_norm is not None:
            loss_dict['grad_norm'] = grad_norm.detach()
        if self.student_runtime.scaler is not None:
            loss_dict['amp_scale'] = l_total.new_tensor(self.student_runtime.scale)
        self.log_dict = self.reduce_loss_dict(OrderedDict((k, v) for k, v in loss_dict.items() if v is not None))
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        return True

    def test(self) -> None:
        """SRModel's, with the input reflect-padded to the network's ``window_size`` (SwinIR) and the output cropped
        back, as BasicSR's SwinIRModel does."""
        multiple = window_multiple(self.opt['network_g'])
        if multiple <= 1:
            return super().test()
        lq = self.lq
        self.lq, pad_h, pad_w = pad_to_multiple(lq, multiple)
        try:
            super().test()
        finally:
            self.lq = lq
        scale = int(self.opt.get('scale', 1))
        self.output = self.output[..., :self.output.shape[-2] - pad_h * scale, :self.output.shape[-1] - pad_w * scale]

    def validation(self, dataloader, current_iter: int, tb_logger, save_img: bool) -> None:
        """SRModel's, with the random states restored after it: validating does not change the training's batches."""
        with preserved_rng():
            super().validation(dataloader, current_iter, tb_logger, save_img)

    # ------------------------------------------------------------------ checkpoints
    def load_network(self, net, load_path: str, strict: bool = True, param_key='params') -> None:
        """BasicSR's ``load_network`` (student, EMA), after a safe read whose errors name the file and the option."""
        safe_torch_load(load_path, 'path.pretrain_network_g', 'student checkpoint')
        super().load_network(net, load_path, strict, param_key)

    def networks_to_save(self) -> dict:
        """Label -> network of everything :meth:`save` writes (checked for finite weights first)."""
        nets = {'net_g': self.net_g, 'net_g_ema': getattr(self, 'net_g_ema', None)}
        return {label: self.get_bare_model(net) for label, net in nets.items() if net is not None}

    def save(self, epoch: int, current_iter: int) -> None:
        """The networks, then the training state: the ``.state`` last, each file written atomically.

        A resume trusts a checkpoint by its ``.state``, so a killed run resumes from the last complete one. Nothing
        is written when a weight, or the student's output on the current batch, is not finite; a failed write (full
        disk) stops the run with a message naming the file and the newest complete checkpoint.
        """
        if self.run_lock is not None:
            self.run_lock.verify()  # never write into a folder that is no longer this run's
        check_weights(self.networks_to_save(), current_iter, self.opt)
        if getattr(self, 'lq', None) is not None:
            batch_keys = getattr(self, 'batch_keys', {})
            check_output(self.get_bare_model(self.net_g), self.lq, current_iter, self.opt, batch_keys)
        if current_iter == -1 and self.nonfinite_skips.total:
            get_root_logger().warning(self.nonfinite_skips.summary())
        previous = newest_checkpoint(self.opt)
        try:
            self.save_extra_networks(current_iter)
            super().save(epoch, current_iter)
        except CheckpointWriteError as err:
            raise CheckpointWriteError(err.errno, f'{err.strerror}. Training stopped; the newest complete checkpoint '
                                       f'is {previous}: free space, then resume with --auto_resume') from None

    def save_extra_networks(self, current_iter: int) -> None:
        """Hook for subclasses: networks saved before net_g (and so before the ``.state``). Nothing here."""

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
        """BasicSR's ``save_training_state`` plus ``run_state`` (none for the final 'latest' save), atomically."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'run_state': self.run_state()}
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'),
                          'training state')

    # ------------------------------------------------------------------ devices
    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """BasicSR's ``model_to_device``, except that under ``opt['dist']`` DDP gets no ``device_ids`` on the CPU.

        BasicSR always passes ``device_ids=[torch.cuda.current_device()]``, which fails without CUDA (gloo runs).
        With ``train.channels_last`` the network is converted to channels-last first (before DDP sees it).
        """
        if self.is_train and channels_last_option(self.opt.get('train')):
            net = net.to(memory_format=torch.channels_last)
        if not self.opt['dist']:
            return super().model_to_device(net)
        from facd_basicsr.host.dist import wrap_ddp
        return wrap_ddp(net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False))
