"""``facd-export``: a trained network alone (e.g. the distilled student, no adapters) to TorchScript and ONNX.

Both exports take inputs of any batch, height and width. Each file is checked against the PyTorch network on
random inputs of the ``--check-sizes`` (TorchScript through ``torch.jit.load``, ONNX through onnxruntime); the
maximum absolute difference is printed and the exit code is 1 when any reaches ``--atol`` (default 1e-4).

ONNX goes through torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)`` with
``dynamic_axes``): the torch.export-based default of torch >= 2.9 needs the extra package onnxscript.

Example::

    facd-export --opt my_train.yml --ckpt experiments/my_run/models/net_g_latest.pth \\
        --out-dir exported --name edsr_facd_x4
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from facd_basicsr.tools.common import add_network_args, config_error, network_from_args, parse_size


def example_inputs(sizes: List[Tuple[int, int]], channels: int, seed: int) -> List[torch.Tensor]:
    """Uniform [0, 1) inputs ``(N, C, H, W)``, one per size: batch 1 for the first size, 2 for the others."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1 if i == 0 else 2, channels, h, w, generator=gen) for i, (h, w) in enumerate(sizes)]


def export_torchscript(net: nn.Module, example: torch.Tensor, path: str, mode: str) -> None:
    """Save ``net`` as TorchScript by ``'trace'`` (with ``example``) or ``'script'``."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit is deprecated in favour of torch.export
        if mode == 'trace':
            module = torch.jit.trace(net, example)
        elif mode == 'script':
            module = torch.jit.script(net)
        else:
            raise ValueError(f'--ts-mode {mode!r} is not supported. Supported: trace, script')
        torch.jit.save(module, path)


def export_onnx(net: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    """Save ``net`` as ONNX with dynamic batch, height and width (input ``lr``, output ``sr``)."""
    dynamic = {'lr': {0: 'batch', 2: 'height', 3: 'width'}, 'sr': {0: 'batch', 2: 'out_height', 3: 'out_width'}}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', (FutureWarning, DeprecationWarning))  # the legacy exporter warns it is old
        torch.onnx.export(
            net, (example, ),
            path,
            dynamo=False,
            input_names=['lr'],
            output_names=['sr'],
            dynamic_axes=dynamic,
            opset_version=opset)
    import onnx
    onnx.checker.check_model(path)


def check_torchscript(path: str, reference: List[np.ndarray], inputs: List[torch.Tensor]) -> List[float]:
    """Max abs difference between the reloaded TorchScript module and ``reference``, per input."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit is deprecated in favour of torch.export
        module = torch.jit.load(path, map_location='cpu').eval()
    with torch.inference_mode():
        return [float(np.abs(module(x).numpy() - ref).max()) for x, ref in zip(inputs, reference)]


def check_onnx(path: str, reference: List[np.ndarray], inputs: List[torch.Tensor]) -> List[float]:
    """Max abs difference between onnxruntime (CPU) on the ONNX file and ``reference``, per input."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return [float(np.abs(session.run(None, {'lr': x.numpy()})[0] - ref).max()) for x, ref in zip(inputs, reference)]


def export_and_check(net: nn.Module, args: argparse.Namespace, channels: int) -> List[Dict]:
    """Export every format of ``args.formats`` and check it; returns one row per (format, input size)."""
    inputs = example_inputs(args.check_sizes, channels, args.seed)
    with torch.inference_mode():
        reference = [net(x).numpy() for x in inputs]
    rows = []
    for fmt in args.formats:
        path = osp.join(args.out_dir, f'{args.name}.{"pt" if fmt == "torchscript" else "onnx"}')
        if fmt == 'torchscript':
            export_torchscript(net, inputs[0], path, args.ts_mode)
            diffs = check_torchscript(path, reference, inputs)
        else:
            export_onnx(net, inputs[0], path, args.opset)
            diffs = check_onnx(path, reference, inputs)
        for x, ref, diff in zip(inputs, reference, diffs):
            rows.append({'format': fmt, 'file': path, 'input': tuple(x.shape), 'output': ref.shape, 'diff': diff})
    return rows


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='facd-export', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(parser)
    parser.add_argument('--out-dir', default='exported', help='output folder. Default: exported')
    parser.add_argument('--name', default=None, help='file stem of the exports. Default: the checkpoint stem')
    parser.add_argument('--formats', nargs='+', default=['torchscript', 'onnx'], choices=['torchscript', 'onnx'])
    parser.add_argument('--ts-mode', default='trace', choices=['trace', 'script'], help='TorchScript by trace/script')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset. Default: 17')
    parser.add_argument(
        '--check-sizes',
        type=parse_size,
        nargs='+',
        default=[(32, 32), (45, 27)],
        help='LR sizes HxW of the random check inputs. Default: 32x32 45x27')
    parser.add_argument('--atol', type=float, default=1e-4, help='max abs difference allowed. Default: 1e-4')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random check inputs. Default: 0')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-export``; exit code 0 when every check passes, 1 when one fails, 2 on bad config."""
    args = parse_args(argv)
    try:
        net, arch_opt, used_key = network_from_args(args, torch.device('cpu'))
    except (FileNotFoundError, KeyError, ValueError) as err:
        return config_error(err)
    args.name = args.name or osp.splitext(osp.basename(args.ckpt))[0]
    os.makedirs(args.out_dir, exist_ok=True)
    rows = export_and_check(net, args, arch_opt.get('num_in_ch', 3))
    print(f'{arch_opt["type"]} from {args.ckpt} (param key: {used_key}); {sum(p.numel() for p in net.parameters())} '
          f'parameters; dynamic batch/height/width; ONNX opset {args.opset} (legacy exporter, dynamo=False)\n')
    print('| format | file | input (N, C, H, W) | output | max abs diff | ok |\n|---|---|---|---|---|---|')
    for row in rows:
        ok = row['diff'] < args.atol
        print(f'| {row["format"]} | {row["file"]} | {row["input"]} | {row["output"]} | {row["diff"]:.3e} '
              f'| {"yes" if ok else "NO"} |')
    failed = [row for row in rows if not row['diff'] < args.atol]
    if failed:
        print(f'\nFAILED: {len(failed)} check(s) reach --atol {args.atol:g}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
