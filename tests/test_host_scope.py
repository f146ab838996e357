"""Importing the plugin leaves BasicSR's public API as it was for programs that do not run our models.

The same probe runs in two fresh interpreters: one with stock BasicSR (only the torchvision alias, without which
basicsr 1.4.2 does not import) and one that imports ``facd_basicsr`` first. Their outputs must be equal. Runs of our
models still get the guards that name the dataset, the key and the file (tests/test_faults_training.py runs one).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

ALIAS = ('import sys, torchvision.transforms.functional as F; '
         'sys.modules.setdefault("torchvision.transforms.functional_tensor", F)\n')

PROBE = r'''
import json, os, sys
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import img_util
from basicsr.utils.file_client import FileClient
import basicsr.utils.options as options

root = sys.argv[1]
out = {}
def paired(gt, lq, io='disk'):
    opt = {'name': 'Probe', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 2, 'dataroot_gt': gt,
           'dataroot_lq': lq, 'io_backend': {'type': io}}
    if io == 'lmdb':
        opt['dataroot_gt'], opt['dataroot_lq'] = gt + '.lmdb', lq + '.lmdb'
    return PairedImageDataset(opt)

val = os.path.join(root, 'val')
items = list(paired(os.path.join(val, 'gt'), os.path.join(val, 'lq_x2')))
out['iterated'] = [sorted(x) for x in items]
out['for_loop'] = sum(1 for _ in paired(os.path.join(val, 'gt'), os.path.join(val, 'lq_x2')))
os.makedirs(os.path.join(root, 'empty_gt'), exist_ok=True)
os.makedirs(os.path.join(root, 'empty_lq'), exist_ok=True)
out['empty'] = list(paired(os.path.join(root, 'empty_gt'), os.path.join(root, 'empty_lq')))
broken = paired(os.path.join(root, 'broken', 'gt'), os.path.join(root, 'broken', 'lq_x2'))
os.remove(broken.paths[0]['gt_path'])
try:
    broken[0]
    out['missing_file'] = 'no error'
except Exception as err:
    out['missing_file'] = [type(err).__name__, isinstance(err, OSError)]
client = FileClient('lmdb', db_paths=[os.path.join(val, 'gt.lmdb')], client_keys=['gt'])
out['missing_key'] = repr(client.get('no-such-key', 'gt'))
out['bad_bytes'] = repr(img_util.imfrombytes(b'not an image'))
out['functions'] = {name: f'{fn.__module__}.{fn.__qualname__}' for name, fn in (
    ('imfrombytes', img_util.imfrombytes), ('FileClient.get', FileClient.get),
    ('PairedImageDataset.__getitem__', PairedImageDataset.__getitem__))}
print(json.dumps(out))
'''


def probe(sample_root, tmp_path, plugin):
    data = tmp_path / ('with' if plugin else 'stock')
    shutil.copytree(sample_root / 'datasets' / 'sample', data)
    shutil.copytree(data / 'val', data / 'broken')
    head = 'import facd_basicsr\n' if plugin else ALIAS
    done = subprocess.run([sys.executable, '-c', head + PROBE, str(data)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_basicsr_data_api_is_stock_after_importing_the_plugin(sample_root, tmp_path):
    stock, with_plugin = probe(sample_root, tmp_path, False), probe(sample_root, tmp_path, True)
    assert stock['missing_file'] == ['FileNotFoundError', True]  # what the probe must see for the check to mean much
    assert stock['empty'] == [] and stock['for_loop'] == 2 and stock['missing_key'] == 'None'
    assert with_plugin == stock


def test_init_dist_calls_torch_as_basicsr_does_on_a_cuda_machine(monkeypatch):
    """Stock and ours make the same init_process_group call (NCCL, torch's default timeout) when CUDA is there."""
    import basicsr.utils.options as options
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from basicsr.utils import dist_util

    from facd_basicsr.host import dist as our_dist

    assert options.init_dist is our_dist.init_dist  # what the plugin changes, and nothing else there
    calls = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: calls.append(('set_device', device)))
    monkeypatch.setattr(dist, 'init_process_group', lambda *a, **k: calls.append(('init', a, k)))
    monkeypatch.setattr(mp, 'set_start_method', lambda method: calls.append(('start_method', method)))
    monkeypatch.setattr(mp, 'get_start_method', lambda allow_none=False: None)
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('LOCAL_RANK', '1')
    dist_util.init_dist('pytorch')
    stock = list(calls)
    calls.clear()
    our_dist.init_dist('pytorch')
    assert calls == stock == [('start_method', 'spawn'), ('set_device', 1), ('init', (), {'backend': 'nccl'})]


def test_guards_of_a_facd_run_keep_the_sequence_protocol(sample_root, tmp_path):
    """Once installed (a run of our models started), iteration still stops at the end and an empty set is []."""
    from basicsr.data.paired_image_dataset import PairedImageDataset

    from facd_basicsr.host.data_errors import DataRecordError, install_dataset_guards
    install_dataset_guards()
    val = sample_root / 'datasets' / 'sample' / 'val'

    def paired(gt, lq):  # a new io_backend dict each time: the dataset pops its 'type'
        return PairedImageDataset({'name': 'Guarded', 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 2,
                                   'io_backend': {'type': 'disk'}, 'dataroot_gt': str(gt), 'dataroot_lq': str(lq)})

    assert len(list(paired(val / 'gt', val / 'lq_x2'))) == 2
    (tmp_path / 'gt').mkdir()
    (tmp_path / 'lq').mkdir()
    assert list(paired(tmp_path / 'gt', tmp_path / 'lq')) == []
    broken = tmp_path / 'broken'
    shutil.copytree(val, broken)
    dataset = paired(broken / 'gt', broken / 'lq_x2')
    missing = dataset.paths[1]['gt_path']
    os.remove(missing)
    with pytest.raises(DataRecordError, match=r"dataset 'Guarded' \(PairedImageDataset\), item 1 .*FileNotFoundError"):
        dataset[1]
