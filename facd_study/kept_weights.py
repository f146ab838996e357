"""Final student weights kept next to their run records (issue 32, item 7), so that anyone can re-score a table row.

``docs/study_x4_runs/<run>.pth`` holds ``{'params': state_dict}`` of the plain BasicSR network of the run's
``network_g`` (EDSR 4x16 at x4, about 170 KB): what BasicSR's ``load_network`` and ``facd-eval --ckpt`` read. A
file is written only when the weights score what the record says (same fingerprint, or, for records older than
the fingerprint, the same per-photo PSNR), so a kept file never belongs to another run.
"""
import os.path as osp
from typing import Mapping, Optional

from facd_basicsr.host.checkpoint import atomic_torch_save, fingerprint, network_state
from facd_basicsr.tools.common import load_network
from facd_study.ablation import stored_record
from facd_study.experiment import is_trained, latest_weights, restore_run
from facd_study.scoring import split_scores

# per-photo PSNR a record older than its ``student`` fingerprint may differ by when re-scored on another CPU (8-bit
# rounding of a few pixels); another run's weights differ by far more
PSNR_TOLERANCE = 5e-3


def kept_path(name: str, folder: str) -> str:
    """Where the kept weights of run ``name`` go: ``<folder>/<name>.pth``, beside ``<name>.json``."""
    return osp.join(folder, f'{name}.pth')


def check_against_record(net, record: Mapping, pairs: Optional[Mapping[str, Mapping]]) -> None:
    """Raise ValueError unless ``net`` is the network ``record`` scored: by fingerprint, else by per-photo PSNR."""
    name = record['name']
    if record.get('student'):
        if fingerprint(net) != record['student']:
            raise ValueError(f'{name}: the trained weights (fingerprint {fingerprint(net)[:12]}) are not the ones '
                             f'its record scored ({record["student"][:12]}); score the run again first')
        return
    if pairs is None:
        raise ValueError(f'{name}: its record has no weights fingerprint; pass the photo pairs to check its scores')
    for split, split_pairs in pairs.items():
        scores = split_scores(net, split_pairs, record['options']['scale'])[0]
        for stem, recorded in record['per_image'][split].items():
            if abs(scores[stem]['psnr'] - recorded['psnr']) > PSNR_TOLERANCE:
                raise ValueError(f'{name}: the trained weights score {scores[stem]["psnr"]:.4f} dB on {stem}, its '
                                 f'record {recorded["psnr"]:.4f} dB: not the recorded run')


def keep_weights(opt: dict,
                 folder: str,
                 pairs: Optional[Mapping[str, Mapping]] = None,
                 root: str = '.',
                 cache: Optional[str] = None) -> str:
    """Write the final student weights of run ``opt`` next to its record in ``folder``; returns the file's path.

    Args:
        opt (dict): the run's complete options (``Row.options``).
        folder (str): the record folder (``StudyScale.record_dir``).
        pairs (Mapping | None): split -> (LR, GT) pairs, to check records that carry no weights fingerprint.
        root (str): where ``experiments/`` is. Default: '.'.
        cache (str | None): run cache to restore a run missing from ``experiments/`` (:func:`run_cache`).

    Raises:
        FileNotFoundError: no record of these options, or the run's weights are neither trained nor cached.
        ValueError: the weights are not the ones the record scored.
    """
    record = stored_record(opt, folder)
    if record is None:
        raise FileNotFoundError(f'{opt["name"]}: no record of these options in {folder}; train and score it first')
    # the weights fingerprint below decides; the starting files (run_inputs) may have changed since, or predate it
    if not is_trained(opt, root, check_inputs=False) and not (cache and restore_run(opt, root, cache, False)):
        raise FileNotFoundError(f'{opt["name"]}: {latest_weights(opt["name"], root)} is missing (the run was trained '
                                'in another session and is not in the run cache): train it again to keep its weights')
    net = load_network(opt['network_g'], latest_weights(opt['name'], root))
    check_against_record(net, record, pairs)
    path = kept_path(opt['name'], folder)
    atomic_torch_save({'params': network_state(net)}, path, 'kept student weights')
    return path
