"""``facd-export``: a trained network alone (e.g. the distilled student, no adapters) to the formats deployment tools
load: TorchScript, ONNX, safetensors, and the official RCAN layout.

* ``torchscript`` (``NAME.pt``) and ``onnx`` (``NAME.onnx``): the network with inputs of any batch, height and width,
  for any ONNX runtime (EDSR included). ONNX goes through torch's TorchScript-based exporter
  (``torch.onnx.export(..., dynamo=False)`` with ``dynamic_axes``): the torch.export-based default of torch >= 2.9
  needs the extra package onnxscript.
* ``safetensors`` (``NAME.safetensors``): the weights under BasicSR's names plus metadata (``arch``, ``arch_kwargs``
  as JSON, ``scale``); spandrel (chaiNNer, ComfyUI) loads SwinIR, RRDBNet and SRVGGNetCompact from it, traiNNer-redux
  reads it as a state dict, and our tools read it back (``--param-key none``).
* ``official`` (``NAME_official.pth``, RCAN only): the official EDSR-PyTorch RCAN layout that spandrel detects; the
  inverse of ``facd-convert-teacher``. spandrel has no EDSR: an EDSR is exported as ONNX or safetensors.

Each file is checked against the PyTorch network on random inputs of the ``--check-sizes`` (TorchScript through
``torch.jit.load``, ONNX through onnxruntime, safetensors rebuilt from its own metadata, and safetensors / official
files through ``spandrel.ModelLoader`` when spandrel is installed and has the architecture); the maximum absolute
difference is printed and the exit code is 1 when any reaches ``--atol`` (default 1e-4). An output folder that cannot
be written, or a format the architecture has not, is one ``error:`` line and exit code 2, before the network is built.

Example::

    facd-export --opt my_train.yml --ckpt experiments/my_run/models/net_g_latest.pth \\
        --out-dir exported --name rcan_facd_x4 --format safetensors official onnx
"""
import argparse
import contextlib
import os
import os.path as osp
import sys
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from facd_basicsr.host.checkpoint import (CheckpointError, CheckpointWriteError, atomic_safetensors_save,
                                          atomic_torch_save, network_state)
from facd_basicsr.tools.common import (add_network_args, arch_opt_from_args, check_output_location, config_error,
                                       network_from_args, parse_size)
from facd_basicsr.tools.export_weights import (check_with_spandrel, load_safetensors_network, official_format_error,
                                               official_rcan_state, safetensors_metadata)

FORMATS = ('torchscript', 'onnx', 'safetensors', 'official')
SUFFIXES = {'torchscript': '.pt', 'onnx': '.onnx', 'safetensors': '.safetensors', 'official': '_official.pth'}
DEFAULT_CHECK_SIZES = ((32, 32), (45, 27))
# BasicSR type -> the spandrel architecture id that loads its BasicSR-layout safetensors (EDSR has none)
SPANDREL_IDS = {
    'SwinIR': 'SwinIR',
    'RRDBNet': 'ESRGAN',
    'SRVGGNetCompact': 'Compact',
    'SRVGGNetCompact_basicsr': 'Compact'
}


def example_inputs(sizes: List[Tuple[int, int]], channels: int, seed: int) -> List[torch.Tensor]:
    """Uniform [0, 1) inputs ``(N, C, H, W)``, one per size: batch 1 for the first size, 2 for the others."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1 if i == 0 else 2, channels, h, w, generator=gen) for i, (h, w) in enumerate(sizes)]


def _window_reverse_any_batch(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """BasicSR's ``swinir_arch.window_reverse`` without its ``int()`` batch size (a trace records it as a constant)."""
    x = windows.view(-1, h // window_size, w // window_size, window_size, window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, windows.shape[-1])


@contextlib.contextmanager
def traceable(net: nn.Module) -> Iterator[None]:
    """While tracing, a BasicSR SwinIR records a graph that is right for any batch, height and width.

    Traced as it is, SwinIR keeps the batch size of the example (``window_reverse`` computes it with ``int()``) and,
    at ``img_size``, its stored attention mask. Here ``window_reverse`` infers the batch and every Swin block computes
    its mask from the input size; both compute the same values. Other networks are traced unchanged.
    """
    from basicsr.archs import swinir_arch
    blocks = [m for m in net.modules() if isinstance(m, swinir_arch.SwinTransformerBlock)]
    saved = swinir_arch.window_reverse, [block.input_resolution for block in blocks]
    if blocks:
        swinir_arch.window_reverse = _window_reverse_any_batch
    for block in blocks:
        block.input_resolution = None  # never equal to the input size: the mask is computed for it
    try:
        yield
    finally:
        swinir_arch.window_reverse = saved[0]
        for block, resolution in zip(blocks, saved[1]):
            block.input_resolution = resolution


def export_torchscript(net: nn.Module, example: torch.Tensor, path: str, mode: str) -> None:
    """Save ``net`` as TorchScript by ``'trace'`` (with ``example``) or ``'script'``."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch.jit is deprecated in favour of torch.export
        if mode == 'trace':
            module = torch.jit.trace(net, example)
        elif mode == 'script':
            try:
                module = torch.jit.script(net)
            except RuntimeError as err:  # TorchScript's compiler rejects some Python (e.g. BasicSR's SwinIR)
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ValueError(f'--ts-mode script: {type(net).__name__} cannot be scripted ({reason}); use '
                                 '--ts-mode trace') from None
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


def check_sizes(args: argparse.Namespace, arch_opt: Dict) -> List[Tuple[int, int]]:
    """``--check-sizes``, or the defaults rounded up to what the network needs (SwinIR: multiples of its window)."""
    if args.check_sizes:
        return args.check_sizes
    multiple = int(arch_opt.get('window_size') or 1)
    if arch_opt['type'] == 'RRDBNet':
        multiple = {1: 4, 2: 2}.get(arch_opt.get('scale'), 1)  # BasicSR's RRDBNet pixel-unshuffles x1 / x2 input
    return [(-(-h // multiple) * multiple, -(-w // multiple) * multiple) for h, w in DEFAULT_CHECK_SIZES]


def save_weights_file(fmt: str, net: nn.Module, arch_opt: Dict, path: str, scale: int, source: str) -> None:
    """Write ``net`` as ``'safetensors'`` (with metadata) or ``'official'`` (RCAN's official layout, torch.save)."""
    if fmt == 'safetensors':
        atomic_safetensors_save(network_state(net), path, safetensors_metadata(arch_opt, scale, source))
    else:
        atomic_torch_save(official_rcan_state(network_state(net), arch_opt), path, 'official RCAN weights')


def check_weights_file(fmt: str, arch_type: str, path: str, inputs: List[torch.Tensor], reference: List[np.ndarray],
                       scale: int) -> List[Tuple[str, Optional[List[float]]]]:
    """``(checked with, diffs or None)`` for a safetensors / official file: our loader, then spandrel.

    ``None`` diffs: no check was possible and none is due (spandrel not installed, or it has no such architecture).
    A spandrel check that is due and fails, or finds another architecture or scale, gives infinite differences.
    """
    checks = []
    if fmt == 'safetensors':
        own, _ = load_safetensors_network(path, '--out-dir')
        with torch.inference_mode():
            checks.append(('facd loader', [float(np.abs(own(x).numpy() - r).max()) for x, r in zip(inputs, reference)]))
    expected = 'RCAN' if fmt == 'official' else SPANDREL_IDS.get(arch_type)
    if expected is None:
        hint = ' (it reads --format official)' if arch_type == 'RCAN' else ''
        return checks + [(f'spandrel: does not load BasicSR-layout {arch_type}{hint}', None)]
    try:
        found, found_scale, diffs = check_with_spandrel(path, inputs, reference)
    except ImportError:
        return checks + [('spandrel: not installed (pip install spandrel)', None)]
    except ValueError as err:
        return checks + [(str(err), [float('inf')] * len(inputs))]
    if (found, found_scale) != (expected, scale):
        diffs = [float('inf')] * len(inputs)
    return checks + [(f'spandrel {found} x{found_scale}', diffs)]


def export_and_check(net: nn.Module, args: argparse.Namespace, arch_opt: Dict, source: str) -> List[Dict]:
    """Export every format of ``args.formats`` and check it; returns one row per (format, check, input size)."""
    inputs = example_inputs(check_sizes(args, arch_opt), arch_opt.get('num_in_ch', arch_opt.get('in_chans', 3)),
                            args.seed)
    with torch.inference_mode():
        reference = [net(x).numpy() for x in inputs]
    scale = reference[0].shape[-1] // inputs[0].shape[-1]
    rows = []
    for fmt in args.formats:
        path = osp.join(args.out_dir, args.name + SUFFIXES[fmt])
        if fmt == 'torchscript':
            with traceable(net):
                export_torchscript(net, inputs[0], path, args.ts_mode)
            checks = [('torch.jit.load', check_torchscript(path, reference, inputs))]
        elif fmt == 'onnx':
            with traceable(net):
                export_onnx(net, inputs[0], path, args.opset)
            checks = [('onnxruntime', check_onnx(path, reference, inputs))]
        else:
            save_weights_file(fmt, net, arch_opt, path, scale, source)
            checks = check_weights_file(fmt, arch_opt['type'], path, inputs, reference, scale)
        for checked, diffs in checks:
            for i, (x, ref) in enumerate(zip(inputs, reference)):
                rows.append({'format': fmt, 'file': path, 'checked': checked, 'input': tuple(x.shape),
                             'output': ref.shape, 'diff': None if diffs is None else diffs[i]})
    return rows


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='facd-export', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(parser)
    parser.add_argument('--out-dir', default='exported', help='output folder. Default: exported')
    parser.add_argument('--name', default=None, help='file stem of the exports. Default: the checkpoint stem')
    parser.add_argument(
        '--formats',
        '--format',
        nargs='+',
        default=['torchscript', 'onnx'],
        choices=FORMATS,
        help='formats to write (official: RCAN only). Default: torchscript onnx')
    parser.add_argument('--ts-mode', default='trace', choices=['trace', 'script'], help='TorchScript by trace/script')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset. Default: 17')
    parser.add_argument(
        '--check-sizes',
        type=parse_size,
        nargs='+',
        default=None,
        help='LR sizes HxW of the random check inputs. Default: 32x32 45x27 (rounded up to multiples of SwinIR\'s '
        'window)')
    parser.add_argument('--atol', type=float, default=1e-4, help='max abs difference allowed. Default: 1e-4')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random check inputs. Default: 0')
    return parser.parse_args(argv)


def check_request(args: argparse.Namespace) -> None:
    """Fail before any network work: an unwritable ``--out-dir``, or ``official`` for an architecture without it."""
    check_output_location('--out-dir', args.out_dir)
    arch_opt, _ = arch_opt_from_args(args)
    problem = official_format_error(arch_opt['type']) if 'official' in args.formats else None
    if problem:
        raise ValueError(problem)


def print_table(rows: List[Dict], atol: float) -> List[Dict]:
    """Print the check table; returns the failed rows (a difference that reaches ``atol``)."""
    print('| format | file | checked with | input (N, C, H, W) | output | max abs diff | ok |\n'
          '|---|---|---|---|---|---|---|')
    for row in rows:
        diff = row['diff']
        verdict = 'not checked' if diff is None else 'yes' if diff < atol else 'NO'
        print(f'| {row["format"]} | {row["file"]} | {row["checked"]} | {row["input"]} | {row["output"]} | '
              f'{"-" if diff is None else f"{diff:.3e}"} | {verdict} |')
    return [row for row in rows if not (row['diff'] is None or row['diff'] < atol)]


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``facd-export``; exit code 0 when every check passes, 1 when one fails, 2 on bad config."""
    args = parse_args(argv)
    try:
        check_request(args)
        net, arch_opt, used_key = network_from_args(args, torch.device('cpu'))
    except (FileNotFoundError, KeyError, ValueError) as err:
        return config_error(err)
    args.name = args.name or osp.splitext(osp.basename(args.ckpt))[0]
    os.makedirs(args.out_dir, exist_ok=True)
    source = f'{osp.basename(args.ckpt)} [{used_key}]'
    try:
        rows = export_and_check(net, args, arch_opt, source)
    except (CheckpointError, CheckpointWriteError, ValueError) as err:
        return config_error(err)
    traced = '; TorchScript / ONNX: dynamic batch/height/width' if {'torchscript', 'onnx'} & set(args.formats) else ''
    onnx = f'; ONNX opset {args.opset} (legacy exporter, dynamo=False)' if 'onnx' in args.formats else ''
    print(f'{arch_opt["type"]} from {args.ckpt} (param key: {used_key}); {sum(p.numel() for p in net.parameters())} '
          f'parameters{traced}{onnx}\n')
    failed = print_table(rows, args.atol)
    if failed:
        print(f'\nFAILED: {len(failed)} check(s) reach --atol {args.atol:g}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
