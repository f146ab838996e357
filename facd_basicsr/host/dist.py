"""torch.distributed set-up that works with and without CUDA (BasicSR's launchers, minus their GPU assumptions).

BasicSR 1.4.2 assumes GPUs in two places: ``basicsr.utils.dist_util.init_dist`` calls ``torch.cuda.set_device`` and
defaults to NCCL, and ``BaseModel.model_to_device`` passes ``device_ids=[torch.cuda.current_device()]`` to
``DistributedDataParallel``. Both crash on a machine without CUDA. Here:

- :func:`init_dist` chooses NCCL and the local GPU when CUDA is available, gloo and the CPU otherwise;
  :mod:`facd_basicsr.host.patches` makes BasicSR's ``parse_options`` use it.
- :func:`wrap_ddp` wraps a module in DDP with ``device_ids`` on a GPU and without them on the CPU.
"""
import os
import subprocess
from datetime import timedelta
from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

LAUNCHERS = ('pytorch', 'slurm')
BACKENDS = ('nccl', 'gloo')
DEFAULT_PORT = 29500  # torch.distributed's default master port


def default_backend() -> str:
    """'nccl' when CUDA is available, else 'gloo'."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def check_backend(backend: Optional[str]) -> str:
    """The backend to use: ``backend`` or :func:`default_backend`; NCCL without CUDA is a config error."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f'dist_params.backend {backend!r} is not supported. Supported: {", ".join(BACKENDS)}')
    if backend == 'nccl' and not torch.cuda.is_available():
        raise ValueError('dist_params.backend is nccl but CUDA is not available on this machine: set '
                         'dist_params.backend to gloo (and num_gpu: 0) to train on CPUs')
    return backend


def first_slurm_host(node_list: str) -> str:
    """First host name of a Slurm node list such as ``node[01-04]`` (asks ``scontrol show hostnames``)."""
    hosts = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True, text=True, check=True)
    return hosts.stdout.split()[0]


def slurm_environment(env: Mapping[str, str], port: Optional[int] = None) -> Dict[str, str]:
    """torch.distributed's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for one Slurm task.

    Args:
        env (Mapping[str, str]): the task's environment; needs SLURM_PROCID and SLURM_NTASKS, plus SLURM_NODELIST
            unless MASTER_ADDR is already set. SLURM_LOCALID gives the local rank (else it is 0).
        port (int | None): master port (``dist_params.port``); None keeps MASTER_PORT or uses 29500.

    Returns:
        dict[str, str]: the variables to put into ``os.environ``.
    """
    missing = [key for key in ('SLURM_PROCID', 'SLURM_NTASKS') if key not in env]
    if missing:
        raise KeyError(f'--launcher slurm needs the Slurm variables {missing}: start the job with srun')
    master_addr = env.get('MASTER_ADDR')
    if not master_addr:
        if 'SLURM_NODELIST' not in env:
            raise KeyError('--launcher slurm needs SLURM_NODELIST (or MASTER_ADDR) to find the master node')
        master_addr = first_slurm_host(env['SLURM_NODELIST'])
    master_port = port if port is not None else env.get('MASTER_PORT', DEFAULT_PORT)
    return {
        'RANK': str(int(env['SLURM_PROCID'])),
        'WORLD_SIZE': str(int(env['SLURM_NTASKS'])),
        'LOCAL_RANK': str(int(env.get('SLURM_LOCALID', 0))),
        'MASTER_ADDR': master_addr,
        'MASTER_PORT': str(int(master_port)),
    }


def init_dist(launcher: str,
              backend: Optional[str] = None,
              port: Optional[int] = None,
              timeout_s: Optional[int] = None) -> None:
    """Join the process group that ``torchrun`` (``launcher='pytorch'``) or ``srun`` (``'slurm'``) describes.

    Drop-in for ``basicsr.utils.dist_util.init_dist``: the same launchers and ``dist_params`` keys (``backend``,
    ``port``), but the backend defaults to NCCL only when CUDA is available (gloo otherwise), and a GPU is selected
    (by LOCAL_RANK) only for NCCL.

    Args:
        launcher (str): 'pytorch' (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set by torchrun) or 'slurm'.
        backend (str | None): 'nccl' | 'gloo'; None picks by CUDA availability. Default: None.
        port (int | None): master port, Slurm only (torchrun sets it with ``--master_port``). Default: None.
        timeout_s (int | None): seconds a collective may wait for the other ranks; None keeps torch's default, as
            BasicSR does. Default: None.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher {launcher!r} is not supported. Supported: {", ".join(LAUNCHERS)}')
    backend = check_backend(backend)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')  # as BasicSR: data-loader workers must not fork a CUDA context
    if launcher == 'slurm':
        os.environ.update(slurm_environment(os.environ, port))
    if backend == 'nccl':
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
    timeout = {} if timeout_s is None else {'timeout': timedelta(seconds=timeout_s)}
    dist.init_process_group(backend=backend, **timeout)


def normalise_local_rank_flag(argv: Sequence[str]) -> list:
    """``--local-rank=N`` (what ``python -m torch.distributed.launch`` passes) -> ``--local_rank=N`` (BasicSR's)."""
    return [arg.replace('--local-rank', '--local_rank', 1) if arg.startswith('--local-rank') else arg for arg in argv]


def wrap_ddp(net: nn.Module, find_unused_parameters: bool = False) -> DistributedDataParallel:
    """DDP around ``net`` (already on its device): ``device_ids`` = its GPU on CUDA, none on the CPU.

    DDP broadcasts rank 0's parameters and buffers at construction, so ranks seeded differently start equal.
    """
    device = next(net.parameters()).device
    device_ids = None
    if device.type == 'cuda':
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
