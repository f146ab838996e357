"""Data-parallel FACD on CPUs with gloo: 2 ranks against 1 process, rank-0-only files, torchrun end to end.

Two spawned ranks each train FACDModel (``opt['dist'] = True``) on their half of a fixed global batch:
- per-sample losses (pixel + gated KD + FeatureDistillLoss): after 3 Adam steps student and adapters are the same
  on both ranks and equal a single process on the global batch, and rank 0's log equals that process's log;
  at step 1 the gate is all-zero on rank 1 (its half holds the patches the teacher does worse on), and DDP still
  sees a gradient for every adapter parameter (no ``find_unused_parameters``);
- the contrastive loss (in-batch negatives): ranks stay equal and match one process that averages the gradients of
  the two halves (negatives from the local half), which is not the global-batch run.
"""
import glob
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from basicsr.archs import build_network
from basicsr.models import build_model

from facd_basicsr.distill.gate import patch_psnr
from facd_basicsr.host.dist import check_backend, init_dist, normalise_local_rank_flag, slurm_environment

from conftest import REPO_ROOT
from model_helpers import make_opt, photo_batches

WORLD = 2
STEPS = 3
GLOBAL_BATCH = 8
HALF = GLOBAL_BATCH // WORLD
FD = {'type': 'FeatureDistillLoss', 'loss_weight': 0.1}
CONTRASTIVE = {'type': 'FACDContrastiveLoss', 'loss_weight': 0.1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def build(opt):
    torch.manual_seed(0)
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    return build_model(opt)


class GateRecorder:
    """Wraps the model's AdaptiveGate and keeps the local (this rank's) gate of every step."""

    def __init__(self, gate):
        self.gate, self.seen = gate, []

    @property
    def always_on(self):
        return self.gate.always_on

    @property
    def advantage(self):
        return self.gate.advantage

    def __call__(self, *args):
        gate = self.gate(*args)
        self.seen.append(gate.clone())
        return gate


class MeanOfParts:
    """Optimizer stand-in: sums the gradients of ``parts`` optimize_parameters calls, then steps on their mean."""

    def __init__(self, optimizer, parts):
        self.optimizer, self.parts, self.count = optimizer, parts, 0

    def zero_grad(self):
        if self.count == 0:
            self.optimizer.zero_grad()

    def step(self):
        self.count += 1
        if self.count == self.parts:
            for group in self.optimizer.param_groups:
                for p in group['params']:
                    p.grad.div_(self.parts)
            self.optimizer.step()
            self.count = 0


def weights(model):
    nets = {'g': model.get_bare_model(model.net_g), 'adapter': model.get_bare_model(model.net_adapter)}
    return {f'{n}.{k}': v.detach().clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def halves(batch, rank):
    return {k: v[rank * HALF:(rank + 1) * HALF] for k, v in batch.items()}


def train_rank(opt, batches, rank):
    """One rank's run: STEPS steps on its half, then ``save``; returns weights, logs, local gates, files written."""
    model = build(opt)
    model.gate = GateRecorder(model.gate)
    logs, adapter_grads = [], []
    for it, batch in enumerate(batches, 1):
        model.feed_data(halves(batch, rank))
        model.optimize_parameters(it)
        logs.append(model.get_current_log())
        adapter_grads.append([p.grad is not None for p in model.net_adapter.parameters()])
    model.save(0, STEPS)
    wrapped = {name: type(getattr(model, name)).__name__ for name in ('net_g', 'net_adapter', 'net_t')}
    return {'weights': weights(model), 'logs': logs, 'gates': model.gate.seen, 'adapter_grads': adapter_grads,
            'wrapped': wrapped, 'teacher_grad': any(p.requires_grad for p in model.net_t.parameters()),
            'files': sorted(os.listdir(opt['path']['models']) + os.listdir(opt['path']['training_states']))}


def _worker(rank, port, jobs, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_dist('pytorch', backend='gloo', timeout_s=120)
    try:
        results = {}
        for name, (opt, batches) in jobs.items():
            opt = dict(opt, dist=True, rank=rank, world_size=WORLD)
            rank_root = osp.join(out_dir, f'{name}_rank{rank}')
            opt['path'] = dict(opt['path'], models=osp.join(rank_root, 'models'),
                               training_states=osp.join(rank_root, 'training_states'))
            results[name] = train_rank(opt, batches, rank)
        torch.save(results, osp.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def run_single(opt, batches, parts=1):
    """One process: each step on the global batch (parts=1) or on the mean gradient of its halves (parts=2)."""
    model = build(opt)
    model.optimizer_g = MeanOfParts(model.optimizer_g, parts)
    logs = []
    for it, batch in enumerate(batches, 1):
        part_logs = []
        for rank in range(parts):
            model.feed_data(halves(batch, rank) if parts > 1 else batch)
            model.optimize_parameters(it)
            part_logs.append(model.get_current_log())
        logs.append({k: sum(log[k] for log in part_logs) / parts for k in part_logs[0]})
    return weights(model), logs


def split_gate_margin(opt, batches):
    """Reorder batch 1 so the teacher's PSNR advantage is larger on rank 0's half; return a margin between halves."""
    model = build(opt)
    lq, gt = batches[0]['lq'], batches[0]['gt']
    with torch.no_grad():
        advantage = patch_psnr(model.net_t(lq), gt) - patch_psnr(model.get_bare_model(model.net_g)(lq), gt)
    order = advantage.argsort(descending=True)
    batches[0] = {'lq': lq[order], 'gt': gt[order]}
    low, high = advantage[order[HALF]].item(), advantage[order[HALF - 1]].item()
    assert high - low > 1e-3, 'the two halves must be clearly apart for a clean all-zero gate on rank 1'
    return (low + high) / 2


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The 2-rank runs (one spawn for both set-ups) and their single-process references."""
    tmp = tmp_path_factory.mktemp('ddp')
    batches = photo_batches(STEPS, batch_size=GLOBAL_BATCH, gt_size=32, seed=1)
    probe = make_opt(tmp / 'probe', FD, gate={'mode': 'teacher_better'}, batch_size=GLOBAL_BATCH)
    margin = split_gate_margin(probe, batches)
    gate = {'mode': 'teacher_better', 'margin': margin}
    jobs = {'per_sample': (make_opt(tmp / 'ps', FD, gate=gate, batch_size=HALF), batches),
            'contrastive': (make_opt(tmp / 'co', CONTRASTIVE, batch_size=HALF), batches)}
    # fork: the ranks inherit the imported modules (a spawned interpreter spends ~20 s importing basicsr)
    mp.start_processes(_worker, args=(free_port(), jobs, str(tmp)), nprocs=WORLD, join=True, start_method='fork')
    ranks = [torch.load(tmp / f'rank{r}.pt', weights_only=False) for r in range(WORLD)]
    refs = {
        'per_sample': run_single(make_opt(tmp / 'ps1', FD, gate=gate, batch_size=GLOBAL_BATCH), batches),
        'contrastive_halves': run_single(make_opt(tmp / 'co2', CONTRASTIVE, batch_size=HALF), batches, parts=2),
        'contrastive_global': run_single(make_opt(tmp / 'co1', CONTRASTIVE, batch_size=GLOBAL_BATCH), batches),
    }
    return ranks, refs


def assert_weights_close(actual, expected, atol=1e-6):
    assert set(actual) == set(expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize('name', ['per_sample', 'contrastive'])
def test_ranks_end_with_identical_student_and_adapters(runs, name):
    ranks, _ = runs
    for rank in ranks:
        assert rank[name]['wrapped'] == {'net_g': 'DistributedDataParallel', 'net_adapter': 'DistributedDataParallel',
                                         'net_t': 'EDSR'}  # the teacher is replicated, never wrapped
        assert not rank[name]['teacher_grad']
    first, second = ranks[0][name]['weights'], ranks[1][name]['weights']
    assert set(first) == set(second) and any(k.startswith('adapter.') for k in first)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_per_sample_losses_equal_one_process_on_the_global_batch(runs):
    ranks, refs = runs
    ref_weights, ref_logs = refs['per_sample']
    assert_weights_close(ranks[0]['per_sample']['weights'], ref_weights)
    for log, ref in zip(ranks[0]['per_sample']['logs'], ref_logs):  # rank 0's log = mean over ranks
        assert set(log) == set(ref)
        for key in ref:
            if key.startswith('gate_adv_'):  # quantiles of each rank's half, averaged: not the global batch's
                continue
            assert log[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key


def test_zero_gate_on_one_rank_still_gives_every_adapter_parameter_a_gradient(runs):
    ranks, refs = runs
    gates = [ranks[r]['per_sample']['gates'][0] for r in range(WORLD)]
    assert gates[0].tolist() == [1.] * HALF and gates[1].tolist() == [0.] * HALF
    assert ranks[0]['per_sample']['logs'][0]['gate_on'] == pytest.approx(0.5)  # averaged over ranks
    assert refs['per_sample'][1][0]['gate_on'] == pytest.approx(0.5)
    for r in range(WORLD):
        assert all(all(step) for step in ranks[r]['per_sample']['adapter_grads'])


def test_contrastive_negatives_come_from_the_local_half(runs):
    ranks, refs = runs
    halves_weights, halves_logs = refs['contrastive_halves']
    assert_weights_close(ranks[0]['contrastive']['weights'], halves_weights)
    for log, ref in zip(ranks[0]['contrastive']['logs'], halves_logs):
        for key in ref:
            assert log[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key
    global_weights, _ = refs['contrastive_global']
    diff = max((ranks[0]['contrastive']['weights'][k] - v).abs().max().item() for k, v in global_weights.items())
    assert diff > 1e-5  # per-rank negatives: not the same training as one process on the global batch


def test_only_rank_0_writes_checkpoints_and_adapters(runs):
    ranks, _ = runs
    for name in ('per_sample', 'contrastive'):
        assert ranks[0][name]['files'] == [f'{STEPS}.state', f'net_adapter_{STEPS}.pth', f'net_g_{STEPS}.pth']
        assert ranks[1][name]['files'] == []


# ---------------------------------------------------------------------------------------------- launcher helpers
def test_slurm_environment_maps_slurm_variables():
    env = {'SLURM_PROCID': '5', 'SLURM_NTASKS': '8', 'SLURM_LOCALID': '1', 'MASTER_ADDR': 'node07'}
    assert slurm_environment(env, port=29611) == {'RANK': '5', 'WORLD_SIZE': '8', 'LOCAL_RANK': '1',
                                                  'MASTER_ADDR': 'node07', 'MASTER_PORT': '29611'}
    assert slurm_environment(dict(env, MASTER_PORT='1234'))['MASTER_PORT'] == '1234'
    with pytest.raises(KeyError, match='SLURM_NTASKS'):
        slurm_environment({'SLURM_PROCID': '0', 'MASTER_ADDR': 'x'})


def test_backend_choice_and_local_rank_flag():
    assert normalise_local_rank_flag(['-opt', 'a.yml', '--local-rank=3']) == ['-opt', 'a.yml', '--local_rank=3']
    with pytest.raises(ValueError, match='dist_params.backend'):
        check_backend('mpi')
    if not torch.cuda.is_available():
        assert check_backend(None) == 'gloo'
        with pytest.raises(ValueError, match='gloo'):
            check_backend('nccl')


# ---------------------------------------------------------------------------------------------- end to end
TINY_TEACHER = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_block': 4, 'upscale': 2,
                'res_scale': 1, 'img_range': 255., 'rgb_mean': [0.4488, 0.4371, 0.4040]}
FACD_NAME = 'FACD_tiny_x2_EDSR_f16b2_from_f32b4'


def test_torchrun_two_cpu_ranks_end_to_end(run_dir):
    """torchrun + --launcher pytorch on CPUs (gloo): finishes, one log, one set of checkpoints."""
    teacher_dir = run_dir / 'experiments' / 'tiny_teacher_x2_EDSR_f32b4' / 'models'
    os.makedirs(teacher_dir)
    torch.manual_seed(0)  # a random teacher is enough here (teacher_check is off)
    torch.save({'params': build_network(TINY_TEACHER).state_dict()}, teacher_dir / 'net_g_latest.pth')
    force = ['train:total_iter=4', 'distill:teacher_check=false', 'logger:print_freq=1', 'logger:use_tb_logger=false',
             'logger:save_checkpoint_freq=2', 'val:val_freq=2']
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={WORLD}',
           osp.join(REPO_ROOT, 'facd_basicsr', 'train.py'), '-opt',
           osp.join(REPO_ROOT, 'options', 'tiny', 'train_FACD_tiny_x2.yml'), '--launcher', 'pytorch',
           '--force_yml', *force]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    result = subprocess.run(cmd, cwd=str(run_dir), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    exp = run_dir / 'experiments' / FACD_NAME
    assert sorted(os.listdir(run_dir / 'experiments')) == [FACD_NAME, 'tiny_teacher_x2_EDSR_f32b4']
    written = sorted(osp.relpath(p, exp) for p in glob.glob(str(exp / '**' / '*'), recursive=True) if osp.isfile(p))
    logs = [f for f in written if f.startswith('train_') and f.endswith('.log')]
    assert len(logs) == 1
    assert sorted(set(written) - set(logs)) == sorted([
        'train_FACD_tiny_x2.yml', 'training_states/2.state', 'training_states/4.state',
        *[f'models/net_{net}_{it}.pth' for net in ('g', 'adapter') for it in (2, 4, 'latest')]])
    log = open(exp / logs[0]).read()
    assert 'World size (gpu number): 2' in log and 'dist: True' in log
    assert 'gate_on' in log and 'iter:       4' in log
    adapters = torch.load(exp / 'models' / 'net_adapter_latest.pth', weights_only=True)
    assert len([k for k in adapters['params'] if k.endswith('weight')]) == 3
